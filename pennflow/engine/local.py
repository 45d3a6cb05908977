"""The local engine: run a workflow on this machine, with the processor contract of DESIGN §3.

A processor starts as soon as all of its own dependencies succeeded (not level by level), within
``max_parallel`` running processes. Each processor runs in a worker thread that blocks on its
process; the scheduler blocks on a queue of finished processors, so nothing sleeps or polls on the
way from one processor to the next. A watcher thread notices a cancel (``cancel_event``, or the
run's status turning CANCELING in the store, e.g. from ``pennflow cancel`` in another terminal).

When a processor fails for good, no new processor starts, running ones are terminated, the ones
that never started are CANCELED and the run is FAILED, naming the processor, its exit code and why.

Layers: the run pins each requested layer's current version for its whole life (a re-populate
meanwhile never changes what it reads) and releases them when it ends. A processor sees only its
own layers, read-only, through a view in its processor folder (``pennflow.layers.sandbox``).

Inputs: a data source receives the ``--input`` folder, or downloads a Pennsieve dataset (or some of
its packages) into its OUTPUT_DIR. A retried download keeps what the failed attempt left, so
partial files resume. Data targets always copy their INPUT_DIR into their OUTPUT_DIR; with
``publish`` they also publish it (``pennflow.data.targets``): s3 to ``$PENNFLOW_RESULTS_BUCKET``,
Pennsieve Dataset through the upload service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shlex
import shutil
import signal
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rich import filesize

from pennflow.engine.home import PennflowHome
from pennflow.engine.launchers import (
    LaunchSpec,
    RunningProcess,
    caller_user,
    container_runtime_available,
    docker_command,
    docker_spec,
    missing_executable,
    subprocess_spec,
)
from pennflow.engine.pennsieve_session import LocalPennsieveSession
from pennflow.layers.models import (
    InvalidLayerName,
    LayerConflict,
    LayerError,
    LayersUnavailable,
    check_layer_name,
)
from pennflow.layers.mounts import LayerMount
from pennflow.layers.sandbox import LayersView, SandboxMode, detect_mode, enforced
from pennflow.layers.service import LocalLayers
from pennflow.stores.base import RunStore
from pennflow.workflow.contract import (
    LAYERS_MOUNT,
    RUN_MOUNT,
    FanInClash,
    RunLayout,
    UnknownParameter,
    build_union,
    builds_union,
    list_input_files,
    make_batches,
    processor_environment,
    run_parameters,
    stage_batch,
)
from pennflow.workflow.dag import Dag
from pennflow.workflow.definition import Processor, ProcessorType, TargetType, Workflow
from pennflow.workflow.runs import RunRecord, Status, StepRecord, new_run_id, utcnow

if TYPE_CHECKING:
    from pennflow.pennsieve import PennsieveClient

DEFAULT_KILL_GRACE_SECONDS = 5.0
STORE_POLL_SECONDS = 0.5
NO_OUTPUT = "wrote no output files"
SECRET_VARIABLES = ("SESSION_TOKEN",)
CANCELED_BY_USER = "canceled by the user"
CANCELED_BY_STORE = "canceled (pennflow cancel)"
_STOPPED = "stopped"  # RunningProcess.stopped_by when the run stops (failure elsewhere or cancel)
_TIMEOUT = "timeout"
_LAST_LINE_CHARS = 200
RESULTS_BUCKET_ENV = "PENNFLOW_RESULTS_BUCKET"  # where --publish puts s3 targets' files
VIEW_DIR = "layers"  # a processor's LAYERS_DIR, in its processor folder
NOT_WRITE_PROTECTED = (
    "layers are not write-protected in this run: private mount namespaces are unavailable here and "
    "pennflow runs as root, so a processor could change the layers it reads"
)

logger = logging.getLogger(__name__)


class InvalidRunInput(ValueError):
    """The run cannot start: every problem found, each naming the option or processor at fault."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Reporter(Protocol):
    """Receives progress as it is stored (the CLI's live display implements it)."""

    def run_started(self, run: RunRecord, steps: Sequence[StepRecord]) -> None: ...

    def step_updated(self, step: StepRecord) -> None: ...

    def run_finished(self, run: RunRecord, steps: Sequence[StepRecord]) -> None: ...


class _SilentReporter:
    def run_started(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        pass

    def step_updated(self, step: StepRecord) -> None:
        pass

    def run_finished(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        pass


def run_workflow(
    workflow: Workflow,
    *,
    definition_dir: str | os.PathLike[str],
    input_dir: str | os.PathLike[str] | None = None,
    params: Mapping[str, str] | None = None,
    layers: Sequence[str] = (),
    max_parallel: int | None = None,
    home: str | os.PathLike[str] | PennflowHome | None = None,
    store: RunStore | None = None,
    reporter: Reporter | None = None,
    cancel_event: threading.Event | None = None,
    docker: bool | None = None,
    dataset_id: str | None = None,
    package_ids: Sequence[str] = (),
    publish: bool = False,
    kill_grace: float = DEFAULT_KILL_GRACE_SECONDS,
) -> RunRecord:
    """Run ``workflow`` to the end and return its final record.

    Raises InvalidRunInput before anything runs (unknown param, a layer missing or not READY, no
    input folder or dataset, no Pennsieve credentials for the dataset, a data target that cannot
    ``publish``). ``layers`` are given to every processor, on top of the ones each asks for.
    ``docker=None`` uses containers when ``docker info`` succeeds; True/False forces the choice.
    Pennsieve hosts and credentials come from the environment (``PennsieveClient()``).
    """
    home = home if isinstance(home, PennflowHome) else PennflowHome.resolve(home)
    run_id = new_run_id()
    inputs = _RunInputs(
        input_dir=Path(input_dir).absolute() if input_dir is not None else None,
        dataset_id=dataset_id,
        package_ids=tuple(dict.fromkeys(package_ids)),
        publish=publish,
        results_bucket=os.environ.get(RESULTS_BUCKET_ENV) or None,
    )
    plan = _plan(workflow, home, run_id, inputs, params, layers, max_parallel)
    own_store = store is None
    try:
        if store is None:
            from pennflow.stores.sqlite import SqliteRunStore

            store = SqliteRunStore(home.db_path)
        if plan.layers.mounts and not enforced(plan.layers.mode):
            logger.warning(NOT_WRITE_PROTECTED)
        engine = _Engine(
            plan,
            run_id=run_id,
            home=home,
            definition_dir=Path(definition_dir),
            store=store,
            reporter=reporter or _SilentReporter(),
            cancel_event=cancel_event or threading.Event(),
            use_docker=container_runtime_available() if docker is None else docker,
            kill_grace=kill_grace,
        )
        return engine.run()
    finally:
        try:
            plan.layers.close(run_id)
        finally:
            if own_store and store is not None:
                store.close()  # type: ignore[attr-defined]


def result_dirs(workflow: Workflow, run_dir: Path) -> list[Path]:
    """Where a run's results are: the data targets' output folders, else the last processors'.

    A persistent-layer target has none: its results are the layer version its step names."""
    layout = RunLayout(run_dir)
    data_targets = [p for p in workflow.processors if p.type is ProcessorType.DATA_TARGET]
    targets = [p.id for p in data_targets if p.target_type is not TargetType.PERSISTENT_LAYER]
    if not data_targets:
        succs = Dag.from_workflow(workflow).succs
        targets = [pid for pid, after in succs.items() if not after]
    return [Path(layout.output_dir(pid)) for pid in targets]


# ------------------------------------------------------------------ checking the inputs


@dataclass(frozen=True)
class _RunLayers:
    """The layers of one run: the pinned versions it holds until it ends, and the service that
    populates persistent-layer targets (None when the run neither mounts nor populates layers)."""

    home: PennflowHome
    service: LocalLayers | None
    mounts: dict[str, LayerMount]
    mode: SandboxMode  # probed once per run: views and wrappers of every processor use it

    def of(self, processor: Processor) -> list[LayerMount]:
        return [self.mounts[name] for name in processor.layers]

    def view(self, root: Path, processor: Processor) -> LayersView:
        return LayersView.create(root, self.of(processor), hidden=self.home.layers_dir, mode=self.mode)

    def close(self, run_id: str) -> None:
        if self.service is None:
            return
        try:
            if self.mounts:
                self.service.release(self.mounts, run_id)
        finally:
            self.service.close()


@dataclass(frozen=True)
class _RunInputs:
    """Where the data sources' files come from, and whether data targets publish."""

    input_dir: Path | None
    dataset_id: str | None
    package_ids: tuple[str, ...]
    publish: bool
    results_bucket: str | None


@dataclass(frozen=True)
class _Plan:
    workflow: Workflow
    processors: dict[str, Processor]  # with the run-level layers added
    params: dict[str, dict[str, str]]
    layers: _RunLayers
    inputs: _RunInputs
    max_parallel: int


def _plan(
    workflow: Workflow,
    home: PennflowHome,
    run_id: str,
    inputs: _RunInputs,
    overrides: Mapping[str, str] | None,
    run_layers: Sequence[str],
    max_parallel: int | None,
) -> _Plan:
    problems: list[str] = []
    params: dict[str, dict[str, str]] = {}
    try:
        params = run_parameters(workflow, overrides)
    except UnknownParameter as exc:
        problems.append(f"--param: {exc}")
    run_layers = tuple(dict.fromkeys(run_layers))
    processors = {
        p.id: p.model_copy(update={"layers": list(dict.fromkeys([*run_layers, *p.layers]))})
        for p in workflow.processors
    }
    problems += _target_layer_problems(workflow, params)
    pennsieve_problem = _pennsieve_problem() if _needs_pennsieve(workflow, inputs) else None
    problems += _input_problems(workflow, inputs, pennsieve_problem)
    problems += _publish_problems(workflow, params, inputs, pennsieve_problem)
    if max_parallel is not None and max_parallel < 1:
        problems.append(f"--max-parallel: must be at least 1, got {max_parallel}")
    layers = _mount_layers(
        home, run_id, _requested_layers(run_layers, workflow.processors), workflow, problems
    )
    if problems:
        layers.close(run_id)
        raise InvalidRunInput(problems)
    return _Plan(workflow, processors, params, layers, inputs, max_parallel or os.cpu_count() or 1)


def _requested_layers(run_layers: Iterable[str], processors: Iterable[Processor]) -> dict[str, str]:
    """Each layer the run mounts -> who asked for it first (for the error messages)."""
    requested = {name: "--layer" for name in run_layers}
    for processor in processors:
        for name in processor.layers:
            requested.setdefault(name, f"processor {processor.id!r}")
    return requested


def _mount_layers(
    home: PennflowHome, run_id: str, requested: dict[str, str], workflow: Workflow, problems: list[str]
) -> _RunLayers:
    """Pin the requested layers for the run; a layer that cannot be mounted becomes a problem."""
    service = None
    mounts: list[LayerMount] = []
    if requested or any(_is_layer_target(p) for p in workflow.processors):
        service = LocalLayers.open(home)
        try:
            mounts = service.mount(requested, run_id)
        except LayersUnavailable as exc:
            problems += [_attributed(problem, requested) for problem in exc.problems]
        except BaseException:
            service.close()
            raise
    # Without mounts and without a layers folder to hide there is nothing to sandbox: skip the probe.
    mode = detect_mode() if mounts or home.layers_dir.is_dir() else SandboxMode.PERMISSIONS
    return _RunLayers(home, service, {m.name: m for m in mounts}, mode)


def _attributed(problem: str, requested: dict[str, str]) -> str:
    """``layer 'x' not found`` -> ``layer 'x' (from --layer) not found``."""
    for name, by in requested.items():
        for prefix in (f"layer {name!r}", f"layer name {name!r}"):
            if problem.startswith(prefix):
                return f"{prefix} (from {by}){problem[len(prefix) :]}"
    return problem


def _is_layer_target(processor: Processor) -> bool:
    return processor.target_type is TargetType.PERSISTENT_LAYER


def _target_layer_problems(workflow: Workflow, params: dict[str, dict[str, str]]) -> list[str]:
    """A --param may override a persistent-layer target's layerName: check it before anything runs."""
    problems = []
    for processor in filter(_is_layer_target, workflow.processors):
        name = params.get(processor.id, {}).get("layerName")
        if name is None:  # the params themselves were refused
            continue
        if not name:
            problems.append(
                f"processor {processor.id!r}: layerName: none given; pass it with the run "
                f"(--param layerName=NAME)"
            )
            continue
        try:
            check_layer_name(name)
        except InvalidLayerName as exc:
            problems.append(f"processor {processor.id!r}: layerName: {exc}")
    return problems


def _is_pennsieve_target(processor: Processor) -> bool:
    return processor.target_type in (TargetType.PENNSIEVE_DATASET, TargetType.PENNSIEVE_PACKAGE_ASSET)


def _needs_pennsieve(workflow: Workflow, inputs: _RunInputs) -> bool:
    return inputs.dataset_id is not None or (
        inputs.publish and any(map(_is_pennsieve_target, workflow.processors))
    )


def _pennsieve_problem() -> str | None:
    """Why this machine cannot reach Pennsieve (no credentials, a malformed host), else None."""
    from pydantic import ValidationError

    from pennflow.pennsieve import CredentialsNotFound, PennsieveHosts, resolve_credentials

    try:
        resolve_credentials()
        PennsieveHosts.from_env()
    except CredentialsNotFound as exc:
        return str(exc)
    except ValidationError as exc:
        env = {"api": "PENNSIEVE_API_HOST", "api2": "PENNSIEVE_API2_HOST"}
        return "; ".join(f"{env.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors())
    return None


def _input_problems(workflow: Workflow, inputs: _RunInputs, pennsieve_problem: str | None) -> list[str]:
    sources = [p.id for p in workflow.processors if p.type is ProcessorType.DATA_SOURCE]
    input_dir, dataset_id = inputs.input_dir, inputs.dataset_id
    if inputs.package_ids and dataset_id is None:
        return ["--package: needs --dataset"]
    if dataset_id is not None:
        if input_dir is not None:
            return ["--input and --dataset: give one or the other, not both"]
        if not sources:
            return ["--dataset: the workflow has no data source to receive it"]
        if not dataset_id.strip():
            return ["--dataset: must be a dataset id, got an empty string"]
        return [f"--dataset: {pennsieve_problem}"] if pennsieve_problem else []
    if input_dir is None:
        if sources:
            names = ", ".join(repr(s) for s in sources)
            return [
                f"--input: required, the workflow's data source {names} needs a folder of files "
                "(or --dataset ID for a Pennsieve dataset)"
            ]
        return []
    if not sources:
        return ["--input: the workflow has no data source to receive it"]
    folder = input_dir
    if not folder.is_dir():
        return [f"--input: {folder} is not a folder"]
    if not any(p.is_file() for p in folder.rglob("*")):
        return [f"--input: {folder} holds no files"]
    return []


def _publish_problems(
    workflow: Workflow, params: dict[str, dict[str, str]], inputs: _RunInputs, pennsieve_problem: str | None
) -> list[str]:
    """Each data target must be able to do what the run asks of it (copy, or copy and publish)."""
    from pennflow.data.targets import PARAM_DATASET, TargetError, local_target_plan

    targets = [p for p in workflow.processors if p.type is ProcessorType.DATA_TARGET]
    if inputs.publish and not targets:
        return ["--publish: the workflow has no data target"]
    problems = []
    for target in targets:
        if _is_layer_target(target):  # populates its layer whether or not the run publishes
            continue
        assert target.target_type is not None
        try:
            local_target_plan(
                target.target_type,
                publish_requested=inputs.publish,
                has_credentials=pennsieve_problem is None,
                results_bucket=inputs.results_bucket,
            )
        except TargetError as exc:
            detail = f" ({pennsieve_problem})" if _is_pennsieve_target(target) and pennsieve_problem else ""
            problems.append(f"processor {target.id!r}: {exc}{detail}")
            continue
        target_params = params.get(target.id, target.default_params)
        has_dataset = target_params.get(PARAM_DATASET) or inputs.dataset_id
        if inputs.publish and _is_pennsieve_target(target) and not has_dataset:
            problems.append(
                f"processor {target.id!r}: --publish to a {target.target_type.value} target needs a dataset: "
                f"set its defaultParams.{PARAM_DATASET} or start the run with --dataset"
            )
        if inputs.publish and target.target_type is TargetType.PENNSIEVE_PACKAGE_ASSET:
            from pennflow.data.package_asset import asset_settings

            try:
                asset_settings(target_params, inputs.package_ids)
            except TargetError as exc:
                problems.append(f"processor {target.id!r}: {exc}")
    return problems


# ------------------------------------------------------------------ the engine


@dataclass(frozen=True)
class _Attempt:
    """How one attempt ended."""

    ok: bool
    reason: str | None = None
    exit_code: int | None = None
    retryable: bool = True
    canceled: bool = False


@dataclass(frozen=True)
class _Outcome:
    """How a processor ended."""

    status: Status
    reason: str | None = None
    exit_code: int | None = None


class _CannotLaunch(Exception):
    """The processor cannot run on this machine (no command, no container runtime)."""


class _Engine:
    def __init__(
        self,
        plan: _Plan,
        *,
        run_id: str,
        home: PennflowHome,
        definition_dir: Path,
        store: RunStore,
        reporter: Reporter,
        cancel_event: threading.Event,
        use_docker: bool,
        kill_grace: float,
    ):
        self.plan = plan
        self.workflow = plan.workflow
        self.home = home
        self.definition_dir = definition_dir
        self.store = store
        self.reporter = reporter
        self.cancel_event = cancel_event
        self.use_docker = use_docker
        self.kill_grace = kill_grace
        self.run_id = run_id
        self.layers = plan.layers
        self.run_dir = home.run_dir(self.run_id)
        self.layout = RunLayout(self.run_dir)
        self.dag = Dag.from_workflow(self.workflow)

        self._slots = threading.BoundedSemaphore(plan.max_parallel)
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._finished = threading.Event()
        # Set when the run stops early: no new attempt starts, running processes are terminated.
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._active: set[RunningProcess] = set()
        self._active_lock = threading.Lock()
        self._record_lock = threading.RLock()
        self._steps: dict[str, StepRecord] = {}
        self._failure: tuple[str, _Outcome] | None = None
        self._canceled: str | None = None
        self._views: dict[str, LayersView] = {}
        self._views_lock = threading.Lock()
        self._pennsieve_client: PennsieveClient | None = None
        self._pennsieve_lock = threading.Lock()
        self._pennsieve_session = LocalPennsieveSession(self._pennsieve)
        self._launch_notes: dict[str, str] = {}

    # ---------------------------------------------------------------- the run

    def run(self) -> RunRecord:
        run = RunRecord(
            run_id=self.run_id,
            workflow=self.workflow.name,
            definition_hash=self.workflow.definition_hash(),
            params=self.plan.params,
            layers=[mount.run_entry() for mount in self.layers.mounts.values()],
            dataset_id=self.plan.inputs.dataset_id,
            package_ids=list(self.plan.inputs.package_ids),
        )
        steps = [StepRecord(run_id=self.run_id, processor_id=p.id) for p in self.workflow.processors]
        self.store.create_run(run, steps)
        self._steps = {step.processor_id: step for step in steps}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.store.update_run(self.run_id, Status.STARTED, started_at=utcnow())
        self.reporter.run_started(self.store.get_run(self.run_id) or run, steps)
        threading.Thread(target=self._watch_for_cancel, name="pennflow-cancel-watch", daemon=True).start()
        try:
            self._schedule()
        finally:
            self._finished.set()
            self._remove_views()
            if self._pennsieve_client is not None:
                self._pennsieve_client.close()
        return self._finish()

    def _schedule(self) -> None:
        waiting = {pid: set(self.dag.deps[pid]) for pid in self.dag.nodes}
        outstanding = 0
        with ThreadPoolExecutor(max_workers=len(waiting), thread_name_prefix="pennflow") as workers:

            def start_ready() -> int:
                ready = [pid for pid, deps in waiting.items() if not deps] if not self._stop.is_set() else []
                for pid in ready:
                    del waiting[pid]
                    workers.submit(self._run_processor, pid)
                return len(ready)

            try:
                outstanding += start_ready()
                while outstanding:
                    try:
                        event = self._events.get()
                    except KeyboardInterrupt:  # used as a library without a signal handler: cancel cleanly
                        self._cancel(CANCELED_BY_USER)
                        continue
                    if event[0] == "cancel":
                        self._cancel(event[1])
                        continue
                    _, pid, outcome = event
                    outstanding -= 1
                    if outcome.status is Status.SUCCEEDED:
                        for succ in self.dag.succs[pid]:
                            waiting[succ].discard(pid)
                        outstanding += start_ready()
                    elif outcome.status is Status.FAILED and self._failure is None:
                        self._failure = (pid, outcome)
                        self._halt(f"canceled: processor {pid!r} failed")
            except BaseException:  # the scheduler itself broke (e.g. the store): leave no process behind
                self._halt("canceled: pennflow stopped on an error")
                raise
        for pid in waiting:  # never started: the run stopped first
            self._set_step(pid, Status.CANCELED, finished_at=utcnow(), reason=self._stop_reason)

    def _finish(self) -> RunRecord:
        now = utcnow()
        if self._failure is not None:
            pid, outcome = self._failure
            self.store.update_run(
                self.run_id,
                Status.FAILED,
                finished_at=now,
                failed_processor=pid,
                exit_code=outcome.exit_code,
                reason=f"processor {pid!r} failed: {outcome.reason}",
            )
        elif self._canceled is not None:
            self.store.update_run(self.run_id, Status.CANCELED, finished_at=now, reason=self._canceled)
        else:
            self.store.update_run(self.run_id, Status.SUCCEEDED, finished_at=now)
        run = self.store.get_run(self.run_id)
        assert run is not None
        self.reporter.run_finished(run, list(self._steps.values()))
        return run

    def _watch_for_cancel(self) -> None:
        while True:
            requested = self.cancel_event.wait(STORE_POLL_SECONDS)
            if self._finished.is_set():
                return
            if requested:
                self._events.put(("cancel", CANCELED_BY_USER))
                return
            try:
                run = self.store.get_run(self.run_id)
            except Exception:  # a busy or briefly unreadable store: look again next time
                continue
            if run is not None and run.status is Status.CANCELING:
                self._events.put(("cancel", CANCELED_BY_STORE))
                return

    def _cancel(self, reason: str) -> None:
        if self._canceled is not None:
            return
        self._canceled = reason
        self.store.update_run(self.run_id, Status.CANCELING)
        self._halt(reason)

    def _halt(self, reason: str, failed: str | None = None) -> None:
        """Stop the run: no new attempts; terminate what runs; the other running processors (not
        the one that ``failed``) show CANCELING until their process is gone."""
        with self._active_lock:
            if self._stop.is_set():
                return
            self._stop_reason = reason
            self._stop.set()
            running = list(self._active)
        for process in running:
            process.terminate(_STOPPED)
        for pid, step in list(self._steps.items()):
            if step.status is Status.STARTED and pid != failed:
                self._set_step(pid, Status.CANCELING)

    # ---------------------------------------------------------------- records

    def _set_step(self, pid: str, status: Status | None = None, **fields: Any) -> bool:
        with self._record_lock:
            if not self.store.update_step(self.run_id, pid, status, **fields):
                return False
            update = {**fields, **({"status": status} if status else {})}
            record = self._steps[pid] = self._steps[pid].model_copy(update=update)
            self.reporter.step_updated(record)
            return True

    def _note_attempt(self, pid: str, attempt: int) -> None:
        """The first attempt starts the processor; later ones (or batches) raise its attempt count."""
        with self._record_lock:  # batches of one processor report concurrently
            step = self._steps[pid]
            if step.status is Status.NOT_STARTED:
                log_path = str(self._log_path(pid))
                self._set_step(pid, Status.STARTED, started_at=utcnow(), attempts=attempt, log_path=log_path)
            elif attempt > step.attempts:
                self._set_step(pid, attempts=attempt)

    def _log_path(self, pid: str) -> Path:
        return self.home.log_path(self.run_id, pid)

    def _output_dir(self, pid: str) -> Path:
        return Path(self.layout.output_dir(pid))

    def _view(self, processor: Processor) -> LayersView:
        """The processor's LAYERS_DIR, laid out once (its batches and retries share it)."""
        with self._views_lock:
            view = self._views.get(processor.id)
            if view is None:
                root = Path(self.layout.processor_dir(processor.id)) / VIEW_DIR
                view = self._views[processor.id] = self.layers.view(root, processor)
            return view

    def _remove_views(self) -> None:
        """The views point at versions the run is about to release."""
        with self._views_lock:
            for view in self._views.values():
                with contextlib.suppress(OSError):
                    view.remove()

    # ---------------------------------------------------------------- one processor

    def _run_processor(self, pid: str) -> None:
        """A worker thread: run one processor to its outcome, and always tell the scheduler."""
        outcome = _Outcome(Status.FAILED, "pennflow stopped unexpectedly")
        try:
            outcome = self._outcome(self.plan.processors[pid])
        except Exception as exc:  # pennflow's own fault (a bug, a full disk): fail visibly, keep the run sane
            outcome = _Outcome(Status.FAILED, f"pennflow could not run it: {exc}")
            with contextlib.suppress(OSError):
                self._append_log(pid, traceback.format_exc())
        try:
            fields: dict[str, Any] = {"finished_at": utcnow(), "reason": outcome.reason}
            if outcome.exit_code is not None:
                fields["exit_code"] = outcome.exit_code
            self._set_step(pid, outcome.status, **fields)
            if outcome.status is Status.FAILED:
                self._halt(f"canceled: processor {pid!r} failed", failed=pid)
        finally:
            self._events.put(("done", pid, outcome))

    def _outcome(self, processor: Processor) -> _Outcome:
        if processor.type is ProcessorType.DATA_SOURCE:
            return self._attempts(processor, lambda n: self._receive_input(processor, n))
        if processor.type is ProcessorType.DATA_TARGET:
            return self._attempts(processor, lambda n: self._publish(processor, n))
        if processor.scatter is not None:
            return self._scatter(processor)
        return self._attempts(processor, lambda n: self._process(processor, n))

    def _attempts(self, processor: Processor, attempt_once: Callable[[int], _Attempt]) -> _Outcome:
        """1 + retry.maxAttempts attempts, waiting interval * backoff^(n-1) before retry n."""
        retry = processor.retry
        total = 1 + (retry.max_attempts if retry else 0)
        for number in range(1, total + 1):
            if number > 1 and retry is not None:
                delay = retry.interval_seconds * retry.backoff_rate ** (number - 2)
                if self._stop.wait(delay):
                    break
            with self._slots:
                if self._stop.is_set():
                    break
                self._note_attempt(processor.id, number)
                result = attempt_once(number)
            if result.ok:
                return _Outcome(Status.SUCCEEDED, result.reason, result.exit_code)
            if result.canceled:
                break
            if not result.retryable or number == total:
                return _Outcome(Status.FAILED, result.reason, result.exit_code)
        return _Outcome(Status.CANCELED, self._stop_reason)

    def _process(self, processor: Processor, attempt: int) -> _Attempt:
        output = self._output_dir(processor.id)
        _fresh_dir(output)  # OUTPUT_DIR is empty at the start of every attempt
        try:
            if attempt == 1:
                self._prepare_union(processor)
            spec = self._launch_spec(processor)
        except (FanInClash, _CannotLaunch) as exc:
            self._append_log(processor.id, f"{exc}\n")
            return _Attempt(False, str(exc), retryable=False)
        result = self._run_process(processor, attempt, spec)
        if result.ok and not _has_files(output):
            return _Attempt(True, NO_OUTPUT, result.exit_code)
        return result

    def _scatter(self, processor: Processor) -> _Outcome:
        """One process per batch of input files, all writing the processor's OUTPUT_DIR."""
        assert processor.scatter is not None
        pid = processor.id
        self._note_attempt(pid, 0)
        try:
            self._prepare_union(processor)
        except FanInClash as exc:
            self._append_log(pid, f"{exc}\n")
            return _Outcome(Status.FAILED, str(exc))
        source = Path(self.layout.input_dir(processor) or self.run_dir)
        batches = make_batches(list_input_files(source), processor.scatter.batch_size)
        _fresh_dir(self._output_dir(pid))
        for index, files in enumerate(batches):
            stage_batch(source, files, Path(self.layout.batch_dir(pid, index)))
        if not batches:
            return _Outcome(Status.SUCCEEDED, "no input files: no batches ran")

        def run_batch(index: int) -> _Outcome:
            outcome = self._attempts(processor, lambda n: self._process_batch(processor, index, n))
            if outcome.status is Status.FAILED:
                self._halt(f"canceled: processor {pid!r} failed", failed=pid)  # stop the other batches now
            return outcome

        with ThreadPoolExecutor(min(len(batches), self.plan.max_parallel)) as pool:
            outcomes = list(pool.map(run_batch, range(len(batches))))
        for index, outcome in enumerate(outcomes):
            if outcome.status is Status.FAILED:
                return _Outcome(Status.FAILED, f"batch {index}: {outcome.reason}", outcome.exit_code)
        if any(outcome.status is Status.CANCELED for outcome in outcomes):
            return _Outcome(Status.CANCELED, self._stop_reason)
        reason = None if _has_files(self._output_dir(pid)) else NO_OUTPUT
        return _Outcome(Status.SUCCEEDED, f"{len(batches)} batches" + (f"; {reason}" if reason else ""))

    def _process_batch(self, processor: Processor, index: int, attempt: int) -> _Attempt:
        try:
            spec = self._launch_spec(processor, batch=index)
        except _CannotLaunch as exc:
            self._append_log(processor.id, f"{exc}\n")
            return _Attempt(False, str(exc), retryable=False)
        return self._run_process(processor, attempt, spec, batch=index)

    def _prepare_union(self, processor: Processor) -> None:
        """Fan-in: INPUT_DIR is the union of the dependencies' outputs (raises FanInClash)."""
        if builds_union(processor):  # a root processor's INPUT_DIR: an empty folder
            sources = {dep: self._output_dir(dep) for dep in processor.dependencies}
            union = Path(self.layout.union_dir(processor.id))
            if union.exists():
                shutil.rmtree(union)
            build_union(sources, union)

    # ---------------------------------------------------------------- built-ins

    def _receive_input(self, processor: Processor, attempt: int) -> _Attempt:
        """The data source: the --input folder (sub-folders kept) or the Pennsieve dataset becomes
        its OUTPUT_DIR."""
        if self.plan.inputs.dataset_id is not None:
            return self._download_dataset(processor, attempt, self.plan.inputs.dataset_id)
        assert self.plan.inputs.input_dir is not None
        return self._copy_folder(processor, attempt, self.plan.inputs.input_dir, reason=None)

    def _download_dataset(self, processor: Processor, attempt: int, dataset_id: str) -> _Attempt:
        """Download the dataset (or the chosen packages), folders kept. OUTPUT_DIR is not emptied
        between attempts: a retry skips the files already verified and resumes the partial ones."""
        from pennflow.data.datasource import download_dataset
        from pennflow.pennsieve import PennsieveError

        output = self._output_dir(processor.id)
        output.mkdir(parents=True, exist_ok=True)
        package_ids = self.plan.inputs.package_ids
        chosen = f" (packages {', '.join(package_ids)})" if package_ids else ""
        self._append_log(
            processor.id, _header(processor, attempt, f"download dataset {dataset_id}{chosen} to {output}")
        )
        try:
            summary, report = download_dataset(
                self._pennsieve(), dataset_id, output, package_ids=list(package_ids) or None
            )
        except PennsieveError as exc:
            message = _message_with_notes(exc)
            self._append_log(processor.id, f"download failed: {message}\n")
            return _Attempt(False, message, retryable=_pennsieve_retryable(exc))
        except OSError as exc:
            self._append_log(processor.id, f"download failed: {exc}\n")
            return _Attempt(False, f"download failed: {exc}")
        self._append_log(
            processor.id,
            f"{summary.file_count} files, {summary.total_bytes} bytes: {report.downloaded} downloaded, "
            f"{report.skipped} already here (verified)\n",
        )
        if not summary.file_count:
            return _Attempt(True, NO_OUTPUT)
        size = filesize.decimal(summary.total_bytes)
        return _Attempt(True, f"dataset {dataset_id}: {summary.file_count} files, {size}")

    def _pennsieve(self) -> PennsieveClient:
        """One client for the run (credentials and hosts from the environment), shared by threads."""
        with self._pennsieve_lock:
            if self._pennsieve_client is None:
                from pennflow.pennsieve import PennsieveClient

                self._pennsieve_client = PennsieveClient()
            return self._pennsieve_client

    def _publish(self, processor: Processor, attempt: int) -> _Attempt:
        """A data target, locally: its INPUT_DIR copied into its OUTPUT_DIR, the run's results."""
        try:
            if attempt == 1:
                self._prepare_union(processor)
        except FanInClash as exc:
            self._append_log(processor.id, f"{exc}\n")
            return _Attempt(False, str(exc), retryable=False)
        source = Path(self.layout.input_dir(processor) or self.run_dir)
        if _is_layer_target(processor):
            return self._populate_layer(processor, attempt, source)
        copied = self._copy_folder(
            processor, attempt, source, reason=f"results in {self._output_dir(processor.id)}"
        )
        if not copied.ok or not self.plan.inputs.publish:
            return copied
        return self._publish_results(processor, copied.reason)

    def _publish_results(self, processor: Processor, copied: str | None) -> _Attempt:
        """--publish: the copied results to the target (s3 bucket, Pennsieve dataset)."""
        from pennflow.data.targets import TargetError, publish
        from pennflow.pennsieve import PennsieveError

        assert processor.target_type is not None
        output = self._output_dir(processor.id)
        self._append_log(processor.id, f"publish {output} to its {processor.target_type.value} target\n")
        try:
            report = publish(
                processor.target_type,
                output,
                run_id=self.run_id,
                params=self.plan.params[processor.id],
                run_dataset_id=self.plan.inputs.dataset_id,
                run_package_ids=self.plan.inputs.package_ids,
                results_bucket=self.plan.inputs.results_bucket,
                pennsieve=self._pennsieve,
            )
        except TargetError as exc:  # a setting or a name the next attempt would not change
            self._append_log(processor.id, f"publish failed: {exc}\n")
            return _Attempt(False, f"publish failed: {exc}", retryable=False)
        except PennsieveError as exc:
            message = _message_with_notes(exc)
            self._append_log(processor.id, f"publish failed: {message}\n")
            return _Attempt(False, f"publish failed: {message}", retryable=_pennsieve_retryable(exc))
        except Exception as exc:  # S3 and network errors (botocore's own types): may pass on a retry
            self._append_log(processor.id, traceback.format_exc())
            return _Attempt(False, f"publish failed: {type(exc).__name__}: {exc}")
        count = len(report.files)
        published = f"published {count} file{'' if count == 1 else 's'} to {report.destination}"
        self._append_log(processor.id, f"{published}\n")
        return _Attempt(True, f"{copied}; {published}" if copied and copied != NO_OUTPUT else published)

    def _populate_layer(self, processor: Processor, attempt: int, source: Path) -> _Attempt:
        """A persistent-layer target: its INPUT_DIR becomes the layer's next version, published
        atomically (runs that mounted an older version keep reading it)."""
        assert self.layers.service is not None  # opened by _mount_layers for every layer target
        name = self.plan.params[processor.id]["layerName"]
        self._append_log(processor.id, _header(processor, attempt, f"populate layer {name!r} from {source}"))
        try:
            record = self.layers.service.populate_from(name, source)
        except LayerError as exc:
            self._append_log(processor.id, f"{exc}\n")
            # Another build of the layer running now may be over by the next attempt; the rest is final.
            return _Attempt(False, str(exc), retryable=isinstance(exc, LayerConflict))
        reason = f"layer {name!r} version {record.version} ({record.file_count} files)"
        self._append_log(processor.id, f"populated {reason}\n")
        return _Attempt(True, reason)

    def _copy_folder(self, processor: Processor, attempt: int, source: Path, reason: str | None) -> _Attempt:
        output = self._output_dir(processor.id)
        self._append_log(processor.id, _header(processor, attempt, f"copy {source} to {output}"))
        try:
            if output.exists():
                shutil.rmtree(output)
            shutil.copytree(source, output)
        except (OSError, shutil.Error) as exc:
            self._append_log(processor.id, f"copy failed: {exc}\n")
            return _Attempt(False, f"copy failed: {exc}")
        count = len(list_input_files(output))
        self._append_log(processor.id, f"copied {count} files\n")
        return _Attempt(True, reason if count else NO_OUTPUT)

    # ---------------------------------------------------------------- processes

    def _launch_spec(self, processor: Processor, batch: int | None = None) -> LaunchSpec:
        if self.use_docker and processor.image:
            return self._container_spec(processor, batch)
        if not processor.command:
            raise _CannotLaunch(_cannot_launch_message(processor, self.use_docker))
        view = self._view(processor)
        env = self._environment(processor, self.layout, view.root, batch, os.environ.get("PYTHONPATH"))
        spec = subprocess_spec(processor.command, env, self.definition_dir, wrap=view.wrap)
        if spec.wrapped is not None and missing_executable(processor.command[0], spec.env, spec.cwd):
            # Started through the sandbox, a typo would only show as the wrapper's exit code 127.
            raise _CannotLaunch(f"cannot start {processor.command[0]!r}: no such executable")
        return spec

    def _container_spec(self, processor: Processor, batch: int | None) -> LaunchSpec:
        assert processor.image is not None
        env = self._environment(processor, RunLayout(RUN_MOUNT), LAYERS_MOUNT, batch, None)
        # Passed by name (the value in docker's own environment), so it is on no command line or log.
        secrets = {key: env.pop(key) for key in SECRET_VARIABLES if key in env}
        name = f"pennflow-{self.run_id}-{processor.id}" + (f"-{batch}" if batch is not None else "")
        argv = docker_command(
            processor.image,
            env,
            run_dir=self.run_dir,
            layers={mount.name: Path(mount.path) for mount in self.layers.of(processor)},
            user=caller_user(),
            name=name,
            secret_names=sorted(secrets),
        )
        return docker_spec(argv, name, secrets)

    def _environment(
        self,
        processor: Processor,
        layout: RunLayout,
        layers_root: Any,
        batch: int | None,
        inherited_pythonpath: str | None,
    ) -> dict[str, str]:
        env = processor_environment(
            self.workflow,
            processor,
            run_id=self.run_id,
            layout=layout,
            layers_root=layers_root,
            params=self.plan.params[processor.id],
            dataset_id=self.plan.inputs.dataset_id,
            inherited_pythonpath=inherited_pythonpath,
        )
        pennsieve, note = self._pennsieve_session.environment(self.workflow, self.run_id, processor)
        env.update(pennsieve)
        if note:  # written after the attempt's header (_run_process)
            self._launch_notes[processor.id] = note
        if batch is not None:
            env["INPUT_DIR"] = str(layout.batch_dir(processor.id, batch))
            env["BATCH_INDEX"] = str(batch)
        return env

    def _run_process(
        self, processor: Processor, attempt: int, spec: LaunchSpec, batch: int | None = None
    ) -> _Attempt:
        log_path = self._log_path(processor.id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(_header(processor, attempt, shlex.join(spec.command), batch).encode())
            note = self._launch_notes.pop(processor.id, None)
            if note:
                log.write(f"{note}\n".encode())
            log.flush()
            attempt_start = log.tell()
            try:
                process = RunningProcess.start(
                    spec, log, timeout_seconds=processor.timeout_seconds, grace_seconds=self.kill_grace
                )
            except OSError as exc:
                message = f"cannot start {spec.argv[0]!r}: {exc.strerror or exc}"
                log.write(f"{message}\n".encode())
                return _Attempt(False, message, retryable=False)
            with self._active_lock:
                self._active.add(process)
                stopping = self._stop.is_set()
            if stopping:  # the run stopped while this process was starting
                process.terminate(_STOPPED)
            try:
                code = process.wait()
            finally:
                with self._active_lock:
                    self._active.discard(process)
        if process.stopped_by == _STOPPED:
            return _Attempt(False, canceled=True)
        if process.stopped_by == _TIMEOUT:
            return _Attempt(False, f"timed out after {processor.timeout_seconds}s")
        if code == 0:
            return _Attempt(True, exit_code=0)
        return _Attempt(False, _failure_reason(code, log_path, attempt_start), exit_code=code)

    def _append_log(self, pid: str, text: str) -> None:
        path = self._log_path(pid)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as log:
            log.write(text)


# ------------------------------------------------------------------ helpers


def _header(processor: Processor, attempt: int, what: str, batch: int | None = None) -> str:
    total = 1 + (processor.retry.max_attempts if processor.retry else 0)
    where = f" batch {batch}" if batch is not None else ""
    stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"==== {stamp} {processor.id}{where} attempt {attempt}/{total}: {what}\n"


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


def _failure_reason(code: int, log_path: Path, attempt_start: int) -> str:
    if code < 0:
        try:
            what = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            what = f"killed by signal {-code}"
    else:
        what = f"exit code {code}"
    last = _last_log_line(log_path, attempt_start)
    return f"{what}: {last}" if last else what


def _last_log_line(log_path: Path, attempt_start: int) -> str | None:
    """The attempt's last non-empty output line, usually the error message."""
    try:
        with open(log_path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(attempt_start, size - 4096))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:_LAST_LINE_CHARS] if lines else None


def _pennsieve_retryable(exc: Exception) -> bool:
    """A missing dataset, a refused key or no credentials stay so on the next attempt."""
    from pennflow.pennsieve import AuthenticationError, CredentialsNotFound, NotFound, PermissionDenied

    return not isinstance(exc, NotFound | PermissionDenied | AuthenticationError | CredentialsNotFound)


def _message_with_notes(exc: BaseException) -> str:
    """The message and its notes (e.g. how many more files failed)."""
    return "; ".join([str(exc), *getattr(exc, "__notes__", ())])


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _has_files(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))
