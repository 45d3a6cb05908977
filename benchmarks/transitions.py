"""State transitions per processor of compiled workflows (goal <= 2), counted on a successful run.

Step Functions bills each state entered as one transition. The count walks the compiled ASL along
the success path: a state entered is one; a Parallel is its own entry plus every state of every
branch; a Map is its own entry plus its item states once per item. Per-processor figures are given
with no Map items (the fixed shape of the machine) and with a stated number of items per Map (data
source download batches and scatter batches, which grow with the data, not with the workflow).

When moto is installed, one compiled example also runs in moto's Step Functions interpreter
(tests/harness/moto_sfn.py) and its ``*StateEntered`` history events are compared with the count.

Run: python benchmarks/transitions.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pennflow.workflow.asl import compile_workflow, execution_input  # noqa: E402
from pennflow.workflow.definition import Workflow, load_definition, validate_definition  # noqa: E402

GOAL = 2.0
ITEMS_PER_MAP = 10  # the stated number of items per Map for the "with items" column
END_TYPES = {"Succeed", "Fail"}


# ------------------------------------------------------------------ counting


def count_transitions(
    machine: dict[str, Any], inline_items: int, distributed_items: int | None = None
) -> int:
    """States entered along the success path of ``machine`` (a whole definition or a branch).

    An inline Map runs ``inline_items`` items, a distributed one ``distributed_items`` (default: the
    same). A distributed Map's items run as child executions: billed too, but not in the parent's
    history."""
    if distributed_items is None:
        distributed_items = inline_items
    states = machine["States"]
    name: str | None = machine["StartAt"]
    total = 0
    seen: set[str] = set()
    while name is not None:
        if name in seen:
            raise ValueError(f"state {name!r} is entered twice on the success path: a loop")
        seen.add(name)
        state = states[name]
        total += 1
        kind = state["Type"]
        if kind == "Parallel":
            total += sum(
                count_transitions(branch, inline_items, distributed_items) for branch in state["Branches"]
            )
        elif kind == "Map":
            inner = state.get("ItemProcessor") or state["Iterator"]
            items = distributed_items if _is_distributed(state) else inline_items
            total += items * count_transitions(inner, inline_items, distributed_items)
        elif kind == "Choice":
            raise ValueError(f"state {name!r} is a Choice: its path depends on the data")
        if kind in END_TYPES or state.get("End"):
            break
        name = state.get("Next")
    return total


def _is_distributed(state: dict[str, Any]) -> bool:
    return state.get("ItemProcessor", {}).get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED"


def maps_of(machine: dict[str, Any]) -> list[str]:
    names = []
    for name, state in machine["States"].items():
        if state["Type"] == "Map":
            names.append(name)
        for branch in state.get("Branches", []):
            names += maps_of(branch)
    return names


# ------------------------------------------------------------------ workflows


def generated(name: str, edges: dict[str, list[str]], scatter: set[str] = frozenset()) -> Workflow:
    """A workflow from ``{node: dependencies}``; nodes without dependencies are data sources."""
    processors = []
    for node, deps in edges.items():
        if not deps:
            processors.append({"id": node, "type": "data-source"})
            continue
        processor: dict[str, Any] = {"id": node, "image": f"img/{node}:1", "dependsOn": deps}
        if node in scatter:
            processor["scatter"] = {"over": "files", "batchSize": 10}
        processors.append(processor)
    return validate_definition({"name": name, "processors": processors}, source=name)


def chain(n: int) -> dict[str, list[str]]:
    return {"src": [], **{f"p{i}": [f"p{i - 1}" if i > 1 else "src"] for i in range(1, n + 1)}}


def fan_out_in(width: int) -> dict[str, list[str]]:
    middle = {f"p{i}": ["prep"] for i in range(1, width + 1)}
    return {"src": [], "prep": ["src"], **middle, "join": list(middle)}


def random_dag(n: int, seed: int) -> dict[str, list[str]]:
    """Each node depends on one to three earlier nodes, mostly nearby ones (a layered pipeline)."""
    rng = random.Random(seed)
    edges: dict[str, list[str]] = {"p0": []}
    for j in range(1, n):
        picks = {max(0, j - 1 - int(rng.expovariate(1 / 6))) for _ in range(rng.randint(1, 3))}
        edges[f"p{j}"] = [f"p{i}" for i in sorted(picks)]
    return edges


def workflows() -> list[tuple[str, Workflow]]:
    examples = sorted(p for p in (ROOT / "workflows").iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    found = [(f"workflows/{path.name}", load_definition(path)) for path in examples]
    return found + [
        ("chain of 10", generated("chain", chain(10))),
        ("fan-out/in, 10 wide", generated("fan", fan_out_in(10))),
        ("fan-out/in, 10 wide, 2 scatter", generated("fan-scatter", fan_out_in(10), {"p1", "p2"})),
        ("random DAG, 30 nodes", generated("random-30", random_dag(30, seed=3))),
        ("random DAG, 100 nodes", generated("random-100", random_dag(100, seed=4))),
    ]


def static_figures() -> tuple[list[str], bool]:
    lines = [
        f"{'workflow':38} {'procs':>5} {'maps':>4} {'no items':>8} {'per proc':>8}"
        f" {f'{ITEMS_PER_MAP} items/map':>13} {'per proc':>8}"
    ]
    met = True
    for label, workflow in workflows():
        definition = compile_workflow(workflow)
        n = len(workflow.processors)
        bare = count_transitions(definition, 0)
        full = count_transitions(definition, ITEMS_PER_MAP)
        met &= bare / n <= GOAL
        lines.append(
            f"{label:38} {n:5d} {len(maps_of(definition)):4d} {bare:8d} {bare / n:8.2f}"
            f" {full:13d} {full / n:8.2f}"
        )
    return lines, met


# ------------------------------------------------------------------ moto check


def moto_check(
    path: Path, download_batches: int, scatter_batches: int, workflow: Workflow | None = None
) -> list[str]:
    """Run a compiled workflow in moto's interpreter and compare its history with the count.

    The parent history holds no Distributed Map child execution (download batches and scatter
    batches both run as such), so those are checked through the calls they made: one download
    call or one batch task per child execution here."""
    try:
        import boto3

        from pennflow.node.batches import write_batch_manifest
        from tests.harness.moto_sfn import MotoStepFunctions
    except ImportError as exc:  # moto is a test dependency
        return [f"skipped: {exc}"]
    workflow = workflow or load_definition(path)
    definition = compile_workflow(workflow)
    manifest = [
        {"index": i, "items": [{"path": f"f{i}", "fileId": i, "size": 1}]} for i in range(download_batches)
    ]
    listing = [{"index": i, "inputDir": f"/mnt/run/b/{i}"} for i in range(scatter_batches)]
    downloads: list[Any] = []
    with MotoStepFunctions() as aws:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bench-manifests")
        s3.put_object(Bucket="bench-manifests", Key="manifest.json", Body=json.dumps(manifest))
        aws.register_lambda("finalize", lambda event, context: {})
        aws.register_lambda("download", lambda event, context: downloads.append(event))
        aws.register_lambda(
            "list-batches",
            lambda event, context: write_batch_manifest(
                s3, "bench-manifests", event["runId"], event["processorId"], listing
            ),
        )
        data = execution_input(
            workflow,
            run_id="r-1",
            task_definitions={p.id: aws.register_processor(p.id) for p in workflow.processors},
            params={},
            manifest={"bucket": "bench-manifests", "key": "manifest.json"},
            node={
                **aws.node,
                "finalizeFunction": aws.function_arn("finalize"),
                "downloadFunction": aws.function_arn("download"),
                "listBatchesFunction": aws.function_arn("list-batches"),
            },
        )
        result = aws.run_execution(definition, data, timeout=60)
    entered = sum(event["type"].endswith("StateEntered") for event in result.history)
    in_parent = count_transitions(definition, 0, 0)
    scattered = {p.id for p in workflow.processors if p.scatter}
    child_states = sum(1 for event in downloads if event.get("action") == "download")
    child_states += sum(1 for call in result.run_task_calls if call.processor_id in scattered)
    sources = sum(1 for p in workflow.processors if p.type.value == "data-source")
    in_children = sources * download_batches + len(scattered) * scatter_batches
    ok = entered == in_parent and child_states == in_children
    label = path.relative_to(ROOT) if path.is_absolute() else path
    return [
        f"{label} ({download_batches} download batches, {scatter_batches} scatter batches):"
        f" execution {result.status}",
        f"  parent history *StateEntered {entered}, counted {in_parent}; distributed Map child states"
        f" run {child_states}, counted {in_children}: {'match' if ok else 'DIFFER'}",
    ]


def main() -> None:
    print("== state transitions of a successful run (each state entered = 1) ==")
    lines, met = static_figures()
    print("\n".join(lines))
    print(f"goal <= {GOAL:g} transitions per processor (no items): {'met' if met else 'NOT met'}")
    print()
    print("== the static count against moto's Step Functions interpreter ==")
    print("\n".join(moto_check(ROOT / "workflows" / "eeg-quality.yaml", 3, 0)))
    print("\n".join(moto_check(ROOT / "tests" / "fixtures" / "definitions" / "diamond.yaml", 3, 4)))
    joined = generated("random-30", random_dag(30, seed=3))  # not series-parallel: joins
    print("\n".join(moto_check(Path("random DAG, 30 nodes, with joins"), 3, 0, workflow=joined)))


if __name__ == "__main__":
    main()
