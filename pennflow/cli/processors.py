"""``pennflow processors ...``: processors from source (a repository at a tag, ``URL@TAG``).

Locally, ``add`` fetches the tag into ``$PENNFLOW_HOME/processors`` and prepares it as ``pennflow run``
would (the image built with docker, or the venv of a plain Dockerfile), so the first run starts at
once; ``list`` and ``show`` read that cache. With ``--remote`` they talk to a deployed node's processor
registry: ``add`` starts its build, ``list`` and ``show`` give status, digest, manifest or the failed
build's log tail. Exit codes: 0 done, 1 the node failed, 2 invalid input or a refusal.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from pennflow.cli.output import EXIT_INVALID, EXIT_RUN_FAILED, CommandGroup, echo, fail
from pennflow.cli.remote import NodeUrlOption, StackOption

processors_app = typer.Typer(
    name="processors",
    help="Processors from source: a repository at a tag (URL@TAG), built locally or by a node.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CommandGroup,
)

SourceArg = typer.Argument(..., help="URL@TAG: any URL git accepts (https, ssh, a path), at a tag.")
RemoteOpt = typer.Option(False, "--remote", help="Use the deployed node's processor registry.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


@processors_app.command("add")
def add(
    source: str = SourceArg,
    remote: bool = RemoteOpt,
    token_secret_arn: str | None = typer.Option(
        None,
        "--token-secret-arn",
        help="With --remote, a private repository: a Secrets Manager secret (named <node>_processor-tokens/...) "
        "holding a token the build uses.",
        show_default=False,
    ),
    containers: bool | None = typer.Option(
        None,
        "--containers/--no-containers",
        help="Locally: build with docker (default: when `docker info` works).",
    ),
    node: str | None = NodeUrlOption,
    stack: str = StackOption,
    as_json: bool = JsonOpt,
) -> None:
    """Register a processor: locally fetch and prepare it; with --remote, start the node's build."""
    ref = _source(source)
    if remote:
        body = {"sourceUrl": ref.url, "tag": ref.tag}
        if token_secret_arn:
            body["tokenSecretArn"] = token_secret_arn
        view = _remote("POST", "/processors", node, stack, body=body)
        _print_remote(view, as_json)
        return
    if token_secret_arn:
        raise fail(
            "--token-secret-arn: only with --remote (locally git uses your own credentials)", EXIT_INVALID
        )
    _print_local(_prepare(ref, containers), as_json)


@processors_app.command("list")
def list_(
    remote: bool = RemoteOpt,
    node: str | None = NodeUrlOption,
    stack: str = StackOption,
    as_json: bool = JsonOpt,
) -> None:
    """Processors fetched on this machine (or registered on the node, with --remote)."""
    if remote:
        processors = _remote("GET", "/processors", node, stack)["processors"]
        if as_json:
            echo(json.dumps(processors, indent=2))
            return
        for view in processors:
            echo(
                f"{view['id']}  {view['status']:<8}  {view['sourceUrl']}@{view['tag']}  {view.get('imageDigest') or ''}"
            )
        if not processors:
            echo("no processors registered on the node")
        return
    from pennflow.engine.home import PennflowHome
    from pennflow.engine.source_processors import CACHE_DIR
    from pennflow.processors.checkout import CheckoutCache

    checkouts = CheckoutCache(PennflowHome.resolve().root / CACHE_DIR).cached()
    if as_json:
        echo(
            json.dumps(
                [{"sourceUrl": c.source.url, "tag": c.source.tag, "commit": c.commit} for c in checkouts]
            )
        )
        return
    for checkout in checkouts:
        echo(f"{checkout.source}  commit {checkout.short}")
    if not checkouts:
        echo("no processors fetched yet (pennflow processors add URL@TAG, or a run that names one)")


@processors_app.command("show")
def show(
    processor: str = typer.Argument(..., help="URL@TAG (or, with --remote, the id `list --remote` shows)."),
    remote: bool = RemoteOpt,
    node: str | None = NodeUrlOption,
    stack: str = StackOption,
    as_json: bool = JsonOpt,
) -> None:
    """One processor: its manifest, and its image or status (with --remote: digest or the build's log tail)."""
    if remote:
        if "@" in processor:
            ref = _source(processor)
            listed = _remote("GET", "/processors", node, stack)["processors"]
            match = [
                v
                for v in listed
                if v["sourceUrl"].removesuffix(".git") == ref.url.removesuffix(".git") and v["tag"] == ref.tag
            ]
            if not match:
                raise fail(
                    f"{ref} is not registered on the node (pennflow processors add {ref} --remote)",
                    EXIT_INVALID,
                )
            processor = match[0]["id"]
        _print_remote(_remote("GET", f"/processors/{processor}", node, stack), as_json, full=True)
        return
    from pennflow.engine.home import PennflowHome
    from pennflow.engine.source_processors import CACHE_DIR
    from pennflow.processors.checkout import CheckoutCache, CheckoutError
    from pennflow.processors.manifest import ManifestError, read_manifest

    ref = _source(processor)
    try:
        checkout = CheckoutCache(PennflowHome.resolve().root / CACHE_DIR).checkout(ref)
        manifest = read_manifest(checkout.path)
    except (CheckoutError, ManifestError) as exc:
        raise fail(f"{ref}: {exc}", EXIT_INVALID) from None
    data = {
        "sourceUrl": ref.url,
        "tag": ref.tag,
        "commit": checkout.commit,
        "path": str(checkout.path),
        "manifest": manifest.document(),
    }
    if as_json:
        echo(json.dumps(data, indent=2))
        return
    echo(f"{ref}  commit {checkout.short}\n  files: {checkout.path}")
    _print_manifest(data["manifest"])


# ------------------------------------------------------------------ helpers


def _source(text: str) -> Any:
    from pennflow.processors.checkout import parse_source

    try:
        return parse_source(text)
    except ValueError as exc:
        raise fail(str(exc), EXIT_INVALID) from None


def _prepare(ref: Any, containers: bool | None) -> dict[str, Any]:
    from pathlib import Path

    from pennflow.engine.home import PennflowHome
    from pennflow.engine.launchers import container_runtime_available
    from pennflow.engine.source_processors import CACHE_DIR
    from pennflow.processors.local import SourceProblem, resolve
    from pennflow.workflow.definition import Processor

    use_docker = container_runtime_available() if containers is None else containers
    stub = Processor(id="processor", source_url=ref.url, tag=ref.tag)
    try:
        found = resolve(
            stub,
            definition_dir=Path.cwd(),
            cache_root=PennflowHome.resolve().root / CACHE_DIR,
            use_docker=use_docker,
        )
    except SourceProblem as exc:
        raise fail(str(exc).removeprefix("processor 'processor': "), EXIT_INVALID) from None
    runs_as = found.processor.image if found.venv is None else f"a virtual environment at {found.venv.venv}"
    return {
        "sourceUrl": found.checkout.source.url,
        "tag": ref.tag,
        "commit": found.checkout.commit,
        "runsAs": runs_as,
        "notes": found.notes,
        "manifest": found.manifest.document(),
    }


def _print_local(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo(json.dumps(data, indent=2))
        return
    echo(f"{data['sourceUrl']}@{data['tag']}  commit {data['commit'][:12]}  runs as {data['runsAs']}")
    for note in data["notes"]:
        echo(f"  note: {note}")
    _print_manifest(data["manifest"])


def _print_manifest(manifest: dict[str, Any]) -> None:
    runtime = manifest.get("runtime", {})
    resources = {k: v for k, v in manifest.get("resources", {}).items() if v is not None}
    echo(
        f"  {manifest.get('name') or '(no name)'}: computeTypes {', '.join(runtime.get('computeTypes', []))}"
        + (f"; resources {resources}" if resources else "")
    )
    for spec in manifest.get("parameters", []):
        default = f" = {spec['default']!r}" if spec.get("default") is not None else ""
        echo(
            f"  param {spec['name']} ({spec.get('type', 'string')}){default}  {spec.get('description') or ''}"
        )


def _print_remote(view: dict[str, Any], as_json: bool, full: bool = False) -> None:
    if as_json:
        echo(json.dumps(view, indent=2))
        return
    echo(f"{view['id']}  {view['status']}  {view['sourceUrl']}@{view['tag']}  build {view.get('buildId')}")
    if view.get("image"):
        echo(f"  image: {view['image']}")
    if full and view.get("error"):
        echo("  build failed:\n" + "\n".join(f"    {line}" for line in view["error"].splitlines()))
    if full and view.get("manifest"):
        _print_manifest(view["manifest"])


def _remote(method: str, path: str, node: str | None, stack: str, body: Any = None) -> dict[str, Any]:
    from pennflow.node.client import NodeClient, RemoteError, node_url

    try:
        return NodeClient(node_url(node, stack=stack)).request(method, path, body=body)
    except RemoteError as exc:
        raise fail("\n".join(exc.lines()), EXIT_INVALID if exc.is_client_error else EXIT_RUN_FAILED) from None
