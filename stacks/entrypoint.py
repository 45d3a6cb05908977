"""Builds the CDK app from cdk.json: used by app.py (the `cdk` CLI) and by the infrastructure tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from stacks import constants as C
from stacks.node_stack import NodeStack
from stacks.orchestration import WorkflowError, compile_folder
from stacks.settings import NodeSettings, SettingsError, load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def cdk_json_context(project_root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The context of cdk.json; the CLI passes it too, and its own values win."""
    return json.loads((project_root / "cdk.json").read_text())["context"]


def create_app(
    *,
    context: dict[str, Any] | None = None,
    outdir: str | None = None,
    with_nag: bool = True,
    project_root: Path = PROJECT_ROOT,
) -> tuple[App, NodeStack]:
    app = App(context={**cdk_json_context(project_root), **(context or {})}, outdir=outdir)
    settings = load_settings(app.node.try_get_context(C.CONTEXT_KEY))
    workflows = compile_folder(project_root / settings.workflows_folder, settings.node_name)
    stack = NodeStack(
        app,
        C.STACK_ID,
        stack_name=f"{settings.node_name}-node",
        settings=settings,
        workflows=workflows,
        project_root=project_root,
        env=_environment(settings),
    )
    if with_nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app, stack


def _environment(settings: NodeSettings) -> Environment | None:
    if settings.account is None and settings.region is None:
        return None  # environment-agnostic template, deployable to any account and region
    return Environment(account=settings.account, region=settings.region)


def main() -> None:
    try:
        app, _ = create_app()
    except (SettingsError, WorkflowError) as err:
        print(f"pennflow: cannot synthesize the node:\n{err}", file=sys.stderr)
        sys.exit(2)
    app.synth()
