"""The trigger functions' settings (environment variables the stack sets) and their adapters.

Built once per Lambda container on first use (``functools.cache``); tests call ``reset()``.
A missing or bad variable fails with one line per variable, never a traceback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from functools import cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pennflow.triggers.debounce import Debouncer, SqsFireQueue
from pennflow.triggers.intake import DELIVERY_TTL_SECONDS, TriggerIntake
from pennflow.triggers.signing import DEFAULT_TOLERANCE_SECONDS, SecretsManagerSecrets
from pennflow.triggers.store import DynamoTriggerStore

ENV = {
    "rules_table": "TRIGGERS_TABLE",
    "state_table": "TRIGGER_STATE_TABLE",
    "fire_queue_url": "TRIGGER_FIRE_QUEUE_URL",
    "webhook_secret": "WEBHOOK_SECRET_ARN",
    "tolerance": "WEBHOOK_TOLERANCE_SECONDS",
    "secret_ttl": "WEBHOOK_SECRET_TTL_SECONDS",
    "delivery_ttl": "TRIGGER_DELIVERY_TTL_SECONDS",
}


clock: Callable[[], float] = time.time  # the one clock of the trigger functions (tests replace it)


def now() -> float:
    return clock()


class TriggerSettingsError(RuntimeError):
    pass


class TriggerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    rules_table: str = Field(alias=ENV["rules_table"], min_length=1)
    state_table: str = Field(alias=ENV["state_table"], min_length=1)
    fire_queue_url: str | None = Field(None, alias=ENV["fire_queue_url"], min_length=1)
    webhook_secret: str | None = Field(None, alias=ENV["webhook_secret"], min_length=1)
    tolerance_seconds: int = Field(DEFAULT_TOLERANCE_SECONDS, alias=ENV["tolerance"], ge=30, le=3600)
    secret_ttl_seconds: int = Field(300, alias=ENV["secret_ttl"], ge=0, le=3600)
    delivery_ttl_seconds: int = Field(DELIVERY_TTL_SECONDS, alias=ENV["delivery_ttl"], ge=3600, le=90 * 86400)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TriggerSettings:
        try:
            return cls.model_validate(dict(os.environ if environ is None else environ))
        except ValidationError as exc:
            lines = [
                f"{'.'.join(str(p) for p in e['loc'])}: {'required' if e['type'] == 'missing' else e['msg']}"
                for e in exc.errors()
            ]
            raise TriggerSettingsError("invalid trigger settings:\n" + "\n".join(lines)) from None

    def require(self, field: str) -> str:
        value = getattr(self, field)
        if not value:
            raise TriggerSettingsError(f"invalid trigger settings:\n{ENV[field]}: required by this function")
        return value


@cache
def settings() -> TriggerSettings:
    return TriggerSettings.from_env()


@cache
def store() -> DynamoTriggerStore:
    return DynamoTriggerStore(settings().rules_table, settings().state_table)


@cache
def debouncer() -> Debouncer:
    return Debouncer(store(), SqsFireQueue(settings().require("fire_queue_url")), clock=now)


@cache
def intake() -> TriggerIntake:
    return TriggerIntake(
        store(), debouncer(), clock=now, delivery_ttl_seconds=settings().delivery_ttl_seconds
    )


@cache
def webhook_secrets() -> SecretsManagerSecrets:
    s = settings()
    return SecretsManagerSecrets(s.require("webhook_secret"), ttl_seconds=s.secret_ttl_seconds, clock=now)


def reset() -> None:
    for factory in (settings, store, debouncer, intake, webhook_secrets):
        factory.cache_clear()
