"""What a local command processor inherits from this machine: an allow-list, never a secret."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from pennflow.engine.environment import (
    ALLOWED_NAMES,
    PROCESSOR_PATH_ENV,
    SYSTEM_PATH,
    command_environment,
    inherited_environment,
    is_secret_name,
    processor_path,
)

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
SECRET_PARTS = st.sampled_from(["TOKEN", "SECRET", "PASSWORD", "CREDENTIALS", "AUTH"])


@given(prefix=NAMES, part=SECRET_PARTS, suffix=NAMES)
def test_a_name_holding_a_secret_word_is_withheld_even_when_allowed(prefix, part, suffix) -> None:
    for name in (
        f"{prefix}_{part}",
        f"{part}_{suffix}",
        f"LC_{prefix}{part}{suffix}",
        f"{prefix}{part.lower()}",
    ):
        assert is_secret_name(name)
        assert inherited_environment({name: "value"}) == {}


@given(name=NAMES)
def test_aws_pennsieve_and_key_variables_are_withheld(name) -> None:
    for secret in (f"AWS_{name}", f"PENNSIEVE_{name}", f"{name}_KEY", f"pennsieve_{name}"):
        assert is_secret_name(secret)
        assert inherited_environment({secret: "v"}) == {}


@given(environ=st.dictionaries(NAMES, st.text(max_size=5), max_size=20))
def test_only_allowed_names_that_are_not_secrets_pass(environ) -> None:
    inherited = inherited_environment(environ)
    for name, value in environ.items():
        allowed = name in ALLOWED_NAMES or name.startswith("LC_")
        assert (name in inherited) == (allowed and not is_secret_name(name))
        if name in inherited:
            assert inherited[name] == value


def test_the_named_gaps_of_the_old_withheld_list_are_closed() -> None:
    environ = {
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "t",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/creds",
        "PENNSIEVE_SECRET_ARN": "arn",
        "GITHUB_TOKEN": "g",
        "VIRTUAL_ENV": "/venv",
        "PYTHONPATH": "/venv/lib",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "HOME": "/home/u",
    }
    assert inherited_environment(environ) == {
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "HOME": "/home/u",
    }


def test_path_is_the_systems_unless_the_engine_is_told_otherwise() -> None:
    assert processor_path({"PATH": "/venv/bin:/usr/bin"}) == os.pathsep.join(SYSTEM_PATH)
    assert processor_path({PROCESSOR_PATH_ENV: "/opt/bin:/usr/bin"}) == "/opt/bin:/usr/bin"


@given(contract=st.dictionaries(NAMES, st.text(max_size=5), max_size=10))
def test_the_contract_is_given_on_purpose_and_wins(contract) -> None:
    env = command_environment(contract, inherited={"LANG": "C", "TZ": "UTC"}, path="/usr/bin")
    assert {k: env[k] for k in contract} == contract  # SESSION_TOKEN, PENNSIEVE_API_HOST, params...
    assert set(env) == set(contract) | {"LANG", "TZ", "PATH"}
    if "PATH" not in contract:
        assert env["PATH"] == "/usr/bin"
