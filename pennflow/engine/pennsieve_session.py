"""A local run's Pennsieve variables, and a SESSION_TOKEN for each processor start.

The token is the Cognito access token of the user's own Pennsieve credentials (the client's token
manager logs in again before it expires, so each start gets one with time left). The API key and
secret stay in this process; the token goes only into the processor's environment (for a container,
by name, so it is never on a command line or in a log).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pennflow.pennsieve.errors import PennsieveError
from pennflow.pennsieve.settings import PennsieveHosts
from pennflow.workflow.definition import Processor, Workflow
from pennflow.workflow.pennsieve_env import PennsieveNodeEnvironment, pennsieve_environment

if TYPE_CHECKING:
    from pennflow.pennsieve import PennsieveClient


class LocalPennsieveSession:
    def __init__(self, client: Callable[[], PennsieveClient]):
        self._client_factory = client
        self._lock = threading.Lock()
        self._client: PennsieveClient | None = None
        self._unavailable: str | None = None

    def environment(
        self, workflow: Workflow, run_id: str, processor: Processor
    ) -> tuple[dict[str, str], str | None]:
        """(the variables, a line for the processor's log when no token could be given)."""
        client = self._connect()
        hosts = client.hosts if client is not None else PennsieveHosts.from_env()
        token, organization, note = None, "", None
        if client is not None:
            try:
                grant = client.tokens.grant()
                organization = grant.organization_id
                if processor.gets_token:
                    token = grant.access_token.get_secret_value()
            except PennsieveError as exc:
                note = f"no SESSION_TOKEN: the Pennsieve login failed ({exc})"
        elif processor.gets_token:
            note = f"no SESSION_TOKEN: {self._unavailable}"
        node = PennsieveNodeEnvironment.local(hosts.api, hosts.api2, organization)
        return pennsieve_environment(workflow, run_id, node, token), note

    def _connect(self) -> PennsieveClient | None:
        with self._lock:
            if self._client is None and self._unavailable is None:
                try:
                    self._client = self._client_factory()
                except PennsieveError as exc:
                    self._unavailable = f"no Pennsieve credentials ({type(exc).__name__})"
            return self._client
