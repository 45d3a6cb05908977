"""One attempt of a processor as a process: what to launch (a container when docker runs and the
processor has an image, else its ``command`` in the sandbox, ``engine.sandbox``), and how it ended.

The attempt's output goes to the processor's log; a failure's reason is the exit code (or the
signal) and the attempt's last output line, usually the error message.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, BinaryIO

from pennflow.engine.cancel import STOPPED
from pennflow.engine.container_errors import container_failure
from pennflow.engine.environment import inherited_environment, processor_path
from pennflow.engine.launchers import (
    LaunchSpec,
    RunningProcess,
    caller_user,
    docker_command,
    docker_spec,
    missing_executable,
    subprocess_spec,
)
from pennflow.engine.outcomes import Attempt, attempt_header
from pennflow.engine.pennsieve_session import LocalPennsieveSession, wants_pennsieve
from pennflow.engine.resource_use import wait_and_record
from pennflow.engine.run_checks import needs_pennsieve
from pennflow.engine.run_context import RunContext
from pennflow.engine.run_sandbox import RunSandbox
from pennflow.engine.sandbox import SandboxView, command_files, detect
from pennflow.engine.source_processors import venv_spec
from pennflow.workflow.contract import LAYERS_MOUNT, RUN_MOUNT, RunLayout, processor_environment
from pennflow.workflow.definition import Processor

if TYPE_CHECKING:
    from pennflow.pennsieve import PennsieveClient

TIMEOUT = "timeout"  # RunningProcess.stopped_by when the processor ran past its timeoutSeconds
LAST_LINE_CHARS = 200
SECRET_VARIABLES = ("SESSION_TOKEN",)  # given to a container by name, never on its command line

logger = logging.getLogger(__name__)


class CannotLaunch(Exception):
    """The processor cannot run on this machine (no command, no container runtime)."""


class ProcessLauncher:
    def __init__(self, ctx: RunContext, pennsieve: Callable[[], PennsieveClient]):
        self.ctx = ctx
        # Pennsieve's processor variables and a SESSION_TOKEN per start, from the run's one client.
        uses_pennsieve = needs_pennsieve(ctx.workflow, ctx.plan.inputs)
        self._pennsieve_session = LocalPennsieveSession(
            pennsieve, connect=wants_pennsieve(ctx.workflow, uses_pennsieve)
        )
        self._launch_notes: dict[str, str] = {}
        self._inherited = inherited_environment()  # read once: every processor starts from it
        self._sandbox = detect()
        self._run_sandbox: RunSandbox | None = None
        if not self._sandbox.available and any(self._runs_command(p) for p in ctx.workflow.processors):
            logger.warning(self._sandbox.notice)  # the run's one line: what is not enforced here

    def _runs_command(self, processor: Processor) -> bool:
        return bool(processor.command) and not (self.ctx.use_docker and processor.image)

    def runs_in_sandbox(self, processor: Processor) -> bool:
        """Whether ``spec`` runs the processor here (its ``command``, or a sourceUrl processor's venv,
        with its layers view), not a container."""
        if processor.id in self.ctx.venv_launches:
            return True
        return not (self.ctx.use_docker and processor.image) and bool(processor.command)

    def spec(self, processor: Processor, batch: int | None = None) -> LaunchSpec:
        """What to execute; raises CannotLaunch when this machine cannot run the processor."""
        if self.ctx.use_docker and processor.image:
            return self._container_spec(processor, batch)
        launch = self.ctx.venv_launches.get(processor.id)
        if launch is not None:  # a sourceUrl processor without a container runtime
            view = self.ctx.views.of(processor)
            env = self._environment(processor, self.ctx.layout, view.root, batch)
            spec = venv_spec(launch, env, self._inherited)
            if self._run_sandbox is not None:  # in the run's one sandbox, as a command is
                return replace(spec, sandbox=self._run_sandbox)
            if self._sandbox.available:  # fail closed: never unsandboxed where the sandbox works
                raise CannotLaunch("the run's sandbox was not started: pennflow cannot run this processor")
            return spec
        if not processor.command:
            raise CannotLaunch(_cannot_launch_message(processor, self.ctx.use_docker))
        view = self.ctx.views.of(processor)
        env = self._environment(processor, self.ctx.layout, view.root, batch)
        cwd = self.ctx.definition_dir.absolute()
        if self._run_sandbox is not None:  # the run's one sandbox starts it (run_sandbox)
            spec = subprocess_spec(processor.command, env, cwd, inherited=self._inherited)
            return replace(spec, sandbox=self._run_sandbox)
        if self._sandbox.available:  # fail closed: never unsandboxed where the sandbox works
            raise CannotLaunch("the run's sandbox was not started: pennflow cannot run this processor")
        spec = subprocess_spec(processor.command, env, cwd, wrap=view.wrap, inherited=self._inherited)
        if spec.wrapped is not None and missing_executable(processor.command[0], spec.env, spec.cwd):
            # Started through the layers sandbox, a typo would only show as the wrapper's exit code 127.
            raise CannotLaunch(f"cannot start {processor.command[0]!r}: no such executable")
        return spec

    @property
    def sandboxes_runs(self) -> bool:
        """Whether this machine's sandbox is there for the run's one sandbox (``start_run_sandbox``)."""
        return self._sandbox.available

    def start_run_sandbox(self, processors: Sequence[Processor]) -> bool:
        """Start the run's one sandbox for ``processors`` (those that run their ``command`` here),
        whose OUTPUT_DIRs and layers views exist by now; False where bwrap is not available (each
        attempt then runs unsandboxed, with the layers sandbox). From the run's main thread."""
        bwrap = self._sandbox.bwrap
        if bwrap is None or not processors:
            return False
        cwd = self.ctx.definition_dir.absolute()
        path = processor_path()
        distinct = dict.fromkeys(tuple(p.command) for p in processors if p.command)  # most share a few
        commands = [folder for command in distinct for folder in command_files(command, cwd, path)]
        commands += self._venv_files(processors)
        views = [self.ctx.views.of(p) for p in processors]
        view = SandboxView(
            cwd=cwd,
            hidden=[self.ctx.home.root],
            scratch=[Path(os.environ["HOME"])] if os.environ.get("HOME") else [],
            readable=[self.ctx.run_dir, cwd, *dict.fromkeys(commands)],
            writable=[self.ctx.output_dir(p.id) for p in processors],
            layer_views=[(v.root, {m.name: Path(m.path) for m in v.mounts}) for v in views if v.mounts],
        )
        sandbox = RunSandbox(bwrap, view, on_start=self.ctx.lease.list_group)
        sandbox.start_sandbox()
        self._run_sandbox = sandbox
        return True

    def _venv_files(self, processors: Sequence[Processor]) -> list[Path]:
        """What sourceUrl processors run from a venv read (read-only in the sandbox): the venv, the
        image's files staged beside it, the Dockerfile's working directory and the command's files
        (found on the venv's PATH: its python, and the base interpreter it links to)."""
        files: list[Path] = []
        for processor in processors:
            launch = self.ctx.venv_launches.get(processor.id)
            if launch is None:
                continue
            venv_path = os.pathsep.join([str(launch.venv / "bin"), processor_path()])
            files += [launch.venv, *([launch.root] if launch.root else []), launch.cwd]
            files += command_files(launch.argv, launch.cwd, venv_path)
        return files

    def close(self) -> None:
        """The run's sandbox ends (what still runs in it is killed)."""
        if self._run_sandbox is not None:
            self._run_sandbox.close()

    def _container_spec(self, processor: Processor, batch: int | None) -> LaunchSpec:
        assert processor.image is not None
        env = self._environment(processor, RunLayout(RUN_MOUNT), LAYERS_MOUNT, batch)
        # Passed by name (the value in docker's own environment), so it is on no command line or log.
        secrets = {key: env.pop(key) for key in SECRET_VARIABLES if key in env}
        name = f"pennflow-{self.ctx.run_id}-{processor.id}" + (f"-{batch}" if batch is not None else "")
        argv = docker_command(
            processor.image,
            env,
            run_dir=self.ctx.run_dir,
            layers={mount.name: Path(mount.path) for mount in self.ctx.plan.layers.of(processor)},
            user=caller_user(),
            name=name,
            secret_names=sorted(secrets),
            gpus=processor.id in self.ctx.gpu_processors,
        )
        return docker_spec(argv, name, secrets)

    def _environment(
        self,
        processor: Processor,
        layout: RunLayout,
        layers_root: PurePath,
        batch: int | None,
    ) -> dict[str, str]:
        env = processor_environment(
            self.ctx.workflow,
            processor,
            run_id=self.ctx.run_id,
            layout=layout,
            layers_root=layers_root,
            params=self.ctx.plan.params[processor.id],
            dataset_id=self.ctx.plan.inputs.dataset_id,
        )
        pennsieve, note = self._pennsieve_session.environment(self.ctx.workflow, self.ctx.run_id, processor)
        env.update(pennsieve)
        if note:  # written after the attempt's header (run)
            self._launch_notes[processor.id] = note
        if batch is not None:
            env["INPUT_DIR"] = str(layout.batch_dir(processor.id, batch))
            env["BATCH_INDEX"] = str(batch)
        return env

    def run(self, processor: Processor, attempt: int, spec: LaunchSpec, batch: int | None = None) -> Attempt:
        """Run the attempt to its end (or until the run stops), its output appended to the log."""
        log_path = self.ctx.logs.path(processor.id)
        with _open_log(log_path) as log:
            log.write(attempt_header(processor, attempt, shlex.join(spec.command), batch).encode())
            note = self._launch_notes.pop(processor.id, None)
            if note:
                log.write(f"{note}\n".encode())
            log.flush()
            attempt_start = log.tell()
            try:
                process = RunningProcess.start(
                    spec, log, timeout_seconds=processor.timeout_seconds, grace_seconds=self.ctx.kill_grace
                )
            except OSError as exc:
                message = f"cannot start {spec.argv[0]!r}: {exc.strerror or exc}"
                log.write(f"{message}\n".encode())
                return Attempt(False, message, retryable=False)
            with self.ctx.stop.tracking(process), self.ctx.lease.tracking(process):
                code = wait_and_record(process, self.ctx.records, processor.id, attempt, batch)
        if process.stopped_by == STOPPED:
            return Attempt(False, canceled=True)
        if process.stopped_by == TIMEOUT:
            return Attempt(False, f"timed out after {processor.timeout_seconds}s")
        if code == 0:
            return Attempt(True, exit_code=0)
        tail = _attempt_tail(log_path, attempt_start)
        if spec.container_name and processor.image:
            docker = container_failure(code, tail, processor.image)
            if docker is not None:
                return Attempt(False, docker.reason, exit_code=code, retryable=docker.retryable)
        return Attempt(False, _failure_reason(code, tail), exit_code=code)


def _open_log(path: Path) -> BinaryIO:
    """The processor's log for appending; its folder made only when it is not there yet (laid out
    ahead, it is: a failed look-up costs less than a mkdir that finds the folder). Unbuffered: the
    engine writes a line or two and hands the file to the process (no terminal check, no seeks)."""
    try:
        return open(path, "ab", buffering=0)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab", buffering=0)


def _cannot_launch_message(processor: Processor, have_runtime: bool) -> str:
    if processor.image and not have_runtime:
        return (
            f"cannot run image {processor.image!r}: no container runtime here (docker info failed) "
            "and the processor has no 'command' to run without one"
        )
    if processor.source_url:
        return (
            f"sourceUrl {processor.source_url}@{processor.tag} is resolved by a compute node's "
            "processor registry; to run locally give the processor an 'image' or a 'command'"
        )
    return "the processor has no 'command' to run locally"


def _failure_reason(code: int, tail: list[str]) -> str:
    if code < 0:
        try:
            what = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            what = f"killed by signal {-code}"
    else:
        what = f"exit code {code}"
    return f"{what}: {tail[-1][:LAST_LINE_CHARS]}" if tail else what


def _attempt_tail(log_path: Path, attempt_start: int) -> list[str]:
    """The attempt's last non-empty output lines (the last is usually the error message)."""
    try:
        with open(log_path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(attempt_start, size - 4096))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.strip() for line in tail.splitlines() if line.strip()]
