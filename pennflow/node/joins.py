"""The join function: releases a node waiting on another path once its dependencies are done.

The compiled state machine (:mod:`pennflow.workflow.asl_joins`) calls it two ways:

* ``{"action": "wait", "runId", "node", "deps", "token"}`` from ``<node> waits``, a
  ``waitForTaskToken`` task: the token and the dependencies are stored, then the dependencies'
  done-marks are read; if all are there the waiter is released at once;
* ``{"action": "done", "runId", "node", "waiters"}`` from ``<node> done``: the node's done-mark is
  written, then each waiter that has registered is released if all its dependencies are done. A
  wait may carry the previous node's signal too (``"done"``, ``"waiters"``): it is handled first.

Both write before they read (with strongly consistent reads), so whichever of a waiter and its last
dependency comes second sees the other: nobody is missed. Both may see it and both send: the
second ``SendTaskSuccess`` finds the task ended (``TaskTimedOut``/``InvalidToken``), which is
harmless, as is a late signal for a run that failed, was stopped or timed out. A repeated ``done``
finds its mark (a conditional write) and only retries the releases; a repeated ``wait`` with the
same token does not store it again. A failed dependency
never signals: its Parallel fails, which stops the waiting branches, and the run fails as without
joins.

Items, keyed (``runId``, ``item``): ``done#<node>`` and ``wait#<node>`` (``token``, ``deps``), each with ``expiresAt`` for the table's TTL.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pennflow.workflow.limits import MAX_NAME

KEEP_SECONDS = 30 * 86_400  # join items outlive any run that could still read them
ENDED_TOKEN_ERRORS = {"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"}
BATCH_GET_LIMIT = 100


class JoinError(ValueError):
    """A malformed join event: fails the state visibly (only Lambda service errors are retried)."""


class JoinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    action: Literal["wait", "done"]
    run_id: str = Field(alias="runId", min_length=1, max_length=128)
    node: str = Field(min_length=1, max_length=MAX_NAME)
    deps: tuple[str, ...] = ()
    token: str | None = Field(None, min_length=1, max_length=1024)
    waiters: tuple[str, ...] = ()
    done: str | None = Field(None, min_length=1, max_length=MAX_NAME)  # a wait's signal for the node before

    @model_validator(mode="after")
    def _fits_action(self) -> JoinRequest:
        if self.action == "wait" and (not self.token or not self.deps):
            raise ValueError("a wait names its dependencies ('deps') and its task 'token'")
        if self.action == "done" and (self.token or self.deps or self.done):
            raise ValueError("a done signal names its 'waiters', not 'deps', 'done' or a 'token'")
        if bool(self.done) != bool(self.waiters) and self.action == "wait":
            raise ValueError(
                "a wait that signals names both the node it signals for ('done') and its 'waiters'"
            )
        return self


@dataclass(frozen=True)
class JoinAnswer:
    released: tuple[str, ...]  # the waiters this call released
    marked: bool = False  # a done signal that wrote its mark (False: a repeated signal)

    def as_dict(self) -> dict[str, Any]:
        return {"released": list(self.released), "marked": self.marked}


class JoinStore:
    """The join table (DynamoDB) and the Step Functions client that releases tokens."""

    def __init__(self, table_name: str, dynamodb: Any = None, sfn: Any = None, *, clock=time.time):
        from pennflow.aws import client

        self.table = table_name
        self.dynamodb = dynamodb or client("dynamodb")
        self.sfn = sfn or client("stepfunctions")
        self.clock = clock

    def _key(self, run_id: str, item: str) -> dict[str, Any]:
        return {"runId": {"S": run_id}, "item": {"S": item}}

    def _expires(self) -> dict[str, str]:
        return {"N": str(int(self.clock()) + KEEP_SECONDS)}

    def mark_done(self, run_id: str, node: str) -> bool:
        """Write the node's done-mark; False when it was already there (a repeated signal)."""
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item={**self._key(run_id, f"done#{node}"), "expiresAt": self._expires()},
                ConditionExpression="attribute_not_exists(#i)",
                ExpressionAttributeNames={"#i": "item"},
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def register(self, run_id: str, node: str, deps: Sequence[str], token: str) -> None:
        """Store the waiter's token (a retried wait's new token replaces the earlier attempt's)."""
        item = {
            **self._key(run_id, f"wait#{node}"),
            "token": {"S": token},
            "deps": {"L": [{"S": dep} for dep in deps]},
            "expiresAt": self._expires(),
        }
        # a repeated call finds this very token stored already
        with contextlib.suppress(self.dynamodb.exceptions.ConditionalCheckFailedException):
            self.dynamodb.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#t) OR #t <> :t",
                ExpressionAttributeNames={"#t": "token"},
                ExpressionAttributeValues={":t": {"S": token}},
            )

    def waiter(self, run_id: str, node: str) -> tuple[str, tuple[str, ...]] | None:
        """(token, deps) of a registered waiter, or None if it has not registered yet."""
        found = self.dynamodb.get_item(
            TableName=self.table, Key=self._key(run_id, f"wait#{node}"), ConsistentRead=True
        ).get("Item")
        if not found:
            return None
        return found["token"]["S"], tuple(dep["S"] for dep in found["deps"]["L"])

    def all_done(self, run_id: str, nodes: Iterable[str]) -> bool:
        wanted = sorted(set(nodes))
        found: set[str] = set()
        for start in range(0, len(wanted), BATCH_GET_LIMIT):
            keys = [self._key(run_id, f"done#{node}") for node in wanted[start : start + BATCH_GET_LIMIT]]
            request = {self.table: {"Keys": keys, "ConsistentRead": True, "ProjectionExpression": "#i"}}
            while request:
                answer = self.dynamodb.batch_get_item(
                    RequestItems={
                        name: {**spec, "ExpressionAttributeNames": {"#i": "item"}}
                        for name, spec in request.items()
                    }
                )
                found.update(item["item"]["S"] for item in answer["Responses"].get(self.table, []))
                request = {
                    name: {k: v for k, v in spec.items() if k != "ExpressionAttributeNames"}
                    for name, spec in answer.get("UnprocessedKeys", {}).items()
                }
        return all(f"done#{node}" in found for node in wanted)

    def send_success(self, token: str) -> bool:
        """Release the waiting task; False when its task has ended already (harmless)."""
        try:
            self.sfn.send_task_success(taskToken=token, output=json.dumps({}))
        except Exception as exc:  # botocore's ClientError, without importing botocore here
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ENDED_TOKEN_ERRORS:
                return False
            raise
        return True


def handle(request: JoinRequest, store: JoinStore) -> JoinAnswer:
    if request.action == "done":
        return _signal(store, request.run_id, request.node, request.waiters)
    assert request.token is not None  # checked by the model
    answer = JoinAnswer(released=())
    if request.done:
        answer = _signal(store, request.run_id, request.done, request.waiters)
    store.register(request.run_id, request.node, request.deps, request.token)
    if _release_if_ready(store, request.run_id, request.node, request.token, request.deps):
        answer = JoinAnswer(released=(*answer.released, request.node), marked=answer.marked)
    return answer


def _signal(store: JoinStore, run_id: str, node: str, waiters: Sequence[str]) -> JoinAnswer:
    marked = store.mark_done(run_id, node)
    # A repeated signal carries on too: the first may have stopped between its mark and a release.
    released = []
    for waiter in waiters:
        found = store.waiter(run_id, waiter)
        if found and _release_if_ready(store, run_id, waiter, *found):
            released.append(waiter)
    return JoinAnswer(released=tuple(released), marked=marked)


def _release_if_ready(store: JoinStore, run_id: str, node: str, token: str, deps: Sequence[str]) -> bool:
    # No "released" flag to claim first: a call that stopped between claiming and sending would
    # leave the waiter hanging. Sending twice is harmless instead (the second finds the task ended).
    if not store.all_done(run_id, deps):
        return False
    return store.send_success(token)
