"""A notebook session with Pennsieve data: downloaded into INPUT_DIR first (from the fake Pennsieve
on loopback), read-only to the kernel; a dataset that cannot be downloaded fails the run at once."""

from __future__ import annotations

import pytest

from pennflow.engine.home import PennflowHome
from pennflow.notebooks.session import SessionFailed, SessionRequest, start_session, stop_session
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import Status
from tests.integration.notebook_support import run_code

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.xdist_group("notebook-sessions")


@pytest.fixture
def home(tmp_path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    return PennflowHome.resolve()


def test_the_dataset_is_in_input_dir_read_only_before_the_server_starts(
    home: PennflowHome,
    pennsieve,
    make_pennsieve_client,
    pennsieve_credentials,
) -> None:
    dataset = pennsieve.add_dataset("eeg-study")
    sub = dataset.add_folder("sub-01")
    dataset.add_package("a.edf", [("a.edf", 2048)], parent=sub)
    state = start_session(
        home,
        SessionRequest(dataset_id=dataset.node_id),
        pennsieve=lambda: make_pennsieve_client(pennsieve_credentials),
    )
    try:
        out, error = run_code(
            state,
            "import errno, os\n"
            "path = os.path.join(os.environ['INPUT_DIR'], 'sub-01', 'a.edf')\n"
            "print(os.path.getsize(path))\n"
            "try:\n"
            "    open(path, 'a').write('x')\n"
            "    print('wrote')\n"
            "except OSError as exc:\n"
            "    print('refused', errno.errorcode[exc.errno])\n",
        )
    finally:
        stop_session(home, state.run_id)
    assert error is None, out
    size, write = out.splitlines()
    assert size == "2048"
    assert write in {"refused EROFS", "refused EACCES"}


def test_a_dataset_that_cannot_be_downloaded_fails_the_run_before_any_server(
    home: PennflowHome,
    pennsieve,
    make_pennsieve_client,
    pennsieve_credentials,
) -> None:
    with pytest.raises(SessionFailed) as failed:
        start_session(
            home,
            SessionRequest(dataset_id="N:dataset:00000000-0000-0000-0000-000000000000"),
            pennsieve=lambda: make_pennsieve_client(pennsieve_credentials),
        )
    assert str(failed.value).startswith("cannot download N:dataset:00000000-0000-0000-0000-000000000000: ")
    with SqliteRunStore(home.db_path) as store:
        (run,) = store.list_runs().runs
    assert (run.status, run.reason) == (Status.FAILED, str(failed.value))
