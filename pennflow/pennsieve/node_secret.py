"""The node's Pennsieve client: credentials from its Secrets Manager secret, and nothing else.

Used by the node's built-in tasks and Lambdas. API keys in the environment are ignored, since a
container override could put them there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pennflow.pennsieve.client import PennsieveClient
from pennflow.pennsieve.credentials import (
    ENV_SECRET_ARN,
    ENV_SECRET_ID,
    PennsieveCredentials,
    resolve_credentials,
)
from pennflow.pennsieve.errors import CredentialsNotFound
from pennflow.pennsieve.settings import PennsieveHosts


def secret_credentials(env: Mapping[str, str] | None = None) -> PennsieveCredentials:
    """Pennsieve credentials from the node's secret, through the client's resolver, and nothing else."""
    env = os.environ if env is None else env
    only_secret = {name: env[name] for name in (ENV_SECRET_ID, ENV_SECRET_ARN) if env.get(name)}
    if not only_secret:
        raise CredentialsNotFound(
            f"{ENV_SECRET_ARN} is not set: built-ins read Pennsieve credentials only from Secrets Manager"
        )
    return resolve_credentials(env=only_secret)


def node_pennsieve(env: Mapping[str, str] | None = None) -> PennsieveClient:
    """A client for the node's Pennsieve secret; hosts from PENNSIEVE_API_HOST / PENNSIEVE_API2_HOST."""
    env = os.environ if env is None else env
    return PennsieveClient(secret_credentials(env), hosts=PennsieveHosts.from_env(env))
