"""Authentication against moto's Cognito and the fake Pennsieve: login, refresh, 401 recovery."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from pydantic import SecretStr

from pennflow.pennsieve import AuthenticationError, PennsieveCredentials
from pennflow.pennsieve.auth import ORGANIZATION_CLAIM, jwt_claims

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_every_call_carries_the_cognito_access_token_and_the_organization(
    pennsieve, pennsieve_client, cognito_user
):
    dataset = pennsieve.add_dataset("eeg")

    assert pennsieve_client.get_dataset(dataset.node_id).name == "eeg"

    config_call = pennsieve.requests_to("/authentication/cognito-config")
    assert len(config_call) == 1 and "authorization" not in config_call[0].headers
    [call] = pennsieve.requests_to("/datasets/")
    token = call.headers["authorization"].removeprefix("Bearer ")
    assert jwt_claims(token)["token_use"] == "access"
    assert jwt_claims(token)["client_id"] == cognito_user.client_id
    assert call.headers["x-organization-id"] == cognito_user.organization_id
    assert pennsieve_client.organization_id == cognito_user.organization_id


def test_the_organization_comes_from_the_id_token_claim(cognito_user, pennsieve_credentials):
    from pennflow.pennsieve.auth import cognito_login
    from pennflow.pennsieve.models import CognitoConfig

    pool = {"region": cognito_user.region, "id": cognito_user.pool_id, "appClientId": cognito_user.client_id}
    config = CognitoConfig.model_validate(
        {"region": cognito_user.region, "userPool": pool, "tokenPool": pool}
    )

    grant = cognito_login(pennsieve_credentials, config)

    assert grant.organization_id == cognito_user.organization_id
    assert ORGANIZATION_CLAIM not in jwt_claims(grant.access_token.get_secret_value())  # only in the id token
    assert grant.expires_at > 0


def test_the_token_is_reused_until_shortly_before_expiry_then_renewed(
    pennsieve, make_pennsieve_client, pennsieve_credentials
):
    dataset = pennsieve.add_dataset("eeg")
    clock = FakeClock(time.time())
    pennsieve_client = make_pennsieve_client(pennsieve_credentials, clock=clock)
    pennsieve_client.get_dataset(dataset.node_id)
    pennsieve_client.get_dataset(dataset.node_id)
    assert pennsieve_client.tokens.logins == 1
    expires_at = pennsieve_client.tokens.grant().expires_at

    clock.now = expires_at - 60  # inside the refresh margin: log in again before calling
    pennsieve_client.get_dataset(dataset.node_id)

    assert pennsieve_client.tokens.logins == 2
    assert len(pennsieve.bearer_tokens()) == 2
    assert len(pennsieve.requests_to("/datasets/")) == 3  # no call was rejected on the way


def test_an_expired_token_is_replaced_once_after_a_401(pennsieve, pennsieve_client):
    dataset = pennsieve.add_dataset("eeg")
    pennsieve_client.get_dataset(dataset.node_id)
    pennsieve.expire_tokens()

    assert pennsieve_client.get_dataset(dataset.node_id).node_id == dataset.node_id

    calls = pennsieve.requests_to("/datasets/")
    assert len(calls) == 3  # ok, 401, ok with the new token
    assert calls[1].headers["authorization"] == calls[0].headers["authorization"]
    assert calls[2].headers["authorization"] != calls[1].headers["authorization"]
    assert pennsieve_client.tokens.logins == 2


def test_a_second_401_is_an_authentication_error(pennsieve, pennsieve_client):
    dataset = pennsieve.add_dataset("eeg")
    pennsieve.faults.reject_all_tokens = True

    with pytest.raises(AuthenticationError, match=f"dataset {dataset.node_id}: not authenticated"):
        pennsieve_client.get_dataset(dataset.node_id)

    assert len(pennsieve.requests_to("/datasets/")) == 2
    assert pennsieve_client.tokens.logins == 2


def test_a_token_not_issued_by_the_pool_is_rejected(pennsieve, pennsieve_client):
    import requests

    dataset = pennsieve.add_dataset("eeg")
    forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."
    response = requests.get(
        f"{pennsieve.api_host}/datasets/{dataset.node_id}",
        headers={"Authorization": f"Bearer {forged}", "X-ORGANIZATION-ID": pennsieve.organization_id},
        timeout=5,
    )
    assert response.status_code == 401


def test_a_wrong_secret_is_an_authentication_error_that_does_not_show_it(
    pennsieve, make_pennsieve_client, cognito_user
):
    wrong = PennsieveCredentials(api_key=cognito_user.api_key, api_secret=SecretStr("Not-The-Secret-42"))
    dataset = pennsieve.add_dataset("eeg")
    with pytest.raises(AuthenticationError) as caught:
        make_pennsieve_client(wrong).get_dataset(dataset.node_id)

    assert cognito_user.api_key in str(caught.value)
    assert "Not-The-Secret-42" not in str(caught.value)
    assert pennsieve.requests_to("/datasets/") == []


def test_secrets_and_tokens_stay_out_of_reprs_and_logs(
    pennsieve, pennsieve_client, pennsieve_credentials, cognito_user, caplog
):
    dataset = pennsieve.add_dataset("eeg")
    caplog.set_level(logging.DEBUG)  # every logger, botocore and urllib3 included

    pennsieve_client.get_dataset(dataset.node_id)
    pennsieve.expire_tokens()
    pennsieve_client.get_dataset(dataset.node_id)  # a re-login, logged at INFO

    # The client works in this thread; the fake server's own threads are not under test.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.thread == threading.get_ident())
    token = pennsieve_client.tokens.grant().access_token.get_secret_value()
    shown = " ".join(
        [
            repr(pennsieve_client),
            str(pennsieve_client),
            repr(pennsieve_credentials),
            str(pennsieve_credentials),
            repr(pennsieve_client.tokens),
        ]
    )
    shown += repr(pennsieve_client.tokens.grant()) + logged
    assert cognito_user.api_secret not in shown
    assert token not in shown
    assert all(t not in logged for t in pennsieve.bearer_tokens())
    assert "InitiateAuth" in logged and "logging in again" in logged  # the capture did see the login
