"""What runs inside the layer jobs' ECS tasks (the node's built-in image), and the publish step of a
persistent-layer data target.

    python -m pennflow.layers.populate_task populate   a Pennsieve dataset into the version folder
    python -m pennflow.layers.populate_task stage      a build, before pip: empty the version folder,
                                                       write INPUT_DIR/requirements.txt
    python -m pennflow.layers.populate_task report     a build, after pip: upload OUTPUT_DIR's manifest,
                                                       drop the build's job folder
    python -m pennflow.layers.populate_task clean      remove the folders in LAYER_CLEAN_PATHS

The tasks read their job from the environment the layer-jobs function sets (``jobs.task_environment``)
and the spec it wrote to S3; their manifest (a ``BuildResult``) goes back to S3 beside the spec.
Exit codes follow the processor contract: 0 done, 1 the work failed, 2 bad environment.

``populate_from_run`` is the persistent-layer target: inside a run's built-in task it reserves the
layer's next version, copies the target's INPUT_DIR into that version's folder and publishes it,
through synchronous calls to the layer-jobs function.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pennflow.aws import client as aws_client
from pennflow.layers import jobs
from pennflow.layers.build import MANIFEST_NAME, BuildResult, TreeStats, tree_stats
from pennflow.layers.storage import remove_tree
from pennflow.workflow.definition import NAME_RE

REQUIREMENTS = "requirements.txt"
TRASH = ".trash"
RESERVATIONS = ".targets"  # <layer>/.targets/<run>--<processor>.json: a target's reserved version


class TaskEnvironmentError(ValueError):
    """The task's environment is incomplete or invalid (each variable named)."""


class JobEnvironment(BaseModel):
    """A build or populate task's view of its job (``jobs.task_environment``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    layer: str = Field(alias=jobs.ENV_LAYER, pattern=NAME_RE.pattern)
    version: int = Field(alias=jobs.ENV_VERSION, ge=1)
    bucket: str = Field(alias=jobs.ENV_BUCKET, min_length=1)
    job_key: str = Field(alias=jobs.ENV_JOB_KEY, min_length=1)
    target_dir: Path = Field(alias=jobs.ENV_TARGET)
    input_dir: Path | None = Field(None, alias="INPUT_DIR")
    output_dir: Path | None = Field(None, alias="OUTPUT_DIR")

    @classmethod
    def read(cls, env: Mapping[str, str], *required: str) -> JobEnvironment:
        try:
            settings = cls.model_validate({k: v for k, v in env.items() if v != ""})
        except ValidationError as exc:
            raise TaskEnvironmentError("; ".join(jobs.validation_problems(exc))) from None
        missing = [name for name in required if getattr(settings, name) is None]
        if missing:
            names = {"input_dir": "INPUT_DIR", "output_dir": "OUTPUT_DIR"}
            raise TaskEnvironmentError("; ".join(f"{names[m]}: required" for m in missing))
        return settings

    def key(self, name: str) -> str:
        return self.job_key + name


# ------------------------------------------------------------------ the build's steps


def stage(env: Mapping[str, str], s3: Any = None) -> int:
    """Empty the version folder (a failed build may have left files) and write requirements.txt."""
    job = JobEnvironment.read(env, "input_dir", "output_dir")
    spec = _read_spec(job, s3)
    for folder in (job.target_dir, job.input_dir, job.output_dir):
        remove_tree(folder)
    job.input_dir.mkdir(parents=True)
    job.output_dir.mkdir(parents=True)
    (job.input_dir / REQUIREMENTS).write_text(spec.get("requirements") or "")
    print(f"staged the requirements of layer {job.layer!r} version {job.version}")
    return 0


def report(env: Mapping[str, str], s3: Any = None) -> int:
    """Upload the build's manifest (if pip got as far as writing one), then drop the job folder."""
    job = JobEnvironment.read(env, "output_dir")
    manifest = job.output_dir / MANIFEST_NAME
    if manifest.is_file():
        result = BuildResult.from_json(manifest.read_text())  # refuses a manifest the finisher could not read
        _put_manifest(job, result, s3)
        print(f"reported the build of layer {job.layer!r} version {job.version}: ok={result.ok}")
    else:
        print(f"the build of layer {job.layer!r} wrote no manifest; its exit code tells why", file=sys.stderr)
    folder = job.output_dir.parent
    if folder.parent.name == jobs.JOBS_FOLDER:
        remove_tree(folder)
    return 0


# ------------------------------------------------------------------ populate


def populate(
    env: Mapping[str, str],
    s3: Any = None,
    *,
    pennsieve: Callable[[], Any] | None = None,
    download: Callable[..., Any] | None = None,
) -> int:
    """Download the spec's dataset (or its packages) into the version folder; 1 when it failed."""
    job = JobEnvironment.read(env)
    spec = _read_spec(job, s3)
    if download is None:
        from pennflow.data.datasource import download_dataset as download
    if pennsieve is None:
        from pennflow.pennsieve.node_secret import node_pennsieve

        pennsieve = lambda: node_pennsieve(env)  # noqa: E731 - the secret is read only when needed
    remove_tree(job.target_dir)
    try:
        with contextlib.closing(pennsieve()) as client:
            download(client, spec["datasetId"], job.target_dir, package_ids=spec.get("packageIds") or None)
        result = BuildResult(True, "", stats=tree_stats(job.target_dir))
    except Exception as exc:  # every failure is recorded in the manifest the finisher reads
        result = BuildResult(False, "", error=f"{type(exc).__name__}: {exc}")
    _put_manifest(job, result, s3)
    if not result.ok:
        print(f"populate of layer {job.layer!r} failed: {result.error}", file=sys.stderr)
        return 1
    assert result.stats is not None
    print(f"populated layer {job.layer!r} version {job.version}: {result.stats.file_count} files")
    return 0


# ------------------------------------------------------------------ clean


def clean(env: Mapping[str, str]) -> int:
    """Remove each ``<layer>`` or ``<layer>/v<n>`` folder of LAYER_CLEAN_PATHS under the mount."""
    root = Path(env.get(jobs.ENV_LAYERS_ROOT) or jobs.LAYERS_RW_MOUNT)
    paths = [p for p in (env.get(jobs.ENV_CLEAN_PATHS) or "").split(",") if p]
    if not paths:
        raise TaskEnvironmentError(f"{jobs.ENV_CLEAN_PATHS}: required")
    bad = [p for p in paths if not _cleanable(p)]
    if bad:
        raise TaskEnvironmentError(f"{jobs.ENV_CLEAN_PATHS}: not a layer or version folder: {', '.join(bad)}")
    for path in paths:
        retire(root, root / path)
    print(f"removed {len(paths)} folder(s): {', '.join(paths)}")
    return 0


def _cleanable(path: str) -> bool:
    name, _, version = path.partition("/")
    return bool(NAME_RE.fullmatch(name)) and (not version or (version[:1] == "v" and version[1:].isdigit()))


def retire(root: Path, folder: Path) -> None:
    """Move ``folder`` out of sight in one rename, then delete it; leftovers of an interrupted clean
    are swept too (best effort: another clean may be deleting them at the same time)."""
    trash = root / TRASH
    trash.mkdir(exist_ok=True)
    if folder.exists():
        retired = trash / f"{folder.name}-{secrets.token_hex(6)}"
        os.rename(folder, retired)
        remove_tree(retired)
    for leftover in trash.iterdir():
        with contextlib.suppress(OSError):
            remove_tree(leftover)


# ------------------------------------------------------------------ persistent-layer targets


class LayerTargetError(RuntimeError):
    """The layer refused the target's version (``retryable`` when another build of it is running)."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class TargetPublished:
    layer: str
    version: int
    stats: TreeStats


Invoke = Callable[[dict[str, Any]], dict[str, Any]]


def populate_from_run(
    input_dir: Path,
    *,
    layer_name: str,
    run_id: str,
    processor_id: str,
    layers_root: Path | None = None,
    invoke: Invoke | None = None,
    env: Mapping[str, str] | None = None,
) -> TargetPublished:
    """Publish ``input_dir`` as the next version of layer ``layer_name`` (a data layer, created if new).

    Reserves the version (the layer is BUILDING, so no other build writes it), copies into its own
    folder (symlinks and hard links from fan-in are followed), and publishes it: runs that mounted
    an older version keep theirs. A retried target resumes its own reservation (kept in the layer's
    folder); a failure marks the layer FAILED with the reason. Raises LayerTargetError.
    """
    env = os.environ if env is None else env
    root = Path(layers_root or env.get(jobs.ENV_LAYERS_ROOT) or jobs.LAYERS_RW_MOUNT)
    invoke = invoke or lambda_invoker(env.get(jobs.ENV_FUNCTION, ""))
    reservation = root / layer_name / RESERVATIONS / f"{run_id}--{processor_id}.json"
    begun = invoke(_begin_request(layer_name, run_id, processor_id, reservation))
    if "error" in begun:
        raise LayerTargetError(begun["error"], retryable=bool(begun.get("retryable")))
    version, token = int(begun["version"]), str(begun["token"])
    reservation.parent.mkdir(parents=True, exist_ok=True)
    reservation.write_text(json.dumps({"version": version, "token": token}))
    try:
        with _terminate_as_exception():
            target = root / begun["path"]
            remove_tree(target)
            shutil.copytree(input_dir, target)
            stats = tree_stats(target)
    except BaseException as exc:
        error = f"copying the target's input into layer {layer_name!r} failed: {type(exc).__name__}: {exc}"
        invoke(
            {"action": "fail-target", "layer": layer_name, "version": version, "token": token, "error": error}
        )
        reservation.unlink(missing_ok=True)
        raise
    published = invoke(
        {
            "action": "publish-target",
            "layer": layer_name,
            "version": version,
            "token": token,
            "stats": jobs.stats_payload(stats),
        }
    )
    reservation.unlink(missing_ok=True)
    if "error" in published:
        raise LayerTargetError(published["error"], retryable=bool(published.get("retryable")))
    return TargetPublished(layer_name, version, stats)


def _begin_request(layer: str, run_id: str, processor_id: str, reservation: Path) -> dict[str, Any]:
    request: dict[str, Any] = {
        "action": "begin-target",
        "layer": layer,
        "runId": run_id,
        "processorId": processor_id,
    }
    with contextlib.suppress(OSError, ValueError, KeyError):
        earlier = json.loads(reservation.read_text())
        request |= {"resumeVersion": int(earlier["version"]), "resumeToken": str(earlier["token"])}
    return request


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """ECS stops a task with SIGTERM: raise instead, so a canceled run still marks the layer FAILED."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: keep the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def lambda_invoker(function_name: str) -> Invoke:
    """Synchronous calls to the layer-jobs function; a function error becomes LayerTargetError."""
    if not function_name:
        raise LayerTargetError(f"{jobs.ENV_FUNCTION} is not set: the target cannot reach the layer registry")

    def invoke(request: dict[str, Any]) -> dict[str, Any]:
        response = aws_client("lambda").invoke(
            FunctionName=function_name, InvocationType="RequestResponse", Payload=json.dumps(request).encode()
        )
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            raise LayerTargetError(f"the layer-jobs function failed: {payload.get('errorMessage', payload)}")
        return payload

    return invoke


# ------------------------------------------------------------------ S3 and the entry point


def _read_spec(job: JobEnvironment, s3: Any) -> dict[str, Any]:
    s3 = s3 or aws_client("s3")
    return json.loads(s3.get_object(Bucket=job.bucket, Key=job.key(jobs.JOB_SPEC))["Body"].read())


def _put_manifest(job: JobEnvironment, result: BuildResult, s3: Any) -> None:
    (s3 or aws_client("s3")).put_object(
        Bucket=job.bucket,
        Key=job.key(jobs.JOB_MANIFEST),
        Body=result.to_json().encode(),
        ContentType="application/json",
        ServerSideEncryption="AES256",
    )


STEPS: dict[str, Callable[[Mapping[str, str]], int]] = {
    "populate": populate,
    "stage": stage,
    "report": report,
    "clean": clean,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pennflow.layers.populate_task", description=__doc__)
    parser.add_argument("step", choices=sorted(STEPS))
    args = parser.parse_args(argv)
    try:
        return STEPS[args.step](os.environ)
    except TaskEnvironmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # keep the one-line reason last: the finisher quotes the log's tail
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
