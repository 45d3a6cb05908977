"""computeType gpu in a local run, and Podman where Docker is absent. The detection boundary is faked
(an ``nvidia-smi``, a ``podman`` and a ``docker`` first on PATH, each a real program that records its
argv), never the launcher: the engine starts those programs as it would start the real ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pennflow.engine import gpus as gpu_module
from pennflow.engine import launchers
from pennflow.engine.home import PennflowHome
from pennflow.engine.local import InvalidRunInput, run_workflow
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import Status

FAKE_RUNTIME = """
import json, os, sys
with open(os.environ["FAKE_RUNTIME_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
sys.exit(int(os.environ.get("FAKE_INFO_EXIT", "0")) if sys.argv[1:2] == ["info"] else 0)
"""
T4 = "GPU 0: Tesla T4 (UUID: GPU-5a1c4f0e-8f0b-4f53-9d7e-5a1c4f0e8f0b)"

WORKFLOW = """
name: segment
processors:
  - {id: prep, image: "example/prep:1", command: [python, -c, "pass"]}
  - {id: infer, image: "example/infer:1", computeType: gpu, dependsOn: [prep], command: [python, -c, "pass"]}
"""


def program(folder: Path, name: str, body: str) -> None:
    (folder / name).write_text(f"#!{sys.executable}\n{body}")
    (folder / name).chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PATH holds only the fake programs the test puts there (no real docker, podman or nvidia-smi)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    monkeypatch.setenv("PATH", str(fake_bin))
    monkeypatch.setenv("FAKE_RUNTIME_LOG", str(tmp_path / "runtime.log"))
    monkeypatch.setattr(gpu_module, "DEVICE_DIR", tmp_path / "dev")  # no device files unless a test adds them
    launchers.container_program.cache_clear()
    gpu_module.machine_gpus.cache_clear()
    yield fake_bin
    launchers.container_program.cache_clear()
    gpu_module.machine_gpus.cache_clear()


def calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "runtime.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def runs(tmp_path: Path) -> dict[str, list[str]]:
    """The image each `run` started -> its argv."""
    return {argv[-1]: argv for argv in calls(tmp_path) if argv[1] == "run"}


def start(tmp_path: Path, **kwargs):
    return run_workflow(
        parse_definition(WORKFLOW), definition_dir=tmp_path, home=PennflowHome(tmp_path / "home"), **kwargs
    )


def test_podman_runs_the_containers_when_docker_is_absent_and_a_gpu_processor_gets_the_gpus(
    machine: Path, tmp_path: Path
) -> None:
    program(machine, "podman", FAKE_RUNTIME)
    program(machine, "nvidia-smi", f"print({T4!r})\n")

    record = start(tmp_path)

    assert record.status is Status.SUCCEEDED, record.reason
    started = runs(tmp_path)
    assert {argv[0] for argv in calls(tmp_path)} == {"podman"}
    assert ["podman", "info"] in calls(tmp_path)
    infer, prep = started["example/infer:1"], started["example/prep:1"]
    assert infer[infer.index("--gpus") + 1] == "all"
    assert "--gpus" not in prep
    # the same arguments as for docker otherwise: the run folder mounted, the contract environment
    assert any(arg.startswith("type=bind,source=") and arg.endswith("target=/mnt/run") for arg in infer)
    assert "PROCESSOR_ID=infer" in infer


def test_docker_is_preferred_when_both_answer(machine: Path, tmp_path: Path) -> None:
    program(machine, "docker", FAKE_RUNTIME)
    program(machine, "podman", FAKE_RUNTIME)
    program(machine, "nvidia-smi", f"print({T4!r})\n")

    assert start(tmp_path).status is Status.SUCCEEDED
    assert {argv[0] for argv in calls(tmp_path) if argv[1] == "run"} == {"docker"}


def test_a_docker_that_does_not_answer_gives_way_to_podman(
    machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program(machine, "docker", FAKE_RUNTIME.replace('os.environ.get("FAKE_INFO_EXIT", "0")', '"1"'))
    program(machine, "podman", FAKE_RUNTIME)
    program(machine, "nvidia-smi", f"print({T4!r})\n")

    assert start(tmp_path).status is Status.SUCCEEDED
    assert {argv[0] for argv in calls(tmp_path) if argv[1] == "run"} == {"podman"}


def test_without_a_gpu_the_run_is_refused_naming_the_processor_and_the_way_out(
    machine: Path, tmp_path: Path
) -> None:
    program(machine, "podman", FAKE_RUNTIME)
    # nvidia-smi without a GPU (or its driver) prints this and exits 6
    program(machine, "nvidia-smi", "import sys\nprint('No devices were found')\nsys.exit(6)\n")

    with pytest.raises(InvalidRunInput) as refused:
        start(tmp_path)

    assert refused.value.problems == [
        "processor 'infer' is computeType gpu and this machine has no GPU (nvidia-smi -L lists no GPU (exit code 6))",
        "run it on a node with GPU capacity (pennflow.gpu.enabled), or pass --allow-cpu to run it here on the CPU",
    ]
    assert runs(tmp_path) == {}  # nothing started


def test_allow_cpu_runs_a_gpu_processor_without_gpus(machine: Path, tmp_path: Path, caplog) -> None:
    program(machine, "podman", FAKE_RUNTIME)

    record = start(tmp_path, allow_cpu=True)

    assert record.status is Status.SUCCEEDED
    assert "--gpus" not in runs(tmp_path)["example/infer:1"]
    assert "no nvidia-smi and no" in caplog.text and "--allow-cpu, so it runs on the CPU" in caplog.text


def test_a_gpu_device_file_is_a_gpu_when_nvidia_smi_is_missing(machine: Path, tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidia0").touch()
    (tmp_path / "dev" / "nvidiactl").touch()  # the control device is not a GPU
    found = gpu_module.detect_gpus(tmp_path / "dev")
    assert (found.count, found.how) == (1, f"{tmp_path}/dev/nvidia0")


def test_a_gpu_processor_without_a_container_is_refused_unless_allowed_on_the_cpu(
    machine: Path, tmp_path: Path
) -> None:
    program(machine, "nvidia-smi", f"print({T4!r})\n")  # a GPU, but no container runtime
    with pytest.raises(InvalidRunInput, match="runs here without a container .* where it gets no GPU"):
        start(tmp_path, docker=False)
    assert (
        gpu_module.gpu_placement(parse_definition(WORKFLOW).processors, use_containers=False, allow_cpu=True)
        == frozenset()
    )
