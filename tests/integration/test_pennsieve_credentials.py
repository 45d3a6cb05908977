"""Where the API key and secret come from: arguments, environment, Secrets Manager, profile file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from pennflow.pennsieve import CredentialsNotFound, resolve_credentials

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

PROFILE_FILE = """\
[global]
default_profile = lab

[lab]
api_token = lab-key
api_secret = lab-secret

[other]
api_token = other-key
api_secret = other-secret
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(PROFILE_FILE)
    return path


@pytest.fixture
def secret_arn(pennsieve_aws) -> str:
    import boto3

    secrets = boto3.client("secretsmanager")
    value = json.dumps({"apiKey": "sm-key", "apiSecret": "sm-secret"})
    return secrets.create_secret(Name=f"pennsieve-{uuid.uuid4().hex}", SecretString=value)["ARN"]


def test_explicit_arguments_win_over_everything(config_file):
    env = {"PENNSIEVE_API_KEY": "env-key", "PENNSIEVE_API_SECRET": "env-secret"}
    found = resolve_credentials("arg-key", "arg-secret", config_file=config_file, env=env)
    assert (found.api_key, found.api_secret.get_secret_value(), found.source) == (
        "arg-key",
        "arg-secret",
        "arguments",
    )


def test_environment_variables(config_file):
    env = {"PENNSIEVE_API_KEY": "env-key", "PENNSIEVE_API_SECRET": "env-secret"}
    found = resolve_credentials(config_file=config_file, env=env)
    assert (found.api_key, found.api_secret.get_secret_value(), found.source) == (
        "env-key",
        "env-secret",
        "environment",
    )


def test_half_a_pair_names_the_missing_variable(config_file):
    with pytest.raises(CredentialsNotFound, match="PENNSIEVE_API_SECRET is missing"):
        resolve_credentials(config_file=config_file, env={"PENNSIEVE_API_KEY": "env-key"})
    with pytest.raises(CredentialsNotFound, match="api_key is missing"):
        resolve_credentials(api_secret="only-secret")


def test_profile_file_uses_its_default_profile(config_file):
    found = resolve_credentials(config_file=config_file, env={})
    assert (found.api_key, found.api_secret.get_secret_value()) == ("lab-key", "lab-secret")
    assert "profile lab" in found.source


def test_profile_chosen_by_environment_or_argument(config_file):
    by_env = resolve_credentials(config_file=config_file, env={"PENNSIEVE_PROFILE": "other"})
    by_arg = resolve_credentials(profile="other", config_file=config_file, env={"PENNSIEVE_PROFILE": "lab"})
    assert by_env.api_key == by_arg.api_key == "other-key"


def test_profile_defaults_to_default_without_a_global_section(tmp_path):
    path = tmp_path / "config.ini"
    path.write_text("[default]\napi_token = d-key\napi_secret = d-secret\n")
    assert resolve_credentials(config_file=path, env={}).api_key == "d-key"


def test_profile_problems_name_the_profile_and_field(config_file, tmp_path):
    with pytest.raises(CredentialsNotFound, match=r"has no profile \[missing\]"):
        resolve_credentials(profile="missing", config_file=config_file, env={})
    broken = tmp_path / "broken.ini"
    broken.write_text("[default]\napi_token = k\n")
    with pytest.raises(CredentialsNotFound, match=r"profile \[default\] has no api_secret"):
        resolve_credentials(config_file=broken, env={})


def test_nothing_found_lists_every_source(tmp_path):
    with pytest.raises(CredentialsNotFound) as caught:
        resolve_credentials(config_file=tmp_path / "absent.ini", env={})
    message = str(caught.value)
    for source in ("PENNSIEVE_API_KEY", "PENNSIEVE_SECRET_ID", "absent.ini"):
        assert source in message


def test_secrets_manager_secret_named_by_environment(secret_arn, config_file):
    found = resolve_credentials(config_file=config_file, env={"PENNSIEVE_SECRET_ID": secret_arn})
    assert (found.api_key, found.api_secret.get_secret_value()) == ("sm-key", "sm-secret")
    assert secret_arn in found.source


def test_the_compute_nodes_secret_arn_variable_works_too(secret_arn, tmp_path):
    found = resolve_credentials(config_file=tmp_path / "absent.ini", env={"PENNSIEVE_SECRET_ARN": secret_arn})
    assert found.api_key == "sm-key"


def test_secrets_manager_errors_name_the_secret_but_never_its_value(pennsieve_aws):
    import boto3

    secrets = boto3.client("secretsmanager")
    leaky = secrets.create_secret(
        Name="pennsieve-leaky", SecretString=json.dumps({"apiKey": "k", "token": "hush-1"})
    )
    with pytest.raises(CredentialsNotFound) as caught:
        resolve_credentials(env={"PENNSIEVE_SECRET_ID": leaky["ARN"]})
    assert "apiSecret" in str(caught.value) and "hush-1" not in str(caught.value)

    with pytest.raises(
        CredentialsNotFound, match="pennsieve-absent could not be read: ResourceNotFoundException"
    ):
        resolve_credentials(env={"PENNSIEVE_SECRET_ID": "pennsieve-absent"})


def test_the_secret_never_shows_in_repr_or_str(config_file):
    found = resolve_credentials(config_file=config_file, env={})
    assert "lab-secret" not in repr(found)
    assert "lab-secret" not in str(found)
    assert "lab-secret" not in found.model_dump_json()


def test_resolved_credentials_log_in(pennsieve, make_pennsieve_client, cognito_user):
    env = {"PENNSIEVE_API_KEY": cognito_user.api_key, "PENNSIEVE_API_SECRET": cognito_user.api_secret}
    dataset = pennsieve.add_dataset("from-env")
    pennsieve_client = make_pennsieve_client(resolve_credentials(env=env))
    assert pennsieve_client.get_dataset(dataset.node_id).name == "from-env"
