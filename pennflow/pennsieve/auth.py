"""API key + secret -> Cognito access token and organization, refreshed before it expires.

Pennsieve publishes its Cognito pool at ``/authentication/cognito-config``; the key and secret are
the username and password of a ``USER_PASSWORD_AUTH`` login against the token pool's app client.
boto3 is imported inside the login so the core stays free of AWS imports; the standard
``AWS_ENDPOINT_URL_COGNITO_IDP`` setting applies.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from pennflow.pennsieve.credentials import PennsieveCredentials
from pennflow.pennsieve.errors import AuthenticationError, PennsieveError
from pennflow.pennsieve.models import CognitoConfig

log = logging.getLogger(__name__)

ORGANIZATION_CLAIM = "custom:organization_node_id"
REFRESH_MARGIN_SECONDS = 300.0
# botocore logs request and response bodies at DEBUG: the password and the tokens.
_SDK_WIRE_LOGGERS = ("botocore.endpoint", "botocore.parsers")


class AccessGrant(BaseModel):
    """What a login yields: the bearer token, the organization it acts in, and its expiry."""

    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    organization_id: str
    expires_at: float


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: we only read our own token's expiry and organization."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError, binascii.Error) as exc:
        raise AuthenticationError(f"Cognito returned a malformed token ({type(exc).__name__})") from None
    if not isinstance(claims, dict):
        raise AuthenticationError("Cognito returned a token whose payload is not a JSON object")
    return claims


def grant_from_tokens(access_token: str, id_token: str) -> AccessGrant:
    claims = jwt_claims(id_token)
    organization = claims.get(ORGANIZATION_CLAIM)
    if not organization:
        raise AuthenticationError(f"the Cognito id token has no {ORGANIZATION_CLAIM} claim")
    try:
        expires_at = float(claims["exp"])
    except (KeyError, TypeError, ValueError):
        raise AuthenticationError("the Cognito id token has no valid exp claim") from None
    return AccessGrant(
        access_token=SecretStr(access_token), organization_id=str(organization), expires_at=expires_at
    )


def cognito_login(credentials: PennsieveCredentials, config: CognitoConfig) -> AccessGrant:
    """One ``InitiateAuth`` (unsigned, as Pennsieve's own clients do) against the token pool."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    pool = config.token_pool
    client = boto3.client(
        "cognito-idp", region_name=pool.region or config.region, config=Config(signature_version=UNSIGNED)
    )
    try:
        with _quiet_sdk_wire_logs():
            result = client.initiate_auth(
                AuthFlow="USER_PASSWORD_AUTH",
                ClientId=pool.app_client_id,
                AuthParameters={
                    "USERNAME": credentials.api_key,
                    "PASSWORD": credentials.api_secret.get_secret_value(),
                },
            )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        if code in {"NotAuthorizedException", "UserNotFoundException"}:
            raise AuthenticationError(
                f"Pennsieve rejected API key {credentials.api_key} ({credentials.source}): {code}", status=401
            ) from None
        raise PennsieveError(f"Cognito login failed: {code}") from None
    except BotoCoreError as exc:
        raise PennsieveError(f"Cognito login failed: {type(exc).__name__}") from None
    tokens = result.get("AuthenticationResult") or {}
    if "AccessToken" not in tokens or "IdToken" not in tokens:
        challenge = result.get("ChallengeName", "no tokens")
        raise AuthenticationError(
            f"Cognito did not issue tokens for API key {credentials.api_key}: {challenge}"
        )
    log.debug("authenticated API key %s", credentials.api_key)
    return grant_from_tokens(tokens["AccessToken"], tokens["IdToken"])


class _DropThreadRecords(logging.Filter):
    def __init__(self, thread_id: int) -> None:
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread_id


@contextmanager
def _quiet_sdk_wire_logs() -> Iterator[None]:
    """Drop this thread's botocore wire logs for the duration of the credential exchange."""
    dropper = _DropThreadRecords(threading.get_ident())
    loggers = [logging.getLogger(name) for name in _SDK_WIRE_LOGGERS]
    for logger in loggers:
        logger.addFilter(dropper)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(dropper)


class TokenManager:
    """Holds the current grant; logs in again shortly before expiry or after a 401. Thread-safe."""

    def __init__(
        self,
        credentials: PennsieveCredentials,
        config_loader: Callable[[], CognitoConfig],
        *,
        login: Callable[[PennsieveCredentials, CognitoConfig], AccessGrant] = cognito_login,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
    ) -> None:
        self._credentials = credentials
        self._config_loader = config_loader
        self._config: CognitoConfig | None = None
        self._login = login
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._grant: AccessGrant | None = None
        self._lock = threading.Lock()
        self.logins = 0

    def __repr__(self) -> str:
        return f"TokenManager(api_key={self._credentials.api_key!r}, logins={self.logins})"

    def grant(self) -> AccessGrant:
        with self._lock:
            if self._grant is None or self._clock() >= self._grant.expires_at - self._refresh_margin:
                self._grant = self._fresh_grant()
            return self._grant

    def invalidate(self, rejected: AccessGrant) -> None:
        """Forget ``rejected`` (after a 401) unless another thread already replaced it."""
        with self._lock:
            if self._grant is rejected:
                self._grant = None

    def _fresh_grant(self) -> AccessGrant:
        if self._config is None:
            self._config = self._config_loader()
        grant = self._login(self._credentials, self._config)
        self.logins += 1
        return grant
