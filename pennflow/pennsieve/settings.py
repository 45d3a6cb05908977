"""Where Pennsieve lives and how patiently we talk to it."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pennflow.workflow.pennsieve_env import DEFAULT_API2_HOST, DEFAULT_API_HOST, hosts_from_env

__all__ = ["DEFAULT_API2_HOST", "DEFAULT_API_HOST", "HttpSettings", "PennsieveHosts"]


class PennsieveHosts(BaseModel):
    """``api`` serves datasets and packages; ``api2`` serves the upload service (under /upload)."""

    model_config = ConfigDict(frozen=True)

    api: str = DEFAULT_API_HOST
    api2: str = DEFAULT_API2_HOST

    @field_validator("api", "api2")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PennsieveHosts:
        api, api2 = hosts_from_env(env)
        return cls(api=api, api2=api2)


class HttpSettings(BaseModel):
    """Timeouts, retry policy and connection pool size shared by API calls and file transfers."""

    model_config = ConfigDict(frozen=True)

    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    retries: int = Field(5, ge=0, description="attempts after the first, per request")
    backoff_factor: float = Field(0.5, ge=0, description="sleep factor * 2**(attempt-1) seconds")
    backoff_max: float = Field(30.0, ge=0)
    backoff_jitter: float = Field(0.5, ge=0, description="up to this many random extra seconds")
    pool_size: int = Field(16, ge=1, description="connections kept per host; >= parallel downloads")

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)
