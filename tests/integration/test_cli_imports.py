"""Each command imports only what it uses: checked on the modules loaded by a real ``pennflow`` process.

Not timed (the figures are in ``benchmarks/startup.py``): a subprocess runs ``pennflow.cli.main``
as the console script does and prints, at exit, which of the watched modules were imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "workflows" / "eeg-quality.yaml"
MARK = Path(__file__).parents[1] / "fixtures" / "processors" / "mark.py"

# Heavy or remote-only parts: no definition command needs any of them.
NOT_FOR_DEFINITIONS = (
    "boto3",
    "botocore",
    "requests",
    "pennflow.engine",
    "pennflow.node.client",
    "pennflow.layers.service",
    "pennflow.pennsieve",
)

WRAPPER = """
import atexit, json, sys
watched = json.loads(sys.argv.pop(1))

def report():
    loaded = [name for name in watched if name in sys.modules]
    node = sorted(m for m in sys.modules if m.startswith("pennflow.node.") and m != "pennflow.node.address")
    sys.__stderr__.write("LOADED " + json.dumps(loaded + node) + "\\n")

atexit.register(report)
sys.argv[0] = "pennflow"
from pennflow.cli import main
main()
"""


def loaded_modules(*args: str, watched: tuple[str, ...], env: dict[str, str] | None = None) -> list[str]:
    """Run ``pennflow ARGS`` in a fresh interpreter (it must exit 0); the watched modules it imported,
    and any module of the node besides its address names."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(watched), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    assert done.returncode == 0 and lines, f"exit {done.returncode}: {done.stdout}{done.stderr}"
    return json.loads(lines[-1].removeprefix("LOADED "))


@pytest.mark.parametrize(
    "args",
    [("validate", str(EXAMPLE)), ("compile", str(EXAMPLE)), ("compile", str(EXAMPLE), "--explain")],
    ids=["validate", "compile", "compile --explain"],
)
def test_definition_commands_import_no_aws_engine_node_or_layers(args) -> None:
    assert loaded_modules(*args, watched=NOT_FOR_DEFINITIONS) == []


@pytest.mark.parametrize(
    "args",
    [("--help",), ("validate", str(EXAMPLE)), ("validate", "--help"), ("layers", "--help")],
    ids=["--help", "validate", "validate --help", "layers --help"],
)
def test_help_and_validate_never_import_rich(args) -> None:
    assert loaded_modules(*args, watched=("rich", "rich.console", *NOT_FOR_DEFINITIONS)) == []


def test_a_local_run_without_dataset_or_publish_imports_no_pennsieve_client_or_aws(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    definition = tmp_path / "flow.yaml"
    definition.write_text(
        "name: flow\nprocessors:\n  - id: src\n    type: data-source\n"
        f"  - id: mark\n    command: [python, {json.dumps(str(MARK))}]\n    dependsOn: [src]\n"
        "    defaultParams: {SLEEP: '0'}\n"
        # A Pennsieve target: without --publish the run copies its results and never reaches Pennsieve.
        "  - id: results\n    type: data-target\n    targetType: Pennsieve Dataset\n    dependsOn: [mark]\n"
    )
    watched = ("boto3", "botocore", "requests", "pennflow.pennsieve", "pennflow.data.datasource")
    loaded = loaded_modules(
        "run",
        str(definition),
        "--input",
        str(tmp_path / "input"),
        "--json",
        "--no-containers",
        watched=watched,
        env={"PENNFLOW_HOME": str(tmp_path / "home")},
    )
    assert loaded == []
    assert (tmp_path / "home").is_dir()  # the run did happen


@pytest.mark.parametrize(
    "args", [("validate", str(EXAMPLE)), ("compile", str(EXAMPLE))], ids=["validate", "compile"]
)
def test_definition_commands_skip_pydantics_plugin_search(args) -> None:
    # pydantic's plugin loader imports importlib.metadata even with plugins off; the CLI defers it.
    assert loaded_modules(*args, watched=("importlib.metadata",)) == []


HANDOVER = """
import os, sys
from pennflow.cli.startup import PLUGIN_LOADER, defer_pydantic_plugin_search
from pydantic import BaseModel
defer_pydantic_plugin_search()
stand_in = sys.modules[PLUGIN_LOADER]
os.environ["PYDANTIC_DISABLE_PLUGINS"] = "1"
class Off(BaseModel):
    x: int
assert Off(x=1).x == 1 and sys.modules[PLUGIN_LOADER] is stand_in
assert "importlib.metadata" not in sys.modules
del os.environ["PYDANTIC_DISABLE_PLUGINS"]
class On(BaseModel):
    y: int
assert On(y=2).y == 2
real = sys.modules[PLUGIN_LOADER]
assert real is not stand_in and real._plugins is not None  # pydantic's own loader searched
print("handed over")
"""


def test_the_plugin_loader_stand_in_hands_over_to_pydantics_own_when_plugins_are_on() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HANDOVER],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "handed over\n"), done.stderr
