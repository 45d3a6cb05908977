"""A local run's Pennsieve variables, and a SESSION_TOKEN for each processor start.

The token is the Cognito access token of the user's own Pennsieve credentials (the client's token
manager logs in again before it expires, so each start gets one with time left). The API key and
secret stay in this process; the token goes only into the processor's environment (for a container,
by name, so it is never on a command line or in a log).

A run logs in only when it reaches Pennsieve anyway (``--dataset``, ``--publish`` to a Pennsieve
target) or a processor asks with ``pennsieveToken: true``: any other local run gives its processors
Pennsieve's variables without a token, and never loads the Pennsieve client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pennflow.workflow.definition import Processor, Workflow
from pennflow.workflow.pennsieve_env import PennsieveNodeEnvironment, hosts_from_env, pennsieve_environment

if TYPE_CHECKING:
    from pennflow.pennsieve import PennsieveClient

NOT_CONNECTED = (
    "no SESSION_TOKEN: this run reaches no Pennsieve dataset (start it with --dataset, or give the "
    "processor pennsieveToken: true)"
)


def wants_pennsieve(workflow: Workflow, run_uses_pennsieve: bool) -> bool:
    """Whether the run logs in to Pennsieve for its processors' tokens: when it reaches Pennsieve
    anyway (a dataset, a Pennsieve target it publishes to), or a processor asks with
    ``pennsieveToken: true``. Otherwise the Pennsieve client is never imported (nor requests)."""
    return run_uses_pennsieve or any(p.pennsieve_token is True for p in workflow.processors)


class LocalPennsieveSession:
    def __init__(self, client: Callable[[], PennsieveClient], *, connect: bool = True):
        self._client_factory = client
        self._connect_allowed = connect
        self._lock = threading.Lock()
        self._client: PennsieveClient | None = None
        self._unavailable: str | None = None if connect else NOT_CONNECTED

    def environment(
        self, workflow: Workflow, run_id: str, processor: Processor
    ) -> tuple[dict[str, str], str | None]:
        """(the variables, a line for the processor's log when no token could be given)."""
        client = self._connect()
        hosts = (client.hosts.api, client.hosts.api2) if client is not None else hosts_from_env()
        token, organization, note = None, "", None
        if client is not None:
            from pennflow.pennsieve.errors import PennsieveError

            try:
                grant = client.tokens.grant()
                organization = grant.organization_id
                if processor.gets_token:
                    token = grant.access_token.get_secret_value()
            except PennsieveError as exc:
                note = f"no SESSION_TOKEN: the Pennsieve login failed ({exc})"
        elif processor.gets_token:
            note = self._unavailable
        node = PennsieveNodeEnvironment.local(hosts[0], hosts[1], organization)
        return pennsieve_environment(workflow, run_id, node, token), note

    def _connect(self) -> PennsieveClient | None:
        with self._lock:
            if self._client is None and self._unavailable is None:
                from pennflow.pennsieve.errors import PennsieveError

                try:
                    self._client = self._client_factory()
                except PennsieveError as exc:
                    self._unavailable = f"no SESSION_TOKEN: no Pennsieve credentials ({type(exc).__name__})"
            return self._client
