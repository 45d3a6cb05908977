"""The one place that creates boto3 clients for the compute node's runtime code.

boto3 is imported on first use, so ``pennflow`` stays importable without the AWS extras. Clients
are cached per (service, region): a Lambda container reuses them across invocations. Retries use
botocore's adaptive mode with room for the account-wide throttles this code meets
(``RegisterTaskDefinition`` bursts 20 then allows 1 per second).
"""

from __future__ import annotations

import threading
from typing import Any

MAX_ATTEMPTS = 10
_clients: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()


def client(service: str, region: str | None = None) -> Any:
    """A cached boto3 client (``AWS_ENDPOINT_URL_<SERVICE>`` and the usual settings apply)."""
    key = (service, region)
    with _lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS})
            _clients[key] = boto3.session.Session().client(service, region_name=region, config=config)
        return _clients[key]


def s3_presigner() -> Any:
    """An S3 client whose presigned URLs are SigV4 (botocore would still sign them with SigV2 in some
    regions, which S3 refuses in the newer ones), cached like the others."""
    key = ("s3", "presign-sigv4")
    with _lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(
                signature_version="s3v4", retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS}
            )
            _clients[key] = boto3.session.Session().client("s3", config=config)
        return _clients[key]


class LazyClient:
    """A class attribute: the instance's own ``_client`` when one was injected (tests), else the
    shared cached client of ``service``, created on first use."""

    def __init__(self, service: str):
        self.service = service

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        if instance._client is None:
            instance._client = client(self.service)
        return instance._client


def reset_clients() -> None:
    """Forget cached clients (tests switch credentials and endpoints between cases)."""
    with _lock:
        _clients.clear()


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (None for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None
