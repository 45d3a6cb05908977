"""``POST /runs/{id}/resume``: continue a FAILED or CANCELED run with Step Functions redrive.

The node's runs manager does it (``pennflow.node.redrive``, through the resume function): it owns
the slots and the execution. This side turns its answer into the API's: 202 with the attempt and
the processors not run again, 404 for an unknown run, 409 saying why the run cannot be resumed.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pennflow import aws
from pennflow.api.errors import Conflict, InvalidRequest, NotFound, Unavailable, field_error
from pennflow.stores.base import RunStore
from pennflow.workflow.runs import Status


class RunResumed(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    run_id: str
    status: Status
    attempt: int = Field(description="The run's attempt now running (1 is the first run).")
    reused: list[str] = Field(description="Processors that SUCCEEDED before: not run again.")


class RunResumer(Protocol):
    def resume(self, run_id: str) -> dict[str, Any]:
        """The runs manager's answer: ``{status, attempt, reused}``, ``{refused}`` or ``{notFound}``."""


class ResumeFunction:
    """Invokes the node's resume function synchronously with ``{"runId"}``."""

    def __init__(self, function_name: str | None, client: Any = None):
        self.function_name = function_name
        self._client = client

    def resume(self, run_id: str) -> dict[str, Any]:
        if not self.function_name:
            raise Unavailable("this node has no resume function: redeploy it to resume runs")
        client = self._client or aws.client("lambda")
        response = client.invoke(
            FunctionName=self.function_name,
            InvocationType="RequestResponse",
            Payload=json.dumps({"runId": run_id}).encode(),
        )
        answer = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError") or not isinstance(answer, dict):
            raise Unavailable("the node's resume function failed: try again (its log says why)")
        return answer


def refuse_changes(body: str | None) -> None:
    """A resume is the run as it was defined (a redrive reuses the execution's own input): a body with
    params or a definition would be silently ignored, so it is refused, saying what to do instead."""
    text = (body or "").strip()
    if text in ("", "{}", "null"):
        return
    raise InvalidRequest(
        "a resume continues the run as it was defined and takes no body: to change params or the "
        "definition, start a new run (POST /runs) or a rerun (POST /runs/{id}/rerun)",
        fields=[field_error("body", "must be empty", "body")],
        code="resume_takes_no_body",
    )


def resume_run(run_id: str, *, store: RunStore, resumer: RunResumer, body: str | None = None) -> RunResumed:
    refuse_changes(body)
    if store.get_run(run_id) is None:
        raise NotFound(f"no run {run_id!r}", fields=[field_error("run_id", "no such run", "path")])
    answer = resumer.resume(run_id)
    if "notFound" in answer:
        raise NotFound(f"no run {run_id!r}", fields=[field_error("run_id", "no such run", "path")])
    if "refused" in answer:
        raise Conflict(str(answer["refused"]))
    if "status" not in answer:
        raise Unavailable(f"the node's resume function answered without a status: {answer.get('error', '')}")
    return RunResumed(
        run_id=run_id,
        status=Status(answer["status"]),
        attempt=answer["attempt"],
        reused=answer.get("reused", []),
    )
