"""A slot's run parameters: the run id (INTEGRATION_ID, EXECUTION_RUN_ID) and its SESSION_TOKEN.

Both are written when a run is leased a slot, as SSM parameters (the token a SecureString). Task
definitions name them in ``secrets`` (pennflow.node.taskdefs), so ECS hands them to the container
when the task starts: the token is never in the execution input, a container override, the run
record or a log line, and the state machine carries no per-state bytes for them. A slot runs one
run at a time, so its parameters always belong to the run whose tasks read them.

The token is a Cognito access token of the node's Pennsieve credentials (its secret). A workflow
whose processors all say ``pennsieveToken: false`` mints nothing. Limit: the token lives as long as
Cognito's access tokens (an hour by default); a processor that starts later in a long run reads the
token minted at lease time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pennflow.aws import client as aws_client
from pennflow.node.slots import Slot
from pennflow.node.taskdefs import RUN_ID_PARAMETER, TOKEN_PARAMETER, TaskSettings
from pennflow.workflow.definition import Workflow


class RunParameterWriter(Protocol):
    def write(self, slot: Slot, run_id: str, workflow: Workflow) -> None: ...


class NoRunParameters:
    """A node without slot parameters (tests of the lifecycle alone)."""

    def write(self, slot: Slot, run_id: str, workflow: Workflow) -> None:
        return None


def node_session_token() -> str:
    """A fresh access token of the node's own Pennsieve credentials (from its secret)."""
    from pennflow.pennsieve.node_secret import node_pennsieve

    with node_pennsieve() as client:
        return client.tokens.grant().access_token.get_secret_value()


class SlotRunParameters:
    def __init__(
        self, settings: TaskSettings, mint: Callable[[], str] = node_session_token, ssm_client: Any = None
    ):
        if not settings.slot_parameter_prefix:
            raise ValueError("SlotRunParameters needs TaskSettings.slot_parameter_prefix")
        self.settings = settings
        self._mint = mint
        self._ssm = ssm_client

    @property
    def ssm(self) -> Any:
        if self._ssm is None:
            self._ssm = aws_client("ssm")
        return self._ssm

    def write(self, slot: Slot, run_id: str, workflow: Workflow) -> None:
        self._put(slot, RUN_ID_PARAMETER, run_id, "String")
        if self.settings.session_tokens and any(p.gets_token for p in workflow.processors):
            self._put(slot, TOKEN_PARAMETER, self._mint(), "SecureString")

    def _put(self, slot: Slot, leaf: str, value: str, kind: str) -> None:
        name = self.settings.slot_parameter(slot.slot_id, leaf)
        self.ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)
