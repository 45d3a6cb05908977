"""The local engine with real processes: scheduling, the contract, retries, timeouts, cancel, failure."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from pennflow.engine.home import PennflowHome
from pennflow.engine.launchers import docker_command, subprocess_spec
from pennflow.engine.local import InvalidRunInput, result_dirs, run_workflow
from pennflow.layers.models import LayerRecord
from pennflow.layers.service import LocalLayers
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.contract import LAYERS_MOUNT, RUN_MOUNT
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import RunRecord, Status, StepRecord

FIXTURES = Path(__file__).parents[1] / "fixtures" / "processors"
unsandboxed = pytest.mark.usefixtures("no_sandbox")
INPUT_FILES = ("a.txt", "b.txt", "sub/c.txt")


@pytest.fixture
def home(tmp_path: Path) -> PennflowHome:
    return PennflowHome(tmp_path / "home")


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    for rel in INPUT_FILES:
        path = tmp_path / "input" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"contents of {rel}\n")
    return tmp_path / "input"


def run(definition: str, home: PennflowHome, input_dir: Path | None, **kwargs) -> RunRecord:
    workflow = parse_definition(definition)
    return run_workflow(
        workflow, definition_dir=FIXTURES, input_dir=input_dir, home=home, docker=False, **kwargs
    )


def steps_of(home: PennflowHome, run_id: str) -> dict[str, StepRecord]:
    with SqliteRunStore(home.db_path) as store:
        return {step.processor_id: step for step in store.list_steps(run_id)}


def output(home: PennflowHome, record: RunRecord, processor_id: str) -> Path:
    return home.run_dir(record.run_id) / processor_id / "output"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def alive(pid: int) -> bool:
    """Running and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for_file(path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def pids_gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


SOURCE = """
name: test-flow
processors:
  - id: src
    type: data-source
"""


# ------------------------------------------------------------------ shapes of workflows


CHAIN = (
    SOURCE
    + """
  - id: copy
    command: [python, copy.py]
    dependsOn: [src]
  - id: mark
    command: [python, mark.py]
    dependsOn: [copy]
  - id: results
    type: data-target
    targetType: s3
    dependsOn: [mark]
"""
)


def test_a_chain_passes_each_output_to_the_next_and_ends_in_the_data_target(home, input_dir) -> None:
    record = run(CHAIN, home, input_dir)
    assert record.status is Status.SUCCEEDED
    assert record.started_at <= record.finished_at and record.failed_processor is None
    received = output(home, record, "src")
    assert sorted(p.relative_to(received).as_posix() for p in received.rglob("*") if p.is_file()) == list(
        INPUT_FILES
    )
    assert read_json(output(home, record, "mark") / "mark.json")["inputs"] == list(INPUT_FILES)
    assert (output(home, record, "results") / "mark.json").is_file()

    steps = steps_of(home, record.run_id)
    assert [s.status for s in steps.values()] == [Status.SUCCEEDED] * 4
    assert (steps["copy"].attempts, steps["copy"].exit_code) == (1, 0)
    assert steps["mark"].started_at >= steps["copy"].finished_at
    log = Path(steps["mark"].log_path)
    assert log == home.run_dir(record.run_id) / "mark" / "processor.log"
    assert "mark attempt 1/1: python mark.py" in log.read_text()
    target = output(home, record, "results")
    assert steps["results"].reason == f"results in {target}"
    assert result_dirs(parse_definition(CHAIN), home.run_dir(record.run_id)) == [target]


def test_fan_out_gives_every_branch_the_same_input(home, input_dir) -> None:
    branches = "".join(
        f"""
  - id: {name}
    command: [python, mark.py]
    dependsOn: [src]"""
        for name in ("left", "middle", "right")
    )
    record = run(SOURCE + branches, home, input_dir)
    assert record.status is Status.SUCCEEDED
    for name in ("left", "middle", "right"):
        assert read_json(output(home, record, name) / f"{name}.json")["inputs"] == list(INPUT_FILES)
    # without a data target, the results are the last processors' outputs
    workflow = parse_definition(SOURCE + branches)
    assert result_dirs(workflow, home.run_dir(record.run_id)) == [
        output(home, record, name) for name in ("left", "middle", "right")
    ]


FAN_IN = (
    SOURCE
    + """
  - id: left
    command: [python, {left}]
    dependsOn: [src]
  - id: right-side
    command: [python, {right}]
    dependsOn: [src]
  - id: join
    command: [python, print_env.py]
    dependsOn: [left, right-side]
"""
)


def test_fan_in_reads_the_union_and_each_dependency_by_name(home, input_dir) -> None:
    record = run(FAN_IN.format(left="print_env.py", right="mark.py"), home, input_dir)
    assert record.status is Status.SUCCEEDED
    seen = read_json(output(home, record, "join") / "env-join.json")
    assert seen["inputs"] == ["env-left.json", "right-side.json"]
    env = seen["env"]
    run_dir = home.run_dir(record.run_id)
    assert env["INPUT_DIR"] == str(run_dir / "join" / "input")
    assert env["INPUT_DIR_LEFT"] == str(run_dir / "left" / "output")
    assert env["INPUT_DIR_RIGHT_SIDE"] == str(run_dir / "right-side" / "output")
    assert (env["RUN_ID"], env["PROCESSOR_ID"], env["WORKFLOW_NAME"]) == (record.run_id, "join", "test-flow")
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)


def test_a_clash_in_the_fan_in_union_fails_that_processor(home, input_dir) -> None:
    record = run(FAN_IN.format(left="copy.py", right="copy.py"), home, input_dir)
    assert record.status is Status.FAILED
    assert record.failed_processor == "join"
    assert "fan-in clash: a.txt is written by both 'left' and 'right-side'" in record.reason
    join = steps_of(home, record.run_id)["join"]
    assert join.status is Status.FAILED and join.attempts == 1
    assert "fan-in clash" in Path(join.log_path).read_text()


def test_a_processor_starts_when_its_own_dependencies_finish_not_its_level(home, input_dir) -> None:
    record = run(
        SOURCE
        + """
  - id: slow
    command: [python, mark.py]
    dependsOn: [src]
    defaultParams: {SLEEP: "1.5"}
  - id: fast
    command: [python, mark.py]
    dependsOn: [src]
  - id: after-fast
    command: [python, mark.py]
    dependsOn: [fast]
""",
        home,
        input_dir,
        max_parallel=3,
    )
    assert record.status is Status.SUCCEEDED
    slow = read_json(output(home, record, "slow") / "slow.json")
    after_fast = read_json(output(home, record, "after-fast") / "after-fast.json")
    assert after_fast["start"] < slow["end"] - 0.5  # level-by-level would wait for slow
    steps = steps_of(home, record.run_id)
    assert steps["after-fast"].finished_at < steps["slow"].finished_at


def test_max_parallel_bounds_the_processes_running_at_once(home, input_dir) -> None:
    sleepers = "".join(
        f"""
  - id: s{index}
    command: [python, mark.py]
    dependsOn: [src]
    defaultParams: {{SLEEP: "0.4"}}"""
        for index in range(4)
    )
    record = run(SOURCE + sleepers, home, input_dir, max_parallel=2)
    assert record.status is Status.SUCCEEDED
    spans = [read_json(output(home, record, f"s{i}") / f"s{i}.json") for i in range(4)]
    edges = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    assert peak == 2


# ------------------------------------------------------------------ failures, retries, timeouts


@unsandboxed
def test_a_failed_attempt_is_retried_and_the_retry_succeeds(home, input_dir, tmp_path) -> None:
    started = time.monotonic()
    record = run(
        SOURCE
        + f"""
  - id: flaky
    command: [python, fail_times.py]
    dependsOn: [src]
    defaultParams: {{FAIL_TIMES: "1", COUNTER_FILE: "{tmp_path / "count"}"}}
    retry: {{maxAttempts: 2, intervalSeconds: 1, backoffRate: 2}}
""",
        home,
        input_dir,
    )
    assert record.status is Status.SUCCEEDED
    assert time.monotonic() - started >= 1.0  # waited intervalSeconds before the retry
    flaky = steps_of(home, record.run_id)["flaky"]
    assert (flaky.status, flaky.attempts, flaky.exit_code) == (Status.SUCCEEDED, 2, 0)
    log = Path(flaky.log_path).read_text()
    assert "flaky attempt 1/3" in log and "boom on attempt 1" in log and "flaky attempt 2/3" in log
    assert (output(home, record, "flaky") / "done.txt").read_text() == "succeeded on attempt 2\n"


@unsandboxed
def test_a_processor_failing_for_good_fails_the_run_and_cancels_the_rest(home, input_dir, tmp_path) -> None:
    started = time.monotonic()
    record = run(
        SOURCE
        + f"""
  - id: broken
    command: [python, fail_times.py]
    dependsOn: [src]
    defaultParams: {{EXIT_CODE: "7", COUNTER_FILE: "{tmp_path / "count"}"}}
  - id: after-broken
    command: [python, mark.py]
    dependsOn: [broken]
  - id: sibling
    command: [python, spawn_and_sleep.py]
    dependsOn: [src]
    defaultParams: {{PID_FILE: "{tmp_path / "pids"}", SLEEP: "60"}}
""",
        home,
        input_dir,
        max_parallel=2,
    )
    assert time.monotonic() - started < 20  # the sleeping sibling was stopped, not waited for
    assert record.status is Status.FAILED
    assert (record.failed_processor, record.exit_code) == ("broken", 7)
    assert record.reason == "processor 'broken' failed: exit code 7: boom on attempt 1"
    steps = steps_of(home, record.run_id)
    assert (steps["broken"].status, steps["broken"].exit_code, steps["broken"].attempts) == (
        Status.FAILED,
        7,
        1,
    )
    assert steps["after-broken"].status is Status.CANCELED and steps["after-broken"].attempts == 0
    assert steps["after-broken"].reason == "canceled: processor 'broken' failed"
    assert steps["sibling"].status is Status.CANCELED
    if (tmp_path / "pids").exists():  # the sibling got as far as starting its child
        assert pids_gone([int(pid) for pid in (tmp_path / "pids").read_text().split()])


@unsandboxed
def test_an_attempt_that_times_out_is_killed_and_fails(home, input_dir, tmp_path) -> None:
    record = run(
        SOURCE
        + f"""
  - id: stuck
    command: [python, spawn_and_sleep.py]
    dependsOn: [src]
    defaultParams: {{PID_FILE: "{tmp_path / "pids"}"}}
    timeoutSeconds: 1
""",
        home,
        input_dir,
    )
    assert record.status is Status.FAILED
    assert record.reason == "processor 'stuck' failed: timed out after 1s"
    stuck = steps_of(home, record.run_id)["stuck"]
    assert (stuck.status, stuck.exit_code, stuck.attempts) == (Status.FAILED, None, 1)
    assert pids_gone([int(pid) for pid in (tmp_path / "pids").read_text().split()])


@unsandboxed
def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(home, input_dir, tmp_path) -> None:
    started = time.monotonic()
    record = run(
        SOURCE
        + f"""
  - id: stubborn
    command: [python, spawn_and_sleep.py]
    dependsOn: [src]
    defaultParams: {{PID_FILE: "{tmp_path / "pids"}", IGNORE_TERM: "1"}}
    timeoutSeconds: 1
""",
        home,
        input_dir,
        kill_grace=0.5,
    )
    assert 1.4 < time.monotonic() - started < 10
    assert record.reason == "processor 'stubborn' failed: timed out after 1s"
    assert pids_gone([int(pid) for pid in (tmp_path / "pids").read_text().split()], timeout=1)


@unsandboxed
def test_nothing_a_processor_started_outlives_it(home, input_dir, tmp_path) -> None:
    record = run(
        SOURCE
        + f"""
  - id: leaves-a-child
    command: [python, spawn_and_sleep.py]
    dependsOn: [src]
    defaultParams: {{PID_FILE: "{tmp_path / "pids"}", SLEEP: "0"}}
""",
        home,
        input_dir,
    )
    assert record.status is Status.SUCCEEDED
    _, child = (int(pid) for pid in (tmp_path / "pids").read_text().split())
    assert pids_gone([child], timeout=2)


def test_a_processor_that_writes_nothing_succeeds_with_a_note(home, input_dir) -> None:
    record = run(
        SOURCE + "  - {id: quiet, command: [python, write_nothing.py], dependsOn: [src]}\n", home, input_dir
    )
    assert record.status is Status.SUCCEEDED
    assert steps_of(home, record.run_id)["quiet"].reason == "wrote no output files"


def test_an_image_without_a_command_fails_clearly_when_no_container_runtime(home, input_dir) -> None:
    record = run(SOURCE + "  - {id: boxed, image: 'ghcr.io/x/boxed:1', dependsOn: [src]}\n", home, input_dir)
    assert record.status is Status.FAILED and record.failed_processor == "boxed"
    assert "cannot run image 'ghcr.io/x/boxed:1': no container runtime here" in record.reason
    assert "no 'command'" in record.reason


def test_a_command_that_does_not_exist_fails_without_retrying(home, input_dir) -> None:
    record = run(
        SOURCE
        + "  - {id: typo, command: [no-such-program-here], dependsOn: [src], retry: {maxAttempts: 3}}\n",
        home,
        input_dir,
    )
    assert record.status is Status.FAILED
    assert "cannot start 'no-such-program-here'" in record.reason
    assert steps_of(home, record.run_id)["typo"].attempts == 1


# ------------------------------------------------------------------ cancel


CANCELABLE = (
    SOURCE
    + """
  - id: sleeper
    command: [python, spawn_and_sleep.py]
    dependsOn: [src]
    defaultParams: {{PID_FILE: "{pids}"}}
  - id: after
    command: [python, mark.py]
    dependsOn: [sleeper]
"""
)


def _run_in_thread(
    definition: str, home: PennflowHome, input_dir: Path, **kwargs
) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(run(definition, home, input_dir, **kwargs)))
    thread.start()
    return thread, result


def _assert_canceled(home: PennflowHome, record: RunRecord, pids: list[int]) -> None:
    assert record.status is Status.CANCELED
    steps = steps_of(home, record.run_id)
    assert steps["src"].status is Status.SUCCEEDED
    assert steps["sleeper"].status is Status.CANCELED and steps["sleeper"].finished_at is not None
    assert steps["after"].status is Status.CANCELED and steps["after"].started_at is None
    assert pids_gone(pids)


@unsandboxed
def test_cancel_event_terminates_the_processes_and_ends_the_run_canceled(home, input_dir, tmp_path) -> None:
    cancel = threading.Event()
    thread, result = _run_in_thread(
        CANCELABLE.format(pids=tmp_path / "pids"), home, input_dir, cancel_event=cancel
    )
    wait_for_file(tmp_path / "pids")
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    assert all(alive(pid) for pid in pids)
    cancel.set()
    thread.join(timeout=15)
    assert not thread.is_alive()
    _assert_canceled(home, result[0], pids)
    assert result[0].reason == "canceled by the user"


@unsandboxed
def test_canceling_through_the_store_from_elsewhere_stops_the_run(home, input_dir, tmp_path) -> None:
    thread, result = _run_in_thread(CANCELABLE.format(pids=tmp_path / "pids"), home, input_dir)
    wait_for_file(tmp_path / "pids")
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    with SqliteRunStore(home.db_path) as other:  # as `pennflow cancel` in another terminal would
        [running] = other.list_runs().runs
        assert running.status is Status.STARTED
        assert other.update_run(running.run_id, Status.CANCELING)
    asked = time.monotonic()
    thread.join(timeout=15)
    assert time.monotonic() - asked < 3
    _assert_canceled(home, result[0], pids)


class _StoreFailingOn(SqliteRunStore):
    """A store whose writes for one processor fail, as a locked or full disk would."""

    def __init__(self, path: Path, processor_id: str):
        super().__init__(path)
        self.processor_id = processor_id

    def update_step(self, run_id, processor_id, status=None, **fields):
        if processor_id == self.processor_id:
            raise sqlite3.OperationalError("database is locked")
        return super().update_step(run_id, processor_id, status, **fields)


def test_a_store_failure_fails_the_processor_instead_of_hanging_the_run(home, input_dir, tmp_path) -> None:
    workflow = (
        CANCELABLE.format(pids=tmp_path / "pids")
        + "  - {id: doomed, command: [python, mark.py], dependsOn: [src]}\n"
    )
    with _StoreFailingOn(home.db_path, "doomed") as store:
        record = run(workflow, home, input_dir, store=store, max_parallel=2)
    assert record.status is Status.FAILED and record.failed_processor == "doomed"
    assert record.reason == "processor 'doomed' failed: pennflow could not run it: database is locked"
    assert steps_of(home, record.run_id)["sleeper"].status is Status.CANCELED
    if (tmp_path / "pids").exists():
        assert pids_gone([int(pid) for pid in (tmp_path / "pids").read_text().split()])


# ------------------------------------------------------------------ params, layers, scatter, inputs


PARAMS = (
    SOURCE
    + """
  - id: first
    command: [python, print_env.py]
    dependsOn: [src]
    defaultParams: {GREETING: hello, SHARED: one}
  - id: second
    command: [python, print_env.py]
    dependsOn: [src]
    defaultParams: {SHARED: two}
"""
)


def test_params_reach_processors_with_run_overrides(home, input_dir) -> None:
    record = run(PARAMS, home, input_dir, params={"SHARED": "both", "first.GREETING": "hi"})
    assert record.status is Status.SUCCEEDED
    first = read_json(output(home, record, "first") / "env-first.json")["env"]
    second = read_json(output(home, record, "second") / "env-second.json")["env"]
    assert (first["GREETING"], first["SHARED"], second["SHARED"]) == ("hi", "both", "both")
    assert "GREETING" not in second
    assert record.params["first"] == {"GREETING": "hi", "SHARED": "both"}


def test_invalid_inputs_are_all_reported_before_anything_runs(home, tmp_path) -> None:
    with pytest.raises(InvalidRunInput) as caught:
        run(PARAMS, home, tmp_path / "missing", params={"NOPE": "1"}, layers=["absent"])
    problems = "\n".join(caught.value.problems)
    assert "--param: no processor declares param(s) 'NOPE'" in problems
    assert "layer 'absent' (from --layer) not found" in problems
    assert f"--input: {tmp_path / 'missing'} is not a folder" in problems
    assert not home.db_path.exists() or SqliteRunStore(home.db_path).list_runs().runs == []


def test_an_empty_or_absent_input_folder_and_a_dataset_are_refused(home, tmp_path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(InvalidRunInput, match="holds no files"):
        run(PARAMS, home, tmp_path / "empty")
    with pytest.raises(InvalidRunInput, match="--input: required"):
        run(PARAMS, home, None)
    with pytest.raises(InvalidRunInput, match="--input and --dataset: give one or the other"):
        run(PARAMS, home, tmp_path / "empty", dataset_id="N:dataset:1")


def populate(home: PennflowHome, name: str, files: dict[str, str]) -> LayerRecord:
    source = home.root.parent / f"{name}-source"
    for rel, text in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(text)
    with LocalLayers.open(home) as layers:
        return layers.populate_from(name, source)


@pytest.mark.parametrize(
    "site",
    ["python", f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"],
    ids=["pennflow-layout", "pennsieve-layout"],
)
def test_python_env_layers_of_either_layout_are_importable(home, input_dir, site) -> None:
    populate(home, "py-lib", {f"{site}/greeting.py": 'MESSAGE = "hello from a layer"\n'})
    record = run(SOURCE + "  - {id: greet, command: [python, use_layer.py], dependsOn: [src], layers: [py-lib]}\n",
                 home, input_dir)  # fmt: skip
    assert record.status is Status.SUCCEEDED
    assert (output(home, record, "greet") / "greeting.txt").read_text() == "hello from a layer"


def test_layers_give_folders_and_importable_python_packages(home, input_dir) -> None:
    py_lib = populate(home, "py-lib", {"python/greeting.py": 'MESSAGE = "hello from a layer"\n'})
    atlas = populate(home, "atlas", {"regions.csv": "a,b\n"})
    record = run(
        SOURCE
        + """
  - id: greet
    command: [python, use_layer.py]
    dependsOn: [src]
    layers: [py-lib]
  - id: env
    command: [python, print_env.py]
    dependsOn: [src]
""",
        home,
        input_dir,
        layers=["atlas"],
    )
    assert record.status is Status.SUCCEEDED
    assert (output(home, record, "greet") / "greeting.txt").read_text() == "hello from a layer"
    env = read_json(output(home, record, "env") / "env-env.json")["env"]
    view = home.run_dir(record.run_id) / "env" / "layers"  # the processor's own view of its layers
    assert env["LAYERS_DIR"] == str(view)
    assert env["LAYER_ATLAS_DIR"] == str(view / "atlas")  # run-level layer: every processor
    assert "LAYER_PY_LIB_DIR" not in env
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(view / "atlas" / "python")
    assert record.layers == [
        {"name": "atlas", "version": "1", "checksum": atlas.checksum},
        {"name": "py-lib", "version": "1", "checksum": py_lib.checksum},
    ]


def test_a_missing_processor_layer_names_the_processor(home, input_dir) -> None:
    with pytest.raises(InvalidRunInput, match=r"layer 'gone' \(from processor 'greet'\) not found"):
        run(
            SOURCE + "  - {id: greet, command: [python, mark.py], dependsOn: [src], layers: [gone]}\n",
            home,
            input_dir,
        )


def test_scatter_runs_one_process_per_batch_into_one_output(home, tmp_path) -> None:
    source = tmp_path / "many"
    for index in range(5):
        (source / "part").mkdir(parents=True, exist_ok=True)
        (source / "part" / f"f{index}.txt").write_text(str(index))
    record = run(
        SOURCE
        + """
  - id: spread
    command: [python, print_env.py]
    dependsOn: [src]
    scatter: {over: files, batchSize: 2}
""",
        home,
        source,
    )
    assert record.status is Status.SUCCEEDED
    spread = output(home, record, "spread")
    assert sorted(p.name for p in spread.iterdir()) == ["env-0.json", "env-1.json", "env-2.json"]
    batches = [read_json(spread / f"env-{i}.json") for i in range(3)]
    assert [b["inputs"] for b in batches] == [
        ["part/f0.txt", "part/f1.txt"],
        ["part/f2.txt", "part/f3.txt"],
        ["part/f4.txt"],
    ]
    assert [b["env"]["BATCH_INDEX"] for b in batches] == ["0", "1", "2"]
    assert batches[1]["env"]["INPUT_DIR"] == str(home.run_dir(record.run_id) / "spread" / "batches" / "00001")
    assert {b["env"]["OUTPUT_DIR"] for b in batches} == {str(spread)}
    step = steps_of(home, record.run_id)["spread"]
    assert (step.status, step.attempts, step.reason) == (Status.SUCCEEDED, 1, "3 batches")


def test_a_failing_batch_fails_the_scattered_processor(home, input_dir, tmp_path) -> None:
    record = run(
        SOURCE
        + f"""
  - id: spread
    command: [python, fail_times.py]
    dependsOn: [src]
    defaultParams: {{COUNTER_FILE: "{tmp_path / "count"}"}}
    scatter: {{batchSize: 1}}
""",
        home,
        input_dir,
        max_parallel=1,
    )
    assert record.status is Status.FAILED and record.failed_processor == "spread"
    assert record.reason == "processor 'spread' failed: batch 0: exit code 3: boom on attempt 1"
    assert record.exit_code == 3


# ------------------------------------------------------------------ launching


def test_the_docker_command_mounts_the_run_and_read_only_layers(tmp_path) -> None:
    argv = docker_command(
        "ghcr.io/org/convert:1.2",
        {"INPUT_DIR": "/mnt/run/src/output", "WINDOW": "30"},
        run_dir=tmp_path / "runs" / "r-1",
        layers={"sci": tmp_path / "layers" / "sci", "atlas": tmp_path / "layers" / "atlas"},
        user="1000:1000",
        name="pennflow-r-1-convert",
    )
    assert argv[:9] == [
        "docker",
        "run",
        "--rm",
        "--init",
        "--name",
        "pennflow-r-1-convert",
        "--user",
        "1000:1000",
        "--mount",
    ]
    assert argv[9] == f"type=bind,source={tmp_path / 'runs' / 'r-1'},target={RUN_MOUNT}"
    assert argv[10:14] == [
        "--mount",
        f"type=bind,source={tmp_path / 'layers' / 'atlas'},target={LAYERS_MOUNT}/atlas,readonly",
        "--mount",
        f"type=bind,source={tmp_path / 'layers' / 'sci'},target={LAYERS_MOUNT}/sci,readonly",
    ]
    assert argv[14:] == [
        "--env",
        "INPUT_DIR=/mnt/run/src/output",
        "--env",
        "WINDOW=30",
        "ghcr.io/org/convert:1.2",
    ]


def test_a_mount_source_with_a_comma_is_quoted() -> None:
    argv = docker_command("img", {}, run_dir=Path("/data/a,b"), layers={}, user="1:1", name="n")
    assert argv[argv.index("--mount") + 1] == f'type=bind,"source=/data/a,b",target={RUN_MOUNT}'


def test_with_a_container_runtime_an_image_runs_in_docker_with_container_paths(
    home, input_dir, tmp_path, monkeypatch
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text(f"#!{sys.executable}\n" + (FIXTURES / "fake_docker.py").read_text())
    (fake_bin / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    populate(home, "sci", {"python/sci.py": ""})
    workflow = parse_definition(
        SOURCE
        + "  - {id: boxed, image: 'ghcr.io/x/boxed:1', command: [python, x.py], dependsOn: [src], layers: [sci]}\n"
    )
    record = run_workflow(workflow, definition_dir=FIXTURES, input_dir=input_dir, home=home, docker=True)
    assert record.status is Status.SUCCEEDED
    [argv] = [json.loads(line) for line in (tmp_path / "docker.log").read_text().splitlines()]
    assert argv[-1] == "ghcr.io/x/boxed:1"  # the image's own entry point, not the local command
    assert argv[argv.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    env = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--env")
    assert env["INPUT_DIR"] == f"{RUN_MOUNT}/src/output"
    assert env["OUTPUT_DIR"] == f"{RUN_MOUNT}/boxed/output"
    assert env["LAYER_SCI_DIR"] == f"{LAYERS_MOUNT}/sci"
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [
        f"{LAYERS_MOUNT}/sci/python",
        f"{LAYERS_MOUNT}/sci/lib/python3.14/site-packages",
    ]
    assert f"type=bind,source={home.run_dir(record.run_id)},target={RUN_MOUNT}" in argv
    pinned = home.layers_dir / ".versions" / "sci" / "1"  # the version the run pinned, never the symlink
    assert f"type=bind,source={pinned},target={LAYERS_MOUNT}/sci,readonly" in argv


def test_a_subprocess_gets_the_systems_path_not_the_engines_venv(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PENNFLOW_PROCESSOR_PATH")  # what these tests set to reach this venv's python
    monkeypatch.setenv("VIRTUAL_ENV", str(Path(sys.executable).parent.parent))
    spec = subprocess_spec(["python", "x.py"], {"OUTPUT_DIR": "/o"}, tmp_path)
    assert spec.env["OUTPUT_DIR"] == "/o"
    assert spec.env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert "VIRTUAL_ENV" not in spec.env and "PYTHONPATH" not in spec.env
    assert (spec.argv, spec.cwd) == (["python", "x.py"], tmp_path)
