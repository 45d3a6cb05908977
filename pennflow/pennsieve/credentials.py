"""Finding the Pennsieve API key and secret, without ever showing the secret.

Sources, first match wins:
1. explicit arguments;
2. ``PENNSIEVE_API_KEY`` + ``PENNSIEVE_API_SECRET``;
3. ``PENNSIEVE_SECRET_ID`` (or ``PENNSIEVE_SECRET_ARN``, the name the compute node's functions
   get): a Secrets Manager secret (ARN or name) holding ``{"apiKey": ..., "apiSecret": ...}``;
4. the Pennsieve profile file ``~/.pennsieve/config.ini`` (one section per profile with
   ``api_token`` and ``api_secret``; profile from the argument, ``PENNSIEVE_PROFILE``, the file's
   ``[global] default_profile``, else ``default``).
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from pennflow.pennsieve.errors import CredentialsNotFound

ENV_KEY = "PENNSIEVE_API_KEY"
ENV_SECRET = "PENNSIEVE_API_SECRET"
ENV_SECRET_ID = "PENNSIEVE_SECRET_ID"
ENV_SECRET_ARN = "PENNSIEVE_SECRET_ARN"
ENV_PROFILE = "PENNSIEVE_PROFILE"
DEFAULT_PROFILE = "default"
GLOBAL_SECTION = "global"


def default_config_file() -> Path:
    return Path.home() / ".pennsieve" / "config.ini"


class PennsieveCredentials(BaseModel):
    """An API key (not secret, like an AWS access key id) and its secret (a ``SecretStr``)."""

    model_config = ConfigDict(frozen=True)

    api_key: str = Field(min_length=1)
    api_secret: SecretStr
    source: str = Field("arguments", description="where the pair was found, for messages")


class _SecretPayload(BaseModel):
    api_key: str = Field(alias="apiKey", min_length=1)
    api_secret: SecretStr = Field(alias="apiSecret", min_length=1)


def resolve_credentials(
    api_key: str | None = None,
    api_secret: str | SecretStr | None = None,
    *,
    profile: str | None = None,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> PennsieveCredentials:
    env = os.environ if env is None else env
    if api_key or api_secret:
        return _pair(api_key, api_secret, "arguments", ("api_key", "api_secret"))
    if env.get(ENV_KEY) or env.get(ENV_SECRET):
        return _pair(env.get(ENV_KEY), env.get(ENV_SECRET), "environment", (ENV_KEY, ENV_SECRET))
    secret_id = env.get(ENV_SECRET_ID) or env.get(ENV_SECRET_ARN)
    if secret_id:
        return from_secrets_manager(secret_id)
    path = config_file or default_config_file()
    if path.is_file():
        return from_profile_file(path, profile or env.get(ENV_PROFILE))
    raise CredentialsNotFound(
        f"no Pennsieve credentials: pass api_key/api_secret, set {ENV_KEY} and {ENV_SECRET}, "
        f"set {ENV_SECRET_ID} to a Secrets Manager secret, or create {path}"
    )


def _pair(
    key: str | None, secret: str | SecretStr | None, source: str, names: tuple[str, str]
) -> PennsieveCredentials:
    if not key:
        raise CredentialsNotFound(f"{names[0]} is missing ({names[1]} is set)")
    if not secret:
        raise CredentialsNotFound(f"{names[1]} is missing ({names[0]} is set)")
    value = secret if isinstance(secret, SecretStr) else SecretStr(secret)
    return PennsieveCredentials(api_key=key, api_secret=value, source=source)


def from_profile_file(path: Path, profile: str | None = None) -> PennsieveCredentials:
    parser = configparser.ConfigParser(default_section="__no_default_section__", interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise CredentialsNotFound(f"{path} is not a valid INI file: {type(exc).__name__}") from None
    name = profile or _default_profile(parser)
    if not parser.has_section(name):
        raise CredentialsNotFound(f"{path} has no profile [{name}]")
    section = parser[name]
    for field in ("api_token", "api_secret"):
        if not section.get(field, "").strip():
            raise CredentialsNotFound(f"{path} profile [{name}] has no {field}")
    return PennsieveCredentials(
        api_key=section["api_token"].strip(),
        api_secret=SecretStr(section["api_secret"].strip()),
        source=f"profile {name} in {path}",
    )


def _default_profile(parser: configparser.ConfigParser) -> str:
    if parser.has_option(GLOBAL_SECTION, "default_profile"):
        return parser.get(GLOBAL_SECTION, "default_profile").strip()
    return DEFAULT_PROFILE


def from_secrets_manager(secret_id: str) -> PennsieveCredentials:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise CredentialsNotFound(f"secret {secret_id} could not be read: {code}") from None
    except (BotoCoreError, KeyError) as exc:
        raise CredentialsNotFound(f"secret {secret_id} could not be read: {type(exc).__name__}") from None
    try:
        payload = _SecretPayload.model_validate(json.loads(value))
    except (ValueError, ValidationError) as exc:
        # Name the faulty fields only: a validation message would quote the secret's contents.
        fields = sorted({str(err["loc"][0]) for err in getattr(exc, "errors", list)() if err["loc"]})
        detail = f"missing or empty {', '.join(fields)}" if fields else "not a JSON object"
        raise CredentialsNotFound(
            f'secret {secret_id} must hold {{"apiKey", "apiSecret"}}: {detail}'
        ) from None
    return PennsieveCredentials(
        api_key=payload.api_key, api_secret=payload.api_secret, source=f"secret {secret_id}"
    )
