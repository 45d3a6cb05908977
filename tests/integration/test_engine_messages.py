"""What a local run says about its attempts: numbers from 1, why a retry happens, why docker failed."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from pennflow.engine.container_errors import container_failure
from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.engine.progress import PlainProgress
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import RunRecord, Status, StepRecord

FIXTURES = Path(__file__).parents[1] / "fixtures" / "processors"
SOURCE = "name: talk\nprocessors:\n  - id: src\n    type: data-source\n"
DAEMON_DOWN = [
    "docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
    "Run 'docker run --help' for more information",
]
NO_IMAGE = [
    "Unable to find image 'nosuch:1' locally",
    "docker: Error response from daemon: pull access denied for nosuch, repository does not exist or may "
    "require 'docker login': denied: requested access to the resource is denied.",
    "See 'docker run --help'.",
]


@pytest.fixture
def home(tmp_path: Path) -> PennflowHome:
    return PennflowHome(tmp_path / "home")


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / "input").mkdir(exist_ok=True)
        (tmp_path / "input" / name).write_text(name)
    return tmp_path / "input"


def run(body: str, home: PennflowHome, input_dir: Path, **kwargs) -> tuple[RunRecord, str]:
    """The run and the lines a plain (not a terminal) display printed while it went."""
    workflow = parse_definition(SOURCE + body)
    printed = io.StringIO()
    reporter = PlainProgress(Console(file=printed, width=200), workflow)
    record = run_workflow(
        workflow, definition_dir=FIXTURES, input_dir=input_dir, home=home, reporter=reporter, **kwargs
    )
    return record, printed.getvalue()


def step(home: PennflowHome, record: RunRecord, pid: str) -> StepRecord:
    with SqliteRunStore(home.db_path) as store:
        return {s.processor_id: s for s in store.list_steps(record.run_id)}[pid]


def test_a_scattered_processor_counts_attempts_from_1(home, input_dir) -> None:
    record, printed = run(
        "  - id: spread\n    command: [python, print_env.py]\n    dependsOn: [src]\n    scatter: {batchSize: 1}\n",
        home,
        input_dir,
        docker=False,
    )
    assert record.status is Status.SUCCEEDED
    assert "spread STARTED (attempt 1/1)" in printed
    assert "attempt 0" not in printed
    assert step(home, record, "spread").attempts == 1


@pytest.mark.usefixtures("no_sandbox")  # its processor keeps notes outside its run
def test_a_retry_says_why_the_attempt_before_it_failed(home, input_dir, tmp_path) -> None:
    record, printed = run(
        f"""  - id: flaky
    command: [python, fail_times.py]
    dependsOn: [src]
    defaultParams: {{FAIL_TIMES: "2", COUNTER_FILE: "{tmp_path / "count"}"}}
    retry: {{maxAttempts: 2, intervalSeconds: 1, backoffRate: 1}}
""",
        home,
        input_dir,
        docker=False,
    )
    assert record.status is Status.SUCCEEDED
    assert "flaky STARTED (attempt 1/3)\n" in printed
    assert (
        "flaky STARTED (attempt 2/3): retrying: attempt 1 failed: exit code 3: boom on attempt 1" in printed
    )
    assert (
        "flaky STARTED (attempt 3/3): retrying: attempt 2 failed: exit code 3: boom on attempt 2" in printed
    )
    flaky = step(home, record, "flaky")
    assert (flaky.status, flaky.attempts, flaky.reason) == (Status.SUCCEEDED, 3, None)
    log = Path(flaky.log_path or "").read_text()
    assert "==== retrying: attempt 1 failed: exit code 3: boom on attempt 1; attempt 2 in 1s" in log


@pytest.mark.usefixtures("no_sandbox")  # its processor keeps notes outside its run
def test_a_retried_batch_names_its_batch(home, input_dir, tmp_path) -> None:
    record, printed = run(
        f"""  - id: spread
    command: [python, fail_times.py]
    dependsOn: [src]
    defaultParams: {{FAIL_TIMES: "1", COUNTER_FILE: "{tmp_path / "count"}"}}
    retry: {{maxAttempts: 1, intervalSeconds: 1}}
    scatter: {{batchSize: 1}}
""",
        home,
        input_dir,
        docker=False,
        max_parallel=1,
    )
    assert record.status is Status.SUCCEEDED  # the counter is shared: only batch 0's first attempt fails
    assert "spread STARTED (attempt 2/2): retrying: batch 0 attempt 1 failed: exit code 3" in printed


def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[str], code: int) -> None:
    """A ``docker`` first on PATH that prints what the real client prints when it cannot start a container."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    script = "import sys\n" + "".join(f"print({line!r}, file=sys.stderr)\n" for line in lines)
    (fake_bin / "docker").write_text(f"#!{sys.executable}\n{script}sys.exit({code})\n")
    (fake_bin / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")


IMAGE_STEP = """  - id: boxed
    image: nosuch:1
    dependsOn: [src]
    retry: {maxAttempts: 2, intervalSeconds: 1}
"""


def test_a_stopped_docker_daemon_is_the_reason_shown_and_not_retried(
    home, input_dir, tmp_path, monkeypatch
) -> None:
    fake_docker(tmp_path, monkeypatch, DAEMON_DOWN, 125)
    record, _ = run(IMAGE_STEP, home, input_dir, docker=True)
    assert record.status is Status.FAILED
    boxed = step(home, record, "boxed")
    assert boxed.attempts == 1 and boxed.exit_code == 125
    assert boxed.reason == (
        "the docker daemon is not running (Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is the docker daemon running?): start it, or run with --no-containers"
    )
    assert "docker run --help" not in (record.reason or "")


def test_an_image_that_does_not_exist_is_the_reason_shown(home, input_dir, tmp_path, monkeypatch) -> None:
    fake_docker(tmp_path, monkeypatch, NO_IMAGE, 125)
    record, _ = run(IMAGE_STEP, home, input_dir, docker=True)
    boxed = step(home, record, "boxed")
    assert boxed.attempts == 1
    assert boxed.reason is not None and boxed.reason.startswith(
        "image 'nosuch:1' not found: Error response from daemon: pull access denied for nosuch"
    )


def _docker_daemon_down() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return probe.returncode != 0 and b"Cannot connect to the Docker daemon" in probe.stdout + probe.stderr


@pytest.mark.skipif(not _docker_daemon_down(), reason="needs a docker client whose daemon is not running")
def test_the_real_docker_client_without_its_daemon_says_so(home, input_dir) -> None:
    record, _ = run(IMAGE_STEP, home, input_dir, docker=True)
    reason = step(home, record, "boxed").reason or ""
    assert reason.startswith("the docker daemon is not running (Cannot connect to the Docker daemon")


def test_a_processor_exiting_125_on_its_own_keeps_its_own_reason() -> None:
    # Only docker's own "docker: ..." line is docker's failure; otherwise the processor spoke.
    assert container_failure(125, ["bad input: 125 rows"], "img:1") is None
    assert container_failure(1, DAEMON_DOWN, "img:1") is None
    missing = container_failure(
        127,
        [
            'docker: Error response from daemon: failed to create task for container: exec: "convert": '
            "executable file not found in $PATH: unknown."
        ],
        "img:1",
    )
    assert missing is not None and not missing.retryable
    assert missing.reason.startswith("the container's command cannot run: Error response from daemon")
    other = container_failure(125, ["docker: invalid env file"], "img:1")
    assert other is not None and other.retryable
    assert other.reason == "docker could not start the container: invalid env file"
