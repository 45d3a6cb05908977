"""The bwrap command of one attempt: what it covers, shows and in which order (a deeper folder wins);
and a container's: only its run and its layers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pennflow.engine import sandbox
from pennflow.engine.launchers import docker_command
from pennflow.engine.sandbox import SANDBOX_ENV, SandboxView, command_files, detect, wrap_command
from pennflow.workflow.contract import LAYERS_MOUNT, RUN_MOUNT


def mounts(argv: list[str]) -> list[tuple[str, ...]]:
    """bwrap's folder options in order, as (option, path)."""
    start, end = argv.index("bwrap") + 1, argv.index("--")
    options, out, i = argv[start:end], [], 0
    while i < len(options):
        option = options[i]
        if option in ("--ro-bind", "--bind"):
            out.append((option, options[i + 2]))
            i += 3
        elif option in ("--tmpfs", "--remount-ro", "--chdir", "--dev", "--proc", "--cap-drop"):
            out.append((option, options[i + 1]))
            i += 2
        else:
            i += 1
    return out


def test_a_covered_home_inside_the_definition_folder_stays_covered(tmp_path) -> None:
    home = tmp_path / "pennflow"
    run = home / "runs" / "r-1"
    output = run / "p" / "output"
    output.mkdir(parents=True)
    view = SandboxView(cwd=tmp_path, hidden=[home], readable=[run, tmp_path], writable=[output])
    order = mounts(wrap_command(["python", "x.py"], "bwrap", view))
    position = {entry: index for index, entry in enumerate(order)}
    # The definition folder (which holds pennflow's home) first, then the home covered, then the run.
    assert position[("--ro-bind", str(tmp_path))] < position[("--tmpfs", str(home))]
    assert (
        position[("--tmpfs", str(home))]
        < position[("--ro-bind", str(run))]
        < position[("--bind", str(output))]
    )
    assert order[-2:] == [("--remount-ro", str(home)), ("--chdir", str(tmp_path))]
    assert ("--tmpfs", "/tmp") in order and ("--cap-drop", "ALL") in order


def test_a_definition_folder_that_is_home_itself_does_not_show_home(tmp_path) -> None:
    view = SandboxView(cwd=tmp_path, hidden=[], readable=[tmp_path], writable=[], scratch=[tmp_path])
    order = mounts(wrap_command(["true"], "bwrap", view))
    assert order.index(("--ro-bind", str(tmp_path))) < order.index(("--tmpfs", str(tmp_path)))


def test_layers_are_bound_read_only_into_an_emptied_layers_dir(tmp_path) -> None:
    layers_dir, pinned = tmp_path / "view", tmp_path / "store" / "atlas" / "3"
    view = SandboxView(
        cwd=tmp_path, hidden=[], readable=[], writable=[], layers_dir=layers_dir, layers={"atlas": pinned}
    )
    argv = wrap_command(["true"], "bwrap", view)
    i = argv.index("--tmpfs", argv.index(str(layers_dir)) - 1)
    assert argv[i : i + 7] == [
        "--tmpfs", str(layers_dir), "--ro-bind", str(pinned), str(layers_dir / "atlas"), "--remount-ro", str(layers_dir)
    ]  # fmt: skip


def test_bwrap_runs_the_command_itself_in_the_attempts_group() -> None:
    view = SandboxView(cwd=Path("/"), hidden=[], readable=[], writable=[])
    argv = wrap_command(["python", "x.py"], "/usr/bin/bwrap", view)
    assert argv[0] == "/usr/bin/bwrap" and argv[argv.index("--") + 1 :] == ["python", "x.py"]
    assert "--die-with-parent" in argv and "--new-session" not in argv  # stays in the attempt's group


def test_the_interpreter_a_command_names_is_shown_with_its_environment(tmp_path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    script = tmp_path / "src" / "main.py"
    script.parent.mkdir()
    script.write_text("")
    found = command_files(["../venv/bin/python", "../src/main.py", "--flag"], tmp_path / "src", os.defpath)
    real_env = Path(os.path.realpath(sys.executable)).parent.parent
    assert found[0] == venv and real_env in found and script.parent in found
    assert command_files(["no-such-program", "nothing/here"], tmp_path, str(tmp_path)) == []


def test_off_turns_the_sandbox_off() -> None:
    sandbox = detect({SANDBOX_ENV: "off"})
    assert not sandbox.available and sandbox.why_not == f"{SANDBOX_ENV}=off"
    assert sandbox.notice.startswith(f"processors run without a sandbox ({SANDBOX_ENV}=off): ")


def test_a_container_mounts_only_its_run_and_its_layers_and_gets_only_the_contract(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    run_dir, layer = tmp_path / "runs" / "r-1", tmp_path / "layers" / ".versions" / "atlas" / "2"
    argv = docker_command(
        "img:1",
        {"OUTPUT_DIR": "/mnt/run/p/output"},
        run_dir=run_dir,
        layers={"atlas": layer},
        user="1000:1000",
        name="pennflow-r-1-p",
        secret_names=["SESSION_TOKEN"],
    )
    values = lambda flag: [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]  # noqa: E731
    assert values("--mount") == [
        f"type=bind,source={run_dir},target={RUN_MOUNT}",
        f"type=bind,source={layer},target={LAYERS_MOUNT}/atlas,readonly",
    ]
    assert values("--env") == ["OUTPUT_DIR=/mnt/run/p/output", "SESSION_TOKEN"]  # the token by name only
    assert not any(arg.startswith(("-v", "--volume", "--env-file", "--privileged")) for arg in argv)


def test_without_bwrap_or_namespaces_the_notice_says_why(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda name, **_: None)
    missing = sandbox._probe.__wrapped__()
    assert (missing.available, missing.why_not) == (False, "bwrap not found: install bubblewrap")
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(
        sandbox.shutil, "which", lambda name, **_: str(fake) if name == "bwrap" else "/usr/bin/env"
    )
    refused = sandbox._probe.__wrapped__()
    assert not refused.available
    assert (
        refused.why_not == "bwrap cannot make namespaces here: bwrap: setting up uid map: Permission denied"
    )
    assert "\n" not in refused.notice
