"""The RunStarter that starts a triggered run exactly as ``POST /runs`` does.

It builds the same ``RunRequest`` and calls the same start function (``pennflow.api.runs.start_run``
with the node's store, registry and launcher, given by the caller), through the API's idempotency
(``IdempotentRunStarts``) keyed by the window: a repeated fire message for one window returns the
run the first one started instead of starting another.

Refusals that a retry cannot change (4xx: unknown workflow, params no longer declared) become
``RunRefused``; everything else (5xx, an in-progress idempotency key, AWS errors) propagates so the
fire message is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from pennflow.api.errors import ApiError
from pennflow.api.models import RunAccepted, RunRequest
from pennflow.triggers.debounce import RunRefused
from pennflow.triggers.models import TriggeredRun

log = logging.getLogger(__name__)
CALLER = "pennflow-triggers"  # the idempotency scope of triggered runs (API callers are IAM ARNs)
RETRYABLE_CONFLICTS = {"idempotency_key_in_progress"}


class ApiRunStarter:
    def __init__(self, start_run: Callable[[RunRequest], RunAccepted], idempotency: Any = None):
        """``start_run(request)`` starts a run; ``idempotency`` is an ``IdempotentRunStarts`` (or None)."""
        self.start_run = start_run
        self.idempotency = idempotency
        self.lambda_context: Any = None  # the invocation's, so an interrupted start expires with it

    def start(self, run: TriggeredRun) -> str:
        try:
            request = RunRequest(
                workflow=run.workflow,
                dataset_id=run.dataset_id,
                package_ids=run.package_ids,
                params=run.params,
                layers=run.layers,
            )
        except ValidationError as exc:
            raise RunRefused(f"the trigger's run request is invalid: {exc.errors()[0]['msg']}") from None
        try:
            if self.idempotency is None:
                accepted = self.start_run(request)
            else:
                accepted = self.idempotency.start(
                    run.key, CALLER, request, lambda: self.start_run(request), self.lambda_context
                )
        except ApiError as exc:
            if exc.status < 500 and exc.code not in RETRYABLE_CONFLICTS:
                raise RunRefused(f"{exc.code}: {exc.message}") from None
            raise
        duplicate_of = getattr(accepted, "duplicate_of", None)
        if duplicate_of:  # the same inputs, definition, images, params and layers already succeeded
            log.info("run %s already has these inputs; nothing started for %s", duplicate_of, run.reason)
            return duplicate_of
        log.info("started run %s for %s", accepted.run_id, run.reason)
        return accepted.run_id
