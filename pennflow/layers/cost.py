"""Storage class and monthly cost of a layer, as the EFS lifecycle policy would bill it.

EFS moves files to Infrequent Access after ``ia_after_days`` without access (the node's lifecycle
policy) and back on the first access, so a layer's class follows from when a run last mounted it
(or, if none has, from when its current version was written). Prices are USD per GB-month, set
by the node's CDK context; the defaults are us-east-1's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pennflow.layers.models import LayerRecord, StorageClass
from pennflow.workflow.runs import utcnow

GB = 1024**3  # AWS bills storage per GB-month of 2^30 bytes
ENV_STANDARD = "LAYER_PRICE_STANDARD_GB_MONTH"
ENV_IA = "LAYER_PRICE_IA_GB_MONTH"
ENV_IA_AFTER_DAYS = "LAYER_IA_AFTER_DAYS"


class LayerPrices(BaseModel):
    model_config = ConfigDict(frozen=True)

    standard: float = Field(0.30, ge=0)
    infrequent_access: float = Field(0.016, ge=0)
    ia_after_days: int = Field(30, ge=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LayerPrices:
        """Prices from the environment (the node passes its CDK context this way); defaults otherwise."""
        env = os.environ if environ is None else environ
        raw = {
            field: env[name]
            for field, name in (
                ("standard", ENV_STANDARD),
                ("infrequent_access", ENV_IA),
                ("ia_after_days", ENV_IA_AFTER_DAYS),
            )
            if env.get(name)
        }
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = {"standard": ENV_STANDARD, "infrequent_access": ENV_IA}.get(
                str(first["loc"][0]), ENV_IA_AFTER_DAYS
            )
            raise ValueError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None

    def price(self, storage_class: StorageClass) -> float:
        return self.standard if storage_class is StorageClass.STANDARD else self.infrequent_access


def storage_class(
    last_access: datetime | None, *, now: datetime | None = None, ia_after_days: int = 30
) -> StorageClass:
    if last_access is None:
        return StorageClass.STANDARD
    idle = (now or utcnow()) - last_access
    return StorageClass.INFREQUENT_ACCESS if idle >= timedelta(days=ia_after_days) else StorageClass.STANDARD


def monthly_cost(size_bytes: int, storage: StorageClass, prices: LayerPrices) -> float:
    return size_bytes / GB * prices.price(storage)


def last_touched(record: LayerRecord) -> datetime | None:
    """The last read (a run mounted it) or write (its current version was published), whichever is later."""
    moments = [m for m in (record.last_accessed_at, record.built_at) if m is not None]
    return max(moments) if moments else None


def layer_storage(
    record: LayerRecord, prices: LayerPrices, now: datetime | None = None
) -> tuple[StorageClass, float]:
    """The layer's storage class now and its estimated monthly cost in USD."""
    storage = storage_class(last_touched(record), now=now, ia_after_days=prices.ia_after_days)
    return storage, monthly_cost(record.size_bytes, storage, prices)
