"""``pennflow schema``: the JSON Schema of the workflow format, for editors and CI checks.

Point an editor at it with a first line ``# yaml-language-server: $schema=<file or URL>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def schema_command(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print the JSON Schema of the workflow definition format (YAML or JSON)."""
    from pennflow.workflow.fields import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
