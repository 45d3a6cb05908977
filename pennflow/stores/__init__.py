"""Run/step status stores: one protocol, a SQLite adapter (local) and a DynamoDB adapter (AWS)."""

from pennflow.stores.base import Page, RunStore, StoreConflict

__all__ = ["Page", "RunStore", "StoreConflict"]
