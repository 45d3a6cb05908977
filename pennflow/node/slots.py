"""Run slots: the node's concurrency limit and what keeps each run inside its own folder on EFS.

Why slots (DESIGN §4). ECS cannot override a task's volumes, so the task definition itself names
the EFS access point a processor mounts at ``/mnt/run``, and an access point's root directory is
fixed when it is created. A task definition per run would cost a ``RegisterTaskDefinition`` per
processor per run, and that API is throttled account-wide (a burst of 20, then 1 per second).

The design:

- The node has N slots (the ``runSlots`` setting), each an access point created by the stack with
  root ``/runs/slots/<slot_id>`` and tag ``pennflow:slot=<slot_id>``. Task definitions are
  content-addressed per slot (:mod:`pennflow.node.taskdefs`), so a slot registers a processor's task
  definition once for the life of the node and every later run in that slot reuses it.
- A run leases one free slot with a conditional write (a slot is never leased twice), and its
  tasks see only ``/runs/slots/<slot_id>`` as ``/mnt/run``: the run's own folder. Nothing else is
  there: leasing moves any leftovers to a trash folder first (a cheap rename) and releasing moves
  the run's files out to ``/runs/<run_id>/`` (outside every slot) where they are kept for the
  retention setting. The alternative, an access point recreated per lease, would change the
  access point id that the task definitions name, so every run would register again.
- A slot is released only when none of its run's tasks is still alive (see
  :func:`pennflow.node.lifecycle.release_when_idle`): a task stopping after a failure or a cancel keeps
  writing for up to its stop timeout, and must not write into the next run's folder.
- Runs beyond the free slots wait in a FIFO queue (items in the same table); the run stays
  NOT_STARTED and the oldest queued run takes the next slot that frees.

Table (partition key ``slot_id``): slot items ``slot-NN`` and queue items ``queued#<run_id>``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from pennflow.aws import LazyClient, error_code
from pennflow.aws import client as aws_client
from pennflow.workflow.contract import RUN_MOUNT
from pennflow.workflow.runs import timestamp, utcnow

log = logging.getLogger(__name__)

KEY = "slot_id"
SLOT_TAG = "pennflow:slot"
QUEUE_PREFIX = "queued#"
RUNS_ROOT = PurePosixPath("/runs")  # the runs access point's root, mounted by the Lambdas
TRASH_DIR = ".trash"
RETAINED_MARKER = ".retained-at"  # in /runs/<run_id>/: when the run's files left their slot
BATCH_GET_LIMIT = 100


def slot_id(index: int) -> str:
    return f"slot-{index:02d}"


class SlotsUnavailable(RuntimeError):
    """The node has no usable run slot (no access point tagged for it)."""


@dataclass(frozen=True)
class Slot:
    slot_id: str
    access_point_id: str
    root_path: str  # the access point's root directory on EFS, e.g. /runs/slots/slot-03
    run_id: str | None = None
    leased_at: str | None = None
    task_definitions: dict[str, str] = field(default_factory=dict)  # family -> ARN, registered for this slot
    run_task_definitions: dict[str, str] = field(default_factory=dict)  # processor id -> ARN, this lease

    @property
    def is_free(self) -> bool:
        return self.run_id is None


@dataclass(frozen=True, order=True)
class QueuedRun:
    queued_at: str
    run_id: str


class SlotPool:
    """Slots and the queue in one DynamoDB table; every state change is a conditional write."""

    def __init__(
        self,
        table_name: str,
        *,
        file_system_id: str,
        slot_count: int,
        client: Any = None,
        efs_client: Any = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        if slot_count < 1:
            raise ValueError("slot_count must be at least 1")
        self.table_name = table_name
        self.file_system_id = file_system_id
        self.slot_ids = [slot_id(i) for i in range(slot_count)]
        self._client = client
        self._efs = efs_client
        self._clock = clock
        self._synced = False  # access points are looked up once per container, not on every read

    client = LazyClient("dynamodb")

    @property
    def efs(self) -> Any:
        if self._efs is None:
            self._efs = aws_client("efs")
        return self._efs

    # ---------------------------------------------------------------- slots

    def slots(self) -> list[Slot]:
        """Every slot of the node, in id order (slot items are created from the tagged access points)."""
        slots = self._read_slots()
        if len(slots) < len(self.slot_ids) and (not self._synced or not slots):
            self._sync_from_access_points({s.slot_id for s in slots})
            self._synced = True
            slots = self._read_slots()
        if not slots:
            raise SlotsUnavailable(
                f"no run slots: expected EFS access points tagged {SLOT_TAG}=slot-00.. on {self.file_system_id}"
            )
        return slots

    def held_by(self, run_id: str) -> Slot | None:
        return next((s for s in self.slots() if s.run_id == run_id), None)

    def get(self, slot_id: str) -> Slot | None:
        item = self.client.get_item(TableName=self.table_name, Key=_key(slot_id), ConsistentRead=True).get(
            "Item"
        )
        return _slot(item) if item else None

    def lease(
        self,
        run_id: str,
        preference: Callable[[Slot], int] | None = None,
        snapshot: list[Slot] | None = None,
    ) -> Slot | None:
        """The slot this run holds, else a free one taken with a conditional write; None when all are busy.

        Free slots are tried in order of ``preference`` (highest first: e.g. how many of the run's
        task definitions a slot already has), then by id. ``snapshot``: a recent ``slots()`` to
        choose from (the conditional write still decides).
        """
        slots = snapshot if snapshot is not None else self.slots()
        held = next((s for s in slots if s.run_id == run_id), None)
        if held is not None:
            return held
        free = [s for s in slots if s.is_free]
        free.sort(key=lambda s: (-(preference(s) if preference else 0), s.slot_id))
        for slot in free:
            leased = self._try_lease(slot, run_id)
            if leased is not None:
                return leased
        return None

    def release(self, slot_id: str, run_id: str) -> bool:
        """Free the slot if this run holds it (False otherwise: released before, or someone else's)."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(slot_id),
                UpdateExpression="REMOVE run_id, leased_at, run_task_definitions",
                ConditionExpression="run_id = :run",
                ExpressionAttributeValues={":run": {"S": run_id}},
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def remember_task_definition(self, slot_id: str, family: str, arn: str) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key=_key(slot_id),
            UpdateExpression="SET task_definitions.#family = :arn",
            ExpressionAttributeNames={"#family": family},
            ExpressionAttributeValues={":arn": {"S": arn}},
        )

    def set_run_task_definitions(self, slot_id: str, run_id: str, arns: dict[str, str]) -> None:
        """Which task definition each processor of the leased run uses (cancel and release look there)."""
        self.client.update_item(
            TableName=self.table_name,
            Key=_key(slot_id),
            UpdateExpression="SET run_task_definitions = :arns",
            ConditionExpression="run_id = :run",
            ExpressionAttributeValues={
                ":arns": {"M": {pid: {"S": arn} for pid, arn in arns.items()}},
                ":run": {"S": run_id},
            },
        )

    # ---------------------------------------------------------------- queue

    def enqueue(self, run_id: str, queued_at: datetime | None = None) -> bool:
        """Queue a run (False if it is queued already: the first queue time stands)."""
        moment = timestamp(queued_at or self._clock())
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    KEY: {"S": QUEUE_PREFIX + run_id},
                    "kind": {"S": "queued"},
                    "run_id": {"S": run_id},
                    "queued_at": {"S": moment},
                },
                ConditionExpression="attribute_not_exists(slot_id)",
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def dequeue(self, run_id: str) -> bool:
        """Take a run off the queue; True only for the one caller that removed it."""
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key=_key(QUEUE_PREFIX + run_id),
                ConditionExpression="attribute_exists(slot_id)",
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def queued(self) -> list[QueuedRun]:
        """Queued runs, oldest first."""
        runs = [
            QueuedRun(item["queued_at"]["S"], item["run_id"]["S"])
            for item in self._scan("kind = :kind", {":kind": {"S": "queued"}})
        ]
        return sorted(runs)

    def next_queued(self) -> QueuedRun | None:
        queued = self.queued()
        return queued[0] if queued else None

    def next_to_serve(self, slots: list[Slot]) -> QueuedRun | None:
        """The queued run to start next: one handed on half-prepared (it holds one of ``slots``)
        first, free slot or not (pennflow.node.resume); else the oldest, while a slot is free."""
        queued = self.queued()
        holders = {slot.run_id for slot in slots if slot.run_id}
        resuming = next((entry for entry in queued if entry.run_id in holders), None)
        if resuming is not None:
            return resuming
        if not queued or all(not slot.is_free for slot in slots):
            return None
        return queued[0]

    # ---------------------------------------------------------------- internals

    def _try_lease(self, slot: Slot, run_id: str) -> Slot | None:
        leased_at = self._clock().astimezone(UTC).isoformat()
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(slot.slot_id),
                UpdateExpression="SET run_id = :run, leased_at = :at REMOVE run_task_definitions",
                ConditionExpression="attribute_exists(slot_id) AND attribute_not_exists(run_id)",
                ExpressionAttributeValues={":run": {"S": run_id}, ":at": {"S": leased_at}},
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None  # another run took it between our read and this write
            raise
        return _slot(response["Attributes"])

    def _read_slots(self) -> list[Slot]:
        keys = [_key(sid) for sid in self.slot_ids]
        items: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            request = {
                self.table_name: {"Keys": keys[start : start + BATCH_GET_LIMIT], "ConsistentRead": True}
            }
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                items.extend(response.get("Responses", {}).get(self.table_name, []))
                request = response.get("UnprocessedKeys") or None
        return sorted((_slot(item) for item in items), key=lambda s: s.slot_id)

    def _sync_from_access_points(self, known: set[str]) -> None:
        wanted = set(self.slot_ids) - known
        for access_point in self._access_points():
            tags = {tag["Key"]: tag["Value"] for tag in access_point.get("Tags", [])}
            sid = tags.get(SLOT_TAG)
            if sid not in wanted:
                continue
            item = {
                KEY: {"S": sid},
                "kind": {"S": "slot"},
                "access_point_id": {"S": access_point["AccessPointId"]},
                "root_path": {"S": access_point["RootDirectory"]["Path"]},
                "task_definitions": {"M": {}},
            }
            try:
                self.client.put_item(
                    TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(slot_id)"
                )
            except Exception as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
            wanted.discard(sid)
        if wanted:
            log.warning("run slots without an access point: %s", ", ".join(sorted(wanted)))

    def _access_points(self) -> Iterator[dict[str, Any]]:
        paginator = self.efs.get_paginator("describe_access_points")
        for page in paginator.paginate(FileSystemId=self.file_system_id):
            yield from page.get("AccessPoints", [])

    def _scan(self, expression: str, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self.table_name,
            FilterExpression=expression,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
        )
        for page in pages:
            yield from page.get("Items", [])


def _key(value: str) -> dict[str, Any]:
    return {KEY: {"S": value}}


def _slot(item: dict[str, Any]) -> Slot:
    def strings(name: str) -> dict[str, str]:
        return {k: v["S"] for k, v in item.get(name, {}).get("M", {}).items()}

    return Slot(
        slot_id=item[KEY]["S"],
        access_point_id=item["access_point_id"]["S"],
        root_path=item["root_path"]["S"],
        run_id=item.get("run_id", {}).get("S"),
        leased_at=item.get("leased_at", {}).get("S"),
        task_definitions=strings("task_definitions"),
        run_task_definitions=strings("run_task_definitions"),
    )


# ------------------------------------------------------------------ the files of a slot


class SlotFolders:
    """The slots' folders as the Lambdas see them: the runs access point (``/runs``) at ``runs_mount``."""

    def __init__(self, runs_mount: Path | str, clock: Callable[[], datetime] = utcnow):
        self.runs_mount = Path(runs_mount)
        self._clock = clock

    def slot_dir(self, slot: Slot) -> Path:
        root = PurePosixPath(slot.root_path)
        if not root.is_relative_to(RUNS_ROOT) or root == RUNS_ROOT:
            raise ValueError(
                f"slot {slot.slot_id}: access point root {root} is not a folder under {RUNS_ROOT}"
            )
        return self.runs_mount / root.relative_to(RUNS_ROOT)

    def task_path(self, slot: Slot, path: str) -> Path:
        """A path as the slot's tasks see it (under ``/mnt/run``) -> the same file under the runs mount.

        For Lambdas that work in a running run's folder (batches, downloads); anything outside
        ``/mnt/run`` is refused, so a payload can never reach another run's files.
        """
        task_path = PurePosixPath(path)
        if not task_path.is_absolute() or ".." in task_path.parts or not task_path.is_relative_to(RUN_MOUNT):
            raise ValueError(f"{path!r} must be a folder under {RUN_MOUNT}")
        return self.slot_dir(slot) / task_path.relative_to(RUN_MOUNT)

    def run_dir(self, run_id: str) -> Path:
        """Where a finished run's files are kept (``/runs/<run_id>/``)."""
        return self.runs_mount / run_id

    def wipe(self, slot: Slot) -> int:
        """Empty the slot folder for a new run (leftovers go to the trash); returns how many entries moved."""
        folder = self.slot_dir(slot)
        folder.mkdir(parents=True, exist_ok=True)
        leftovers = list(folder.iterdir())
        if leftovers:
            trash = self._trash_dir(f"{slot.slot_id}-leftovers")
            for entry in leftovers:
                os.replace(entry, trash / entry.name)
        return len(leftovers)

    def retain(self, slot: Slot, run_id: str) -> Path:
        """Move the run's files out of its slot to ``/runs/<run_id>/`` (renames, no copying)."""
        folder = self.slot_dir(slot)
        dest = self.run_dir(run_id)
        dest.mkdir(parents=True, exist_ok=True)
        if folder.is_dir():
            for entry in list(folder.iterdir()):
                target = dest / entry.name
                if target.exists():  # a retried release moved this name already: keep the first copy
                    os.replace(entry, self._trash_dir(f"{run_id}-duplicate") / entry.name)
                else:
                    os.replace(entry, target)
        (dest / RETAINED_MARKER).write_text(self._clock().astimezone(UTC).isoformat())
        return dest

    def purge_expired(self, retention_days: int, *, time_budget_seconds: float = 30.0) -> list[str]:
        """Delete retained runs older than the retention, and the trash; stops when the budget is spent."""
        deadline = time.monotonic() + time_budget_seconds
        cutoff = self._clock() - timedelta(days=retention_days)
        purged: list[str] = []
        trash = self.runs_mount / TRASH_DIR
        candidates = sorted(trash.iterdir()) if trash.is_dir() else []
        candidates += [d for d in sorted(self.runs_mount.iterdir()) if _retained_before(d, cutoff)]
        for entry in candidates:
            if time.monotonic() > deadline:
                break
            shutil.rmtree(entry, ignore_errors=True)
            purged.append(entry.name)
        return purged

    def _trash_dir(self, label: str) -> Path:
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")
        trash = self.runs_mount / TRASH_DIR / f"{label}-{stamp}"
        trash.mkdir(parents=True, exist_ok=True)
        return trash


def _retained_before(folder: Path, cutoff: datetime) -> bool:
    marker = folder / RETAINED_MARKER
    if not marker.is_file():
        return False
    try:
        return datetime.fromisoformat(marker.read_text().strip()) < cutoff
    except ValueError:
        return False
