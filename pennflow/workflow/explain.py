"""Human-readable views of a workflow: the compiled structure (``--explain``) and a mermaid graph."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pennflow.workflow.dag import Dag, Decomposition, Joined, Plan, Series, Step, decompose, simulate
from pennflow.workflow.definition import ProcessorType, Workflow

PENALTY_SAMPLES = 200
PENALTY_SEED = 7


@dataclass(frozen=True)
class Penalty:
    """Predicted makespan ÷ critical path; 1.0 means the structure never makes anyone wait."""

    unit: float
    mean_random: float
    worst_random: float
    kahn_mean_random: float


def predicted_penalty(dag: Dag, decomposition: Decomposition) -> Penalty:
    """Unit durations, and durations drawn uniformly from [1, 10] (seeded: same numbers every time)."""
    rng = random.Random(PENALTY_SEED)
    kahn = dag.kahn_plan()
    unit = dict.fromkeys(dag.nodes, 1.0)
    ratios, kahn_ratios = [], []
    for _ in range(PENALTY_SAMPLES):
        durations = {n: rng.uniform(1.0, 10.0) for n in dag.nodes}
        critical = dag.critical_path(durations)
        ratios.append(simulate(decomposition.plan, durations) / critical)
        kahn_ratios.append(simulate(kahn, durations) / critical)
    return Penalty(
        unit=simulate(decomposition.plan, unit) / dag.critical_path(unit),
        mean_random=sum(ratios) / len(ratios),
        worst_random=max(ratios),
        kahn_mean_random=sum(kahn_ratios) / len(kahn_ratios),
    )


def explain(workflow: Workflow) -> str:
    """The structure the workflow compiles to: its joins (each named, with why), the child machines
    it is split into when one would pass a Step Functions limit, and the makespan it predicts."""
    from pennflow.workflow.asl import CompileError, compile_machines

    dag = Dag.from_workflow(workflow)
    parts: list[str] = []
    try:
        compiled = compile_machines(workflow)
        decomposition = compiled.decomposition
        parts = _parts(compiled)
    except CompileError:  # over a limit no split helps: explain the structure the compiler would use
        decomposition = decompose(dag)
    lines = [f"workflow {workflow.name}: {len(dag.nodes)} nodes"]
    if decomposition.is_series_parallel:
        lines.append("series-parallel: compiled with no join and no added ordering; makespan = critical path")
    else:
        lines += _joins(decomposition)
    lines += parts
    lines.append("structure:")
    lines.extend(_tree(decomposition.plan, "  "))
    if dag.nodes:
        penalty = predicted_penalty(dag, decomposition)
        lines.append(
            "predicted makespan / critical path: "
            f"{penalty.unit:.3f} with equal durations; {penalty.mean_random:.3f} mean, "
            f"{penalty.worst_random:.3f} worst over {PENALTY_SAMPLES} random duration sets "
            f"(Kahn levels: {penalty.kahn_mean_random:.3f} mean; a join's own latency counted as zero)"
        )
    return "\n".join(lines)


def _parts(compiled) -> list[str]:
    """What was moved into child machines, and each machine's size and worst-case history."""
    from pennflow.workflow.limits import DEFINITION_LIMIT, HISTORY_EVENT_LIMIT, worst_case_history

    if not compiled.parts:
        return []
    parent, texts = compiled.texts()
    lines = [
        f"split into {len(compiled.parts)} child state machine(s): one machine would pass Step Functions' "
        f"{DEFINITION_LIMIT:,}-byte definition or {HISTORY_EVENT_LIMIT:,}-event history limit; the parent "
        "starts each with states:startExecution.sync:2 (joins work across them: tokens live in the run's "
        "join items), no added ordering",
        f"  parent: {len(parent.encode()) / 1000:,.0f} kB, "
        f"at most {worst_case_history(compiled.definition)[0]:,} history events",
    ]
    for number, (part, text) in enumerate(zip(compiled.parts, texts, strict=True), 1):
        lines.append(
            f"  part {number}: {part.summary}; {len(text.encode()) / 1000:,.0f} kB, "
            f"at most {worst_case_history(part.definition)[0]:,} history events"
        )
    return lines


def _joins(decomposition: Decomposition) -> list[str]:
    """Each join, the path it waits on and why: its dependency runs on another branch of a block
    that has no series or parallel split (Step Functions has no state that waits for N others)."""
    lines = [
        f"not series-parallel: {len(decomposition.joins)} join(s), no added ordering; every node starts "
        "when its dependencies end (makespan = critical path)"
    ]
    number = 0
    for block_number, block in enumerate(_joined_blocks(decomposition.plan), 1):
        path_of = {node: index for index, path in enumerate(block.paths, 1) for node in path}
        lines.append(
            f"  block {block_number}: {len(path_of)} nodes with no series or parallel split, run as "
            f"{len(block.paths)} paths along their own edges"
        )
        for join in block.joins:
            number += 1
            others = ", ".join(f"{dep} (path {path_of[dep]})" for dep in join.deps)
            lines.append(
                f"  {number}. '{join.node} waits' on path {path_of[join.node]}: {join.node} depends on "
                f"{others}, on another branch of the block"
            )
    return lines


def _joined_blocks(plan: Plan) -> list[Joined]:
    blocks, pending = [], [plan]
    while pending:
        node = pending.pop()
        if isinstance(node, Joined):
            blocks.append(node)
        elif isinstance(node, Series):
            pending.extend(reversed(node.parts))
        elif not isinstance(node, Step):
            pending.extend(reversed(node.branches))
    return blocks


def _tree(plan: Plan, indent: str) -> list[str]:
    """The plan as an indented outline; iterative, so a plan of any depth is printed."""
    lines: list[str] = []
    pending: list[tuple[Plan, str]] = [(plan, indent)]
    while pending:
        node, pad = pending.pop()
        if isinstance(node, Step):
            lines.append(f"{pad}{node.id}")
        elif isinstance(node, Joined):
            lines.append(f"{pad}joined paths ({len(node.paths)} branches, {len(node.joins)} joins)")
            waits = {join.node for join in node.joins}
            for index, path in enumerate(node.paths, 1):
                steps = " -> ".join(f"[wait] {n}" if n in waits else n for n in path)
                lines.append(f"{pad}  path {index}: {steps}")
        elif isinstance(node, Series):
            lines.append(f"{pad}sequence")
            pending.extend((part, pad + "  ") for part in reversed(node.parts))
        else:
            lines.append(f"{pad}parallel ({len(node.branches)} branches)")
            pending.extend((branch, pad + "  ") for branch in reversed(node.branches))
    return lines


_SHAPES = {
    ProcessorType.DATA_SOURCE: ('[("', '")]'),
    ProcessorType.DATA_TARGET: ('[/"', '"/]'),
    ProcessorType.PROCESSOR: ('["', '"]'),
}


def mermaid(workflow: Workflow) -> str:
    """A mermaid flowchart: data sources as cylinders, targets as parallelograms."""
    lines = ["flowchart TD"]
    for p in workflow.processors:
        left, right = _SHAPES[p.type]
        label = p.id if p.scatter is None else f"{p.id} (scatter {p.scatter.batch_size}/task)"
        lines.append(f"    {_node(p.id)}{left}{label}{right}")
    for p in workflow.processors:
        for dep in p.dependencies:
            lines.append(f"    {_node(dep)} --> {_node(p.id)}")
    return "\n".join(lines) + "\n"


def _node(processor_id: str) -> str:
    # mermaid ids may not contain '-' in every renderer
    return "n_" + processor_id.replace("-", "_")
