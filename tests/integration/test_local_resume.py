"""``pennflow resume`` with real processes: a failed or canceled run continues as the same run, the
steps that succeeded unchanged are reused (each processor appends to a counter file when it runs),
and a change re-runs exactly the steps it reaches."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.engine.resume import ResumeRefused, resume_run
from pennflow.engine.run_spec import spec_path
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.definition import load_definition
from pennflow.workflow.runs import RunRecord, Status, StepRecord

# The processors count their starts in a file outside their runs (what a resume must not re-run),
# which the sandbox refuses.
pytestmark = pytest.mark.usefixtures("no_sandbox")

# Each step appends its id to $COUNTER when it runs, then passes its input on with a line of its own;
# a step fails (exit 3) while its FAIL param is "yes", or while its script's file says so.
STEP = """\
  - id: {pid}
    command: [sh, -c, 'echo {pid} >> "$COUNTER"; test "$FAIL" != yes || exit 3; cp -R "$INPUT_DIR"/. "$OUTPUT_DIR"/; echo "{pid} $NOTE" >> "$OUTPUT_DIR/trail.txt"']
    dependsOn: [{after}]
    defaultParams: {{COUNTER: "{counter}", FAIL: "{fail}", NOTE: "{note}"}}
"""


def chain(
    tmp_path: Path, *, fail: str = "", notes: dict[str, str] | None = None, name: str = "chain"
) -> Path:
    """src -> one -> two -> three, ``fail`` the step that fails; the file is written beside the counter."""
    notes = notes or {}
    counter = tmp_path / "counter.txt"
    body = "name: resumable\nprocessors:\n  - {id: src, type: data-source}\n"
    after = "src"
    for pid in ("one", "two", "three"):
        fails = "yes" if pid == fail else "no"
        body += STEP.format(pid=pid, after=after, counter=counter, fail=fails, note=notes.get(pid, "-"))
        after = pid
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


def counts(tmp_path: Path) -> dict[str, int]:
    lines = (tmp_path / "counter.txt").read_text().split()
    return {pid: lines.count(pid) for pid in ("one", "two", "three")}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    return PennflowHome(tmp_path / "home")


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a\n")
    return tmp_path / "input"


def start(definition: Path, home: PennflowHome, input_dir: Path, **kwargs) -> RunRecord:
    return run_workflow(
        load_definition(definition),
        definition_dir=definition.parent,
        input_dir=input_dir,
        home=home,
        docker=False,
        **kwargs,
    )


def resume(home: PennflowHome, run_id: str, **kwargs) -> RunRecord:
    with SqliteRunStore(home.db_path) as store:
        return resume_run(run_id, store=store, home=home, **kwargs)


def steps(home: PennflowHome, run_id: str) -> dict[str, StepRecord]:
    with SqliteRunStore(home.db_path) as store:
        return {step.processor_id: step for step in store.list_steps(run_id)}


def trail(home: PennflowHome, run_id: str) -> list[str]:
    return (home.run_dir(run_id) / "three" / "output" / "trail.txt").read_text().splitlines()


def test_a_failed_step_fixed_by_a_param_resumes_without_running_the_step_before_it(
    tmp_path, home, input_dir
) -> None:
    first = start(chain(tmp_path, fail="two"), home, input_dir)
    assert first.status is Status.FAILED and first.failed_processor == "two"
    assert counts(tmp_path) == {"one": 1, "two": 1, "three": 0}

    resumed = resume(home, first.run_id, overrides={"two.FAIL": "no"})

    assert resumed.status is Status.SUCCEEDED
    assert resumed.run_id == first.run_id and resumed.attempt == 2
    assert counts(tmp_path) == {"one": 1, "two": 2, "three": 1}  # one was not run again
    after = steps(home, first.run_id)
    assert after["one"].reused and after["one"].status is Status.SUCCEEDED and after["one"].attempts == 0
    assert not after["two"].reused and after["two"].attempts == 1
    assert after["src"].status is Status.SUCCEEDED and not after["src"].reused  # the input is read again
    assert trail(home, first.run_id) == ["one -", "two -", "three -"]
    # The history keeps the attempt that failed, step by step.
    [earlier] = resumed.history
    assert earlier.attempt == 1 and earlier.status is Status.FAILED and earlier.failed_processor == "two"
    outcome = {step.processor_id: step.status for step in earlier.steps}
    assert outcome == {
        "src": Status.SUCCEEDED,
        "one": Status.SUCCEEDED,
        "two": Status.FAILED,
        "three": Status.CANCELED,
    }
    assert resumed.params["two"]["FAIL"] == "no"
    log = (home.run_dir(first.run_id) / "one" / "processor.log").read_text()
    assert "reused: unchanged since attempt 1 of the run" in log


def test_a_failed_step_fixed_by_its_script_file_resumes_with_the_run_definition(
    tmp_path, home, input_dir
) -> None:
    script = tmp_path / "two.sh"
    script.write_text("exit 4\n")
    definition = chain(tmp_path)
    text = definition.read_text().replace(
        "  - id: three", "  - id: fix\n    command: [sh, two.sh]\n    dependsOn: [two]\n  - id: three"
    )
    definition.write_text(
        text.replace("dependsOn: [two]\n    defaultParams", "dependsOn: [fix]\n    defaultParams")
    )
    first = start(definition, home, input_dir)
    assert first.failed_processor == "fix" and first.exit_code == 4
    script.write_text('cp -R "$INPUT_DIR"/. "$OUTPUT_DIR"/\n')

    resumed = resume(home, first.run_id)  # no --definition: the one the run ran, its script read anew

    assert resumed.status is Status.SUCCEEDED
    assert counts(tmp_path) == {"one": 1, "two": 1, "three": 1}
    assert [pid for pid, step in steps(home, first.run_id).items() if step.reused] == ["one", "two"]


def test_a_changed_param_of_the_last_step_re_runs_only_that_step(tmp_path, home, input_dir) -> None:
    first = start(chain(tmp_path, fail="three"), home, input_dir)
    assert first.failed_processor == "three"

    resumed = resume(home, first.run_id, overrides={"three.FAIL": "no", "three.NOTE": "fixed"})

    assert resumed.status is Status.SUCCEEDED
    assert counts(tmp_path) == {"one": 1, "two": 1, "three": 2}
    assert trail(home, first.run_id) == ["one -", "two -", "three fixed"]


def test_a_changed_definition_re_runs_the_changed_step_and_what_follows_it(tmp_path, home, input_dir) -> None:
    first = start(chain(tmp_path, fail="three"), home, input_dir)
    changed = chain(tmp_path, notes={"two": "v2"}, name="changed")  # two changed; three fixed

    resumed = resume(home, first.run_id, workflow=load_definition(changed), definition_dir=tmp_path)

    assert resumed.status is Status.SUCCEEDED
    assert counts(tmp_path) == {"one": 1, "two": 2, "three": 2}
    assert trail(home, first.run_id) == ["one -", "two v2", "three -"]
    assert resumed.definition_hash == load_definition(changed).definition_hash() != first.definition_hash


def test_a_changed_param_of_the_first_step_re_runs_every_step_after_it(tmp_path, home, input_dir) -> None:
    """Even when the changed step writes the same bytes (COUNTER is not written to OUTPUT_DIR): a
    step's key covers its dependencies' keys, so all that is downstream of a change runs again."""
    first = start(chain(tmp_path, fail="three"), home, input_dir)
    other_counter = tmp_path / "counter-2.txt"

    resume(home, first.run_id, overrides={"one.COUNTER": str(other_counter), "three.FAIL": "no"})

    assert other_counter.read_text().split() == ["one"]
    assert counts(tmp_path) == {"one": 1, "two": 2, "three": 2}
    assert not any(step.reused for step in steps(home, first.run_id).values())


def test_an_output_changed_since_it_succeeded_is_computed_again(tmp_path, home, input_dir) -> None:
    first = start(chain(tmp_path, fail="three"), home, input_dir)
    (home.run_dir(first.run_id) / "two" / "output" / "trail.txt").write_text("edited\n")

    resume(home, first.run_id, overrides={"three.FAIL": "no"})

    assert counts(tmp_path) == {"one": 1, "two": 2, "three": 2}
    assert trail(home, first.run_id) == ["one -", "two -", "three -"]


def test_each_resume_adds_an_attempt_to_the_history(tmp_path, home, input_dir) -> None:
    first = start(chain(tmp_path, fail="two"), home, input_dir)
    second = resume(home, first.run_id, overrides={"two.FAIL": "no", "three.FAIL": "yes"})
    assert second.status is Status.FAILED and second.failed_processor == "three"

    third = resume(home, first.run_id, overrides={"three.FAIL": "no"})  # two's fix is kept

    assert third.status is Status.SUCCEEDED and third.attempt == 3
    assert [(a.attempt, a.status, a.failed_processor) for a in third.history] == [
        (1, Status.FAILED, "two"),
        (2, Status.FAILED, "three"),
    ]
    assert [s.processor_id for s in third.history[1].steps if s.reused] == ["one"]
    assert counts(tmp_path) == {"one": 1, "two": 2, "three": 2}


def test_a_canceled_run_resumes(tmp_path, home, input_dir) -> None:
    definition = chain(tmp_path)
    gate = tmp_path / "gate"
    text = definition.read_text().replace(
        'echo two >> "$COUNTER";', 'echo two >> "$COUNTER"; while [ ! -e "$GATE" ]; do sleep 0.05; done;'
    )
    definition.write_text(text.replace('NOTE: "-"}', f'NOTE: "-", GATE: "{gate}"}}'))
    cancel = threading.Event()
    result: list[RunRecord] = []
    worker = threading.Thread(
        target=lambda: result.append(start(definition, home, input_dir, cancel_event=cancel))
    )
    worker.start()
    deadline = time.monotonic() + 20
    while counts_or_empty(tmp_path).get("two", 0) == 0:
        assert time.monotonic() < deadline, "two never started"
        time.sleep(0.05)
    cancel.set()
    worker.join(30)
    [first] = result
    assert first.status is Status.CANCELED
    gate.write_text("open")

    resumed = resume(home, first.run_id)

    assert resumed.status is Status.SUCCEEDED
    assert counts(tmp_path) == {"one": 1, "two": 2, "three": 1}


def counts_or_empty(tmp_path: Path) -> dict[str, int]:
    return counts(tmp_path) if (tmp_path / "counter.txt").exists() else {}


def test_a_succeeded_run_is_refused(tmp_path, home, input_dir) -> None:
    first = start(chain(tmp_path), home, input_dir)
    with pytest.raises(ResumeRefused, match=r"SUCCEEDED: there is nothing to resume"):
        resume(home, first.run_id)
    assert counts(tmp_path) == {"one": 1, "two": 1, "three": 1}


def test_a_run_whose_engine_is_alive_is_refused(tmp_path, home, input_dir) -> None:
    definition = chain(tmp_path)
    gate = tmp_path / "gate"
    text = definition.read_text().replace(
        'echo one >> "$COUNTER";', 'echo one >> "$COUNTER"; while [ ! -e "$GATE" ]; do sleep 0.05; done;'
    )
    definition.write_text(text.replace('NOTE: "-"}', f'NOTE: "-", GATE: "{gate}"}}', 1))
    result: list[RunRecord] = []
    worker = threading.Thread(target=lambda: result.append(start(definition, home, input_dir)))
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while counts_or_empty(tmp_path).get("one", 0) == 0:
            assert time.monotonic() < deadline, "one never started"
            time.sleep(0.05)
        with SqliteRunStore(home.db_path) as store:
            [running] = store.list_runs().runs
        with pytest.raises(
            ResumeRefused, match=rf"run {running.run_id} is STARTED: its engine is still running"
        ):
            resume(home, running.run_id)
    finally:
        gate.write_text("open")
        worker.join(30)
    assert result[0].status is Status.SUCCEEDED and result[0].attempt == 1


def test_a_run_without_its_spec_is_refused_and_left_as_it_was(tmp_path, home, input_dir) -> None:
    first = start(chain(tmp_path, fail="two"), home, input_dir)
    spec_path(home, first.run_id).unlink()
    with pytest.raises(ResumeRefused, match=r"has no record of what it was started with"):
        resume(home, first.run_id)
    with SqliteRunStore(home.db_path) as store:
        assert store.get_run(first.run_id).status is Status.FAILED


# ------------------------------------------------------------------ the command


def cli(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def test_the_command_resumes_lists_the_attempts_and_exits_0(tmp_path, home, input_dir) -> None:
    definition = chain(tmp_path, fail="two")
    failed = cli("run", definition, "--input", input_dir, "--no-containers", "--json")
    assert failed.exit_code == 1
    run_id = json.loads(failed.stdout)["run"]["run_id"]

    done = cli("resume", run_id, "--param", "two.FAIL=no")

    assert done.exit_code == 0, done.output
    assert "attempt 1: FAILED: processor 'two' failed: exit code 3" in done.output
    assert "attempt 2: SUCCEEDED; reused: one" in done.output
    assert counts(tmp_path) == {"one": 1, "two": 2, "three": 1}


def test_the_command_json_names_the_reused_steps_and_the_results(tmp_path, home, input_dir) -> None:
    definition = chain(tmp_path, fail="three")
    run_id = json.loads(cli("run", definition, "--input", input_dir, "--no-containers", "--json").stdout)[
        "run"
    ]["run_id"]
    fixed = chain(tmp_path, name="fixed")

    done = cli("resume", run_id, "--definition", fixed, "--json")

    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout)
    assert answer["reused"] == ["one", "two"]
    assert answer["run"]["attempt"] == 2 and answer["run"]["history"][0]["status"] == "FAILED"
    assert answer["results"] == [str(home.run_dir(run_id) / "three" / "output")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("r-nope",), "no run 'r-nope' here"),
        (("r-nope", "--param", "broken"), "--param"),
        (("r-nope", "--remote", "--param", "a=b"), "--definition and --param are for local runs"),
    ],
)
def test_the_command_refuses_bad_input_with_exit_2(home, args, message) -> None:
    result = cli("resume", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_the_command_refuses_a_succeeded_run_with_exit_2(tmp_path, home, input_dir) -> None:
    run_id = json.loads(
        cli("run", chain(tmp_path), "--input", input_dir, "--no-containers", "--json").stdout
    )["run"]["run_id"]
    result = cli("resume", run_id)
    assert result.exit_code == 2
    assert f"run {run_id} SUCCEEDED: there is nothing to resume" in result.output


def test_status_lists_the_attempts_of_a_resumed_run(tmp_path, home, input_dir) -> None:
    first = start(chain(tmp_path, fail="two"), home, input_dir)
    resume(home, first.run_id, overrides={"two.FAIL": "no"})

    shown = cli("status", first.run_id)

    assert shown.exit_code == 0, shown.output
    assert "attempt 1: FAILED: processor 'two' failed: exit code 3" in shown.output
    assert "attempt 2 (now): reused one" in shown.output
