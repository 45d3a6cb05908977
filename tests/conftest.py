"""Settings every test shares."""

import os
import sys

import pytest

from pennflow.engine.environment import PROCESSOR_PATH_ENV, SYSTEM_PATH
from pennflow.engine.sandbox import SANDBOX_ENV

# The test workflows' processors run `python` and expect this interpreter, as a user would who sets
# PENNFLOW_PROCESSOR_PATH; tests of the default PATH remove it.
os.environ.setdefault(PROCESSOR_PATH_ENV, os.pathsep.join([os.path.dirname(sys.executable), *SYSTEM_PATH]))


@pytest.fixture
def no_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """For processors that leave notes outside their run for the test (a counter kept across
    attempts, their pids): the sandbox refuses such writes; its own tests cover it."""
    monkeypatch.setenv(SANDBOX_ENV, "off")
