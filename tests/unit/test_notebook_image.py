"""The project's notebook image (processors/builtin/notebook/Dockerfile) is what the node expects:
the notebook extra's pins, the node's default `notebookPython`, the module the task runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from dockerfile_parse import DockerfileParser

from pennflow.node.notebooks import SessionSettings, jupyter_command
from stacks.settings import NodeSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "processors" / "builtin" / "notebook" / "Dockerfile"


def _parsed() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))  # reads it (setting .content would write a file)


def _installed() -> set[str]:
    runs = " ".join(i["value"] for i in _parsed().structure if i["instruction"] == "RUN")
    return set(re.findall(r'"([A-Za-z0-9_.-]+==[^"]+)"', runs))


def test_the_image_installs_exactly_the_notebook_extra_s_pins() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "notebook"
    ]
    assert _installed() == set(extra)


def test_the_image_s_python_is_the_node_s_default_notebook_python() -> None:
    base = _parsed().baseimage
    match = re.fullmatch(r"python:(\d+\.\d+)-slim", base)
    assert match, base
    assert match.group(1) == NodeSettings.model_fields["notebook_python"].default


def test_the_task_runs_the_server_module_the_image_installs() -> None:
    settings = SessionSettings(
        image="pennflow-notebook:0.1.0",
        python_version="3.12",
        idle_minutes=60,
        security_group="sg-1",
        log_group="notebooks",
        family_prefix="node",
    )
    command = jupyter_command(settings)
    assert command[command.index("-m") + 1] == "jupyter_server"
    assert any(pin.startswith("jupyter_server==") for pin in _installed())
