"""pytest fixtures: moto AWS, a Cognito pool with an API key user, the fake Pennsieve, a client.

Use from a test module with ``pytest_plugins = ["tests.fakes.pennsieve_fixtures"]``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from pennflow.pennsieve import HttpSettings, PennsieveClient, PennsieveCredentials, PennsieveHosts
from tests.fakes.pennsieve_server import CognitoUser, FakePennsieve, create_cognito_user

# Retries stay on, sleeps shrink to milliseconds so fault tests run fast.
FAST_HTTP = HttpSettings(
    connect_timeout=2, read_timeout=5, retries=3, backoff_factor=0.01, backoff_max=0.05, backoff_jitter=0.01
)


@pytest.fixture(scope="module")
def pennsieve_aws() -> Iterator[None]:
    """moto for every AWS service, with fake credentials and no endpoint or Pennsieve overrides.

    Module-scoped: creating the Cognito pool is the slow part of a test's setup.
    """
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith(("AWS_", "PENNSIEVE_")):
                env.delenv(name)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_SESSION_TOKEN", "testing")
        with mock_aws():
            yield


@pytest.fixture(scope="module")
def cognito_user(pennsieve_aws: None) -> CognitoUser:
    return create_cognito_user()


@pytest.fixture
def pennsieve(cognito_user: CognitoUser) -> Iterator[FakePennsieve]:
    import boto3

    server = FakePennsieve(cognito_user, upload_bucket=f"pennsieve-storage-{uuid.uuid4().hex[:12]}")
    boto3.client("s3", region_name=cognito_user.region).create_bucket(Bucket=server.upload_bucket)
    with server:
        yield server


@pytest.fixture
def pennsieve_credentials(cognito_user: CognitoUser) -> PennsieveCredentials:
    return PennsieveCredentials(api_key=cognito_user.api_key, api_secret=SecretStr(cognito_user.api_secret))


@pytest.fixture
def make_pennsieve_client(pennsieve: FakePennsieve) -> Iterator[Callable[..., PennsieveClient]]:
    """Build clients talking to the fake (closed at teardown); keyword arguments go to the client."""
    made: list[PennsieveClient] = []

    def make(credentials: PennsieveCredentials, **kwargs: Any) -> PennsieveClient:
        kwargs.setdefault("hosts", PennsieveHosts(api=pennsieve.api_host, api2=pennsieve.api2_host))
        kwargs.setdefault("http", FAST_HTTP)
        made.append(PennsieveClient(credentials, **kwargs))
        return made[-1]

    yield make
    for pennsieve_client in made:
        pennsieve_client.close()


@pytest.fixture
def pennsieve_client(
    make_pennsieve_client: Callable[..., PennsieveClient], pennsieve_credentials: PennsieveCredentials
) -> PennsieveClient:
    return make_pennsieve_client(pennsieve_credentials)
