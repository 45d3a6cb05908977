"""The built-in steps of a local run: data sources and data targets.

A data source receives the ``--input`` folder, or downloads a Pennsieve dataset (or some of its
packages) into its OUTPUT_DIR. A retried download keeps what the failed attempt left, so partial
files resume. Data targets always copy their INPUT_DIR into their OUTPUT_DIR; with ``publish`` they
also publish it (``pennflow.data.targets``): s3 to ``$PENNFLOW_RESULTS_BUCKET``, Pennsieve Dataset
through the upload service. A persistent-layer target populates its layer's next version instead.

The Pennsieve client, the downloads and the targets are imported on first use, so a run that
neither downloads nor publishes never loads them (nor requests, nor boto3).
"""

from __future__ import annotations

import shutil
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from rich import filesize

from pennflow.engine.outcomes import NO_OUTPUT, Attempt, attempt_header
from pennflow.engine.run_checks import is_layer_target
from pennflow.engine.run_context import RunContext
from pennflow.layers.models import LayerConflict, LayerError
from pennflow.workflow.contract import FanInClash, list_input_files
from pennflow.workflow.definition import Processor

if TYPE_CHECKING:
    from pennflow.pennsieve import PennsieveClient


class DataSteps:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self._pennsieve_client: PennsieveClient | None = None
        self._pennsieve_lock = threading.Lock()

    def receive_input(self, processor: Processor, attempt: int) -> Attempt:
        """The data source: the --input folder (sub-folders kept) or the Pennsieve dataset becomes
        its OUTPUT_DIR."""
        inputs = self.ctx.plan.inputs
        if inputs.dataset_id is not None:
            return self._download_dataset(processor, attempt, inputs.dataset_id)
        assert inputs.input_dir is not None
        return self._copy_folder(processor, attempt, inputs.input_dir, reason=None)

    def publish(self, processor: Processor, attempt: int) -> Attempt:
        """A data target, locally: its INPUT_DIR copied into its OUTPUT_DIR, the run's results."""
        try:
            if attempt == 1:
                self.ctx.prepare_union(processor)
        except FanInClash as exc:
            self.ctx.logs.append(processor.id, f"{exc}\n")
            return Attempt(False, str(exc), retryable=False)
        source = self.ctx.input_dir(processor)
        if is_layer_target(processor):
            return self._populate_layer(processor, attempt, source)
        copied = self._copy_folder(
            processor, attempt, source, reason=f"results in {self.ctx.output_dir(processor.id)}"
        )
        if not copied.ok or not self.ctx.plan.inputs.publish:
            return copied
        return self._publish_results(processor, copied.reason)

    def close(self) -> None:
        if self._pennsieve_client is not None:
            self._pennsieve_client.close()

    def _download_dataset(self, processor: Processor, attempt: int, dataset_id: str) -> Attempt:
        """Download the dataset (or the chosen packages), folders kept. OUTPUT_DIR is not emptied
        between attempts: a retry skips the files already verified and resumes the partial ones."""
        from pennflow.data.datasource import download_dataset
        from pennflow.pennsieve import PennsieveError

        output = self.ctx.output_dir(processor.id)
        output.mkdir(parents=True, exist_ok=True)
        package_ids = self.ctx.plan.inputs.package_ids
        chosen = f" (packages {', '.join(package_ids)})" if package_ids else ""
        self._log(
            processor,
            attempt_header(processor, attempt, f"download dataset {dataset_id}{chosen} to {output}"),
        )
        try:
            summary, report = download_dataset(
                self.pennsieve(), dataset_id, output, package_ids=list(package_ids) or None
            )
        except PennsieveError as exc:
            message = _message_with_notes(exc)
            self._log(processor, f"download failed: {message}\n")
            return Attempt(False, message, retryable=_pennsieve_retryable(exc))
        except OSError as exc:
            self._log(processor, f"download failed: {exc}\n")
            return Attempt(False, f"download failed: {exc}")
        self._log(
            processor,
            f"{summary.file_count} files, {summary.total_bytes} bytes: {report.downloaded} downloaded, "
            f"{report.skipped} already here (verified)\n",
        )
        if not summary.file_count:
            return Attempt(True, NO_OUTPUT)
        size = filesize.decimal(summary.total_bytes)
        return Attempt(True, f"dataset {dataset_id}: {summary.file_count} files, {size}")

    def pennsieve(self) -> PennsieveClient:
        """One client for the run (credentials and hosts from the environment), shared by threads."""
        with self._pennsieve_lock:
            if self._pennsieve_client is None:
                from pennflow.pennsieve import PennsieveClient

                self._pennsieve_client = PennsieveClient()
            return self._pennsieve_client

    def _publish_results(self, processor: Processor, copied: str | None) -> Attempt:
        """--publish: the copied results to the target (s3 bucket, Pennsieve dataset)."""
        from pennflow.data.targets import TargetError, publish
        from pennflow.pennsieve import PennsieveError

        assert processor.target_type is not None
        output = self.ctx.output_dir(processor.id)
        self._log(processor, f"publish {output} to its {processor.target_type.value} target\n")
        try:
            report = publish(
                processor.target_type,
                output,
                run_id=self.ctx.run_id,
                params=self.ctx.plan.params[processor.id],
                run_dataset_id=self.ctx.plan.inputs.dataset_id,
                run_package_ids=self.ctx.plan.inputs.package_ids,
                results_bucket=self.ctx.plan.inputs.results_bucket,
                pennsieve=self.pennsieve,
            )
        except TargetError as exc:  # a setting or a name the next attempt would not change
            self._log(processor, f"publish failed: {exc}\n")
            return Attempt(False, f"publish failed: {exc}", retryable=False)
        except PennsieveError as exc:
            message = _message_with_notes(exc)
            self._log(processor, f"publish failed: {message}\n")
            return Attempt(False, f"publish failed: {message}", retryable=_pennsieve_retryable(exc))
        except Exception as exc:  # S3 and network errors (botocore's own types): may pass on a retry
            self._log(processor, traceback.format_exc())
            return Attempt(False, f"publish failed: {type(exc).__name__}: {exc}")
        count = len(report.files)
        published = f"published {count} file{'' if count == 1 else 's'} to {report.destination}"
        self._log(processor, f"{published}\n")
        return Attempt(True, f"{copied}; {published}" if copied and copied != NO_OUTPUT else published)

    def _populate_layer(self, processor: Processor, attempt: int, source: Path) -> Attempt:
        """A persistent-layer target: its INPUT_DIR becomes the layer's next version, published
        atomically (runs that mounted an older version keep reading it)."""
        service = self.ctx.plan.layers.service
        assert service is not None  # opened by mount_layers for every layer target
        name = self.ctx.plan.params[processor.id]["layerName"]
        self._log(processor, attempt_header(processor, attempt, f"populate layer {name!r} from {source}"))
        try:
            record = service.populate_from(name, source)
        except LayerError as exc:
            self._log(processor, f"{exc}\n")
            # Another build of the layer running now may be over by the next attempt; the rest is final.
            return Attempt(False, str(exc), retryable=isinstance(exc, LayerConflict))
        reason = f"layer {name!r} version {record.version} ({record.file_count} files)"
        self._log(processor, f"populated {reason}\n")
        return Attempt(True, reason)

    def _copy_folder(self, processor: Processor, attempt: int, source: Path, reason: str | None) -> Attempt:
        output = self.ctx.output_dir(processor.id)
        self._log(processor, attempt_header(processor, attempt, f"copy {source} to {output}"))
        try:
            if output.exists():
                shutil.rmtree(output)
            shutil.copytree(source, output)
        except (OSError, shutil.Error) as exc:
            self._log(processor, f"copy failed: {exc}\n")
            return Attempt(False, f"copy failed: {exc}")
        count = len(list_input_files(output))
        self._log(processor, f"copied {count} files\n")
        return Attempt(True, reason if count else NO_OUTPUT)

    def _log(self, processor: Processor, text: str) -> None:
        self.ctx.logs.append(processor.id, text)


def _pennsieve_retryable(exc: Exception) -> bool:
    """A missing dataset, a refused key or no credentials stay so on the next attempt."""
    from pennflow.pennsieve import AuthenticationError, CredentialsNotFound, NotFound, PermissionDenied

    return not isinstance(exc, NotFound | PermissionDenied | AuthenticationError | CredentialsNotFound)


def _message_with_notes(exc: BaseException) -> str:
    """The message and its notes (e.g. how many more files failed)."""
    return "; ".join([str(exc), *getattr(exc, "__notes__", ())])
