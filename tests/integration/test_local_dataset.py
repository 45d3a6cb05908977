"""`pennflow run --dataset ID [--package ID ...]`: the data source downloads from the fake Pennsieve.

A small workflow (data source -> a processor that lists its INPUT_DIR -> s3 target) runs through
the CLI, with Pennsieve reached through PENNSIEVE_API_HOST and the API key in the environment.
A dataset that does not exist is found when the data source runs (exit 1, no retry); missing
credentials and conflicting options are refused before anything runs (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine.home import PennflowHome
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import Status

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

FIXTURES = Path(__file__).parents[1] / "fixtures" / "processors"
KiB, MiB = 1024, 1024 * 1024
MISSING_DATASET = "N:dataset:00000000-0000-0000-0000-00000000beef"

WORKFLOW = """
name: listing
processors:
  - id: recordings
    type: data-source
    retry: {{maxAttempts: 1, intervalSeconds: 1}}
  - id: listing
    command: [python, "{fixtures}/print_env.py"]
    dependsOn: [recordings]
  - id: results
    type: data-target
    targetType: s3
    dependsOn: [listing]
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # no ~/.pennsieve/config.ini of this machine
    return PennflowHome(tmp_path / "home")


@pytest.fixture
def pennsieve_env(pennsieve, cognito_user, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PENNSIEVE_API_HOST", pennsieve.api_host)
    monkeypatch.setenv("PENNSIEVE_API2_HOST", pennsieve.api2_host)
    monkeypatch.setenv("PENNSIEVE_API_KEY", cognito_user.api_key)
    monkeypatch.setenv("PENNSIEVE_API_SECRET", cognito_user.api_secret)


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "listing.yaml"
    path.write_text(WORKFLOW.format(fixtures=FIXTURES))
    return path


@pytest.fixture
def dataset(pennsieve):
    """sub-01/ses-01/a.edf, sub-01/b.edf (3 MiB: more than one read chunk), participants.tsv."""
    dataset = pennsieve.add_dataset("eeg-study")
    subject = dataset.add_folder("sub-01")
    session = dataset.add_folder("ses-01", parent=subject)
    dataset.add_package("a.edf", [("a.edf", 40 * KiB)], parent=session)
    dataset.add_package("b.edf", [("b.edf", 3 * MiB)], parent=subject, checksum="md5")
    dataset.add_package("participants.tsv", [("participants.tsv", 300)], checksum="none")
    return dataset


def files_by_path(dataset) -> dict:
    found = {}
    for package in dataset.packages:
        for file in package.files:
            found["/".join([*package.folder_names(), file.name])] = file
    return found


def package_named(dataset, name: str):
    return next(p for p in dataset.packages if p.name == name)


def run_cli(*args: object):
    return CliRunner().invoke(app, ["run", *(str(a) for a in args), "--no-containers", "--json"])


def finished(result) -> tuple[dict, dict[str, dict]]:
    data = json.loads(result.stdout)
    return data["run"], {step["processor_id"]: step for step in data["processors"]}


def output_dir(home: PennflowHome, run: dict, processor_id: str) -> Path:
    return home.run_dir(run["run_id"]) / processor_id / "output"


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_the_dataset_downloads_with_its_folders_and_the_processor_sees_it(
    home, pennsieve_env, workflow_file, dataset
) -> None:
    result = run_cli(workflow_file, "--dataset", dataset.node_id)

    assert result.exit_code == 0, result.output
    run, steps = finished(result)
    assert run["dataset_id"] == dataset.node_id and run["package_ids"] == []
    expected = files_by_path(dataset)
    assert sorted(expected) == ["participants.tsv", "sub-01/b.edf", "sub-01/ses-01/a.edf"]
    received = output_dir(home, run, "recordings")
    assert files_in(received) == sorted(expected)  # no .part or .ranges left behind
    for path, file in expected.items():
        assert (received / path).read_bytes() == file.body(), path
    assert steps["recordings"]["reason"] == f"dataset {dataset.node_id}: 3 files, 3.2 MB"
    listing = json.loads((output_dir(home, run, "listing") / "env-listing.json").read_text())
    assert listing["inputs"] == sorted(expected)
    assert listing["env"]["DATASET_ID"] == dataset.node_id
    assert files_in(output_dir(home, run, "results")) == ["env-listing.json"]


def test_packages_select_part_of_the_dataset(home, pennsieve, pennsieve_env, workflow_file, dataset) -> None:
    session = package_named(dataset, "ses-01")  # a folder brings what it holds
    table = package_named(dataset, "participants.tsv")

    result = run_cli(
        workflow_file, "--dataset", dataset.node_id, "--package", session.node_id, "--package", table.node_id
    )

    assert result.exit_code == 0, result.output
    run, _ = finished(result)
    assert run["package_ids"] == [session.node_id, table.node_id]
    received = output_dir(home, run, "recordings")
    assert files_in(received) == ["participants.tsv", "sub-01/ses-01/a.edf"]
    unselected = files_by_path(dataset)["sub-01/b.edf"]
    assert pennsieve.requests_to(f"^/s3/{unselected.id}$") == []


def test_a_package_outside_the_dataset_fails_the_data_source_naming_it(
    home, pennsieve_env, workflow_file, dataset
) -> None:
    result = run_cli(workflow_file, "--dataset", dataset.node_id, "--package", "N:package:nope")

    assert result.exit_code == 1, result.output
    _, steps = finished(result)
    assert steps["recordings"]["reason"] == f"package N:package:nope not found in dataset {dataset.node_id}"
    assert steps["recordings"]["attempts"] == 1


def test_a_missing_dataset_fails_the_data_source_at_once_with_exit_1(
    home, pennsieve, pennsieve_env, workflow_file
) -> None:
    result = run_cli(workflow_file, "--dataset", MISSING_DATASET)

    assert result.exit_code == 1, result.output
    run, steps = finished(result)
    assert run["status"] == Status.FAILED.value and run["failed_processor"] == "recordings"
    assert steps["recordings"]["reason"] == f"dataset {MISSING_DATASET} not found"
    assert steps["recordings"]["attempts"] == 1  # its retry policy does not apply: nothing would change
    assert steps["listing"]["status"] == Status.CANCELED.value
    assert len(pennsieve.requests_to(f"^/datasets/{MISSING_DATASET}$")) == 1


def test_an_interrupted_download_resumes_on_the_data_source_retry(
    home, pennsieve, pennsieve_env, workflow_file, dataset
) -> None:
    files = files_by_path(dataset)
    big = files["sub-01/b.edf"]
    # More drops than one attempt resumes by itself: the first attempt fails, keeping its .part.
    pennsieve.faults.drop_connection(big.id, at_byte=2 * MiB + 512 * KiB, times=3)

    result = run_cli(workflow_file, "--dataset", dataset.node_id)

    assert result.exit_code == 0, result.output
    run, steps = finished(result)
    assert steps["recordings"]["attempts"] == 2
    received = output_dir(home, run, "recordings")
    assert (received / "sub-01/b.edf").read_bytes() == big.body()
    assert files_in(received) == sorted(files)
    last = pennsieve.requests_to(f"^/s3/{big.id}$")[-1].headers["range"]
    assert last.startswith("bytes=") and int(last.removeprefix("bytes=").rstrip("-")) > 0
    for path in ("sub-01/ses-01/a.edf", "participants.tsv"):  # verified on disk: not fetched again
        assert len(pennsieve.requests_to(f"^/s3/{files[path].id}$")) == 1, path
    log = (home.run_dir(run["run_id"]) / "recordings" / "processor.log").read_text()
    assert "connection lost at byte" in log and "1 downloaded, 2 already here" in log


def test_missing_credentials_exit_2_before_anything_runs(
    home, pennsieve, workflow_file, dataset, monkeypatch
) -> None:
    monkeypatch.setenv("PENNSIEVE_API_HOST", pennsieve.api_host)

    result = run_cli(workflow_file, "--dataset", dataset.node_id)

    assert result.exit_code == 2, result.output
    assert "--dataset: no Pennsieve credentials" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert pennsieve.requests == []
    assert not home.db_path.exists() or SqliteRunStore(home.db_path).list_runs().runs == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{input}", "--dataset", "{dataset}"], "--input and --dataset: give one or the other"),
        (["--input", "{input}", "--package", "N:package:1"], "--package: needs --dataset"),
        (["--dataset", ""], "--dataset: must be a dataset id"),
    ],
)
def test_conflicting_inputs_exit_2_before_anything_runs(
    home, pennsieve, pennsieve_env, workflow_file, dataset, tmp_path, args, message
) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    args = [a.format(input=tmp_path / "input", dataset=dataset.node_id) for a in args]

    result = run_cli(workflow_file, *args)

    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert pennsieve.requests == []
    assert not home.runs_dir.exists() or not any(home.runs_dir.iterdir())
