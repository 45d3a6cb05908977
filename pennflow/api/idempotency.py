"""``Idempotency-Key`` on POST /runs, with Powertools idempotency on DynamoDB.

The same key with the same body returns the run the first request created; the same key with a
different body is refused (422), and a key whose first request is still running gets 409. Keys
are scoped by caller, so two users can never collide on one. Powertools is imported on first
use: requests without the header never load it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pennflow import aws
from pennflow.api.errors import Conflict, InvalidRequest, Unavailable, field_error
from pennflow.api.models import RunAccepted, RunRequest

HEADER = "Idempotency-Key"
KEY_PREFIX = "pennflow-api-start-run"  # stable across refactors, unlike the default module.function
EXPIRES_AFTER_SECONDS = 24 * 3600


class IdempotentRunStarts:
    def __init__(self, table: str, *, client=None, expires_after_seconds: int = EXPIRES_AFTER_SECONDS):
        self.table = table
        self._client = client
        self.expires_after_seconds = expires_after_seconds
        self._once: Callable[..., RunAccepted] | None = None
        self._config: Any = None

    def start(
        self,
        key: str,
        caller: str,
        request: RunRequest,
        start: Callable[[], RunAccepted],
        lambda_context: Any = None,
    ) -> RunAccepted:
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
            IdempotencyValidationError,
        )

        once = self._wrapped()
        if lambda_context is not None:
            self._config.register_lambda_context(lambda_context)
        attempt = {"key": f"{caller}|{key}", "request": request.model_dump(mode="json", by_alias=True)}
        try:
            return once(attempt=attempt, start=start)
        except IdempotencyValidationError:
            raise InvalidRequest(
                f"{HEADER} {key!r} was already used with a different request body; use a new key",
                fields=[field_error(HEADER, "reused with a different body", "header")],
                code="idempotency_key_reused",
            ) from None
        except IdempotencyAlreadyInProgressError:
            raise Conflict(
                f"the first request with {HEADER} {key!r} is still in progress; retry in a few seconds",
                code="idempotency_key_in_progress",
            ) from None
        except IdempotencyPersistenceLayerError as exc:
            raise Unavailable("the idempotency store is unavailable; try again") from exc

    def _wrapped(self) -> Callable[..., RunAccepted]:
        if self._once is None:
            from aws_lambda_powertools.utilities.idempotency import (
                DynamoDBPersistenceLayer,
                IdempotencyConfig,
                idempotent_function,
            )
            from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer

            self._config = IdempotencyConfig(
                event_key_jmespath="key",
                payload_validation_jmespath="request",
                raise_on_no_idempotency_key=True,
                expires_after_seconds=self.expires_after_seconds,
            )
            persistence = DynamoDBPersistenceLayer(
                table_name=self.table, boto3_client=self._client or aws.client("dynamodb")
            )

            def start_once(attempt: dict, start: Callable[[], RunAccepted]) -> RunAccepted:
                return start()

            self._once = idempotent_function(
                start_once,
                data_keyword_argument="attempt",
                persistence_store=persistence,
                config=self._config,
                output_serializer=PydanticSerializer(RunAccepted),
                key_prefix=KEY_PREFIX,
            )
        return self._once
