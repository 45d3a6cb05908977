"""The built-in processors run in the node's built-in image: data sources and data targets.

``python -m pennflow.node.builtins data-target --target-type "Pennsieve Dataset"`` (the command the
task definition gives, see ``pennflow.node.taskdefs.builtin_command``) publishes INPUT_DIR;
``python -m pennflow.node.builtins data-source`` downloads the run's dataset into OUTPUT_DIR.

The processor contract (DESIGN §3) gives the run through the environment: RUN_ID, DATASET_ID,
INPUT_DIR, OUTPUT_DIR and the target's params. Pennsieve credentials come only from the node's
Secrets Manager secret (``PENNSIEVE_SECRET_ARN``, set in the task definition): API keys in the
environment are ignored, since a container override could put them there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pennflow.pennsieve.node_secret import node_pennsieve
from pennflow.workflow.definition import TargetType

RESULTS_BUCKET_ENV = "RESULTS_BUCKET"


class BuiltinError(ValueError):
    """The built-in's environment is incomplete or invalid (each variable named)."""


class BuiltinEnvironment(BaseModel):
    """The contract's variables a built-in reads (DESIGN §3)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    run_id: str = Field(alias="RUN_ID", min_length=1)
    processor_id: str = Field(alias="PROCESSOR_ID", min_length=1)
    dataset_id: str | None = Field(None, alias="DATASET_ID")
    input_dir: Path | None = Field(None, alias="INPUT_DIR")
    output_dir: Path = Field(alias="OUTPUT_DIR")
    results_bucket: str | None = Field(None, alias=RESULTS_BUCKET_ENV)

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> BuiltinEnvironment:
        env = os.environ if env is None else env
        try:
            return cls.model_validate({name: value for name, value in env.items() if value != ""})
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in e['loc'])}: {'required' if e['type'] == 'missing' else e['msg']}"
                for e in exc.errors()
            ]
            raise BuiltinError("invalid built-in environment: " + "; ".join(problems)) from None


def run_data_target(target_type: str, env: Mapping[str, str] | None = None) -> str:
    """Publish INPUT_DIR to the target; returns a one-line summary."""
    from pennflow.data.targets import publish

    env = os.environ if env is None else env
    settings = BuiltinEnvironment.read(env)
    if settings.input_dir is None:
        raise BuiltinError("invalid built-in environment: INPUT_DIR: required for a data target")
    if target_type == TargetType.PERSISTENT_LAYER.value:
        return _publish_layer(settings, env)
    report = publish(
        target_type,
        settings.input_dir,
        run_id=settings.run_id,
        params=env,
        run_dataset_id=settings.dataset_id,
        results_bucket=settings.results_bucket,
        pennsieve=lambda: node_pennsieve(env),
    )
    return f"{settings.processor_id}: published {len(report.files)} file(s), {report.total_bytes} bytes, to {report.destination}"


def _publish_layer(settings: BuiltinEnvironment, env: Mapping[str, str]) -> str:
    """A new version of the layer named by ``layerName``; readers of older versions keep theirs."""
    from pennflow.layers.populate_task import populate_from_run

    layer_name = env.get("layerName")
    if not layer_name:
        raise BuiltinError("invalid built-in environment: layerName: required for a persistent-layer target")
    published = populate_from_run(
        settings.input_dir,
        layer_name=layer_name,
        run_id=settings.run_id,
        processor_id=settings.processor_id,
        env=env,
    )
    return f"{settings.processor_id}: published layer {layer_name!r} {published}"


def run_data_source(env: Mapping[str, str] | None = None) -> str:
    """Download the run's dataset (DATASET_ID) into OUTPUT_DIR; returns a one-line summary."""
    from pennflow.data.datasource import download_dataset

    env = os.environ if env is None else env
    settings = BuiltinEnvironment.read(env)
    if not settings.dataset_id:
        raise BuiltinError("invalid built-in environment: DATASET_ID: required for a data source")
    with node_pennsieve(env) as client:
        summary, report = download_dataset(client, settings.dataset_id, settings.output_dir)
    return (
        f"{settings.processor_id}: {summary.file_count} file(s), {summary.total_bytes} bytes from "
        f"{settings.dataset_id} ({report.downloaded} downloaded, {report.skipped} already there)"
    )
