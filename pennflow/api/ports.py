"""The ports the API logic needs besides the run store and the workflow registry.

Both hand a run id to another Lambda without waiting for it: the API answers within API Gateway's
29 seconds whatever preparing or cancelling a run costs.
"""

from __future__ import annotations

import json
from typing import Protocol

from pennflow import aws


class RunLauncher(Protocol):
    def launch(self, run_id: str) -> None:
        """Hand a created run (NOT_STARTED) to the node, which prepares and starts it."""


class RunCanceller(Protocol):
    def cancel(self, run_id: str) -> None:
        """Ask the node to stop a run (its execution and tasks) and record the outcome."""


class AsyncLambda:
    """Invokes a Lambda function asynchronously (``InvocationType=Event``) with ``{"runId"}``.

    Serves as the launcher (the prepare function) and as the canceller (the cancel function).
    """

    def __init__(self, function_name: str, client=None):
        self.function_name = function_name
        self._client = client

    def send(self, run_id: str) -> None:
        client = self._client or aws.client("lambda")
        client.invoke(
            FunctionName=self.function_name,
            InvocationType="Event",
            Payload=json.dumps({"runId": run_id}).encode(),
        )

    launch = send
    cancel = send
