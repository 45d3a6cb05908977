"""Human-readable views of a workflow: the compiled structure (``--explain``) and a mermaid graph."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pennflow.workflow.dag import Dag, Decomposition, Plan, Series, Step, decompose, simulate
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
    dag = Dag.from_workflow(workflow)
    decomposition = decompose(dag)
    lines = [f"workflow {workflow.name}: {len(dag.nodes)} nodes"]
    if decomposition.is_series_parallel:
        lines.append("series-parallel: compiled with no added ordering; makespan = critical path")
    else:
        lines.append(f"not series-parallel: {len(decomposition.added)} ordering constraint(s) added")
        for number, added in enumerate(decomposition.added, 1):
            lines.append(
                f"  {number}. [{', '.join(added.before)}] finish before [{', '.join(added.after)}] start "
                f"({added.new_pairs} new ordered pair(s))"
            )
    lines.append("structure:")
    lines.extend(_tree(decomposition.plan, "  "))
    if dag.nodes:
        penalty = predicted_penalty(dag, decomposition)
        lines.append(
            "predicted makespan / critical path: "
            f"{penalty.unit:.3f} with equal durations; {penalty.mean_random:.3f} mean, "
            f"{penalty.worst_random:.3f} worst over {PENALTY_SAMPLES} random duration sets "
            f"(Kahn levels: {penalty.kahn_mean_random:.3f} mean)"
        )
    return "\n".join(lines)


def _tree(plan: Plan, indent: str) -> list[str]:
    if isinstance(plan, Step):
        return [f"{indent}{plan.id}"]
    if isinstance(plan, Series):
        lines = [f"{indent}sequence"]
        for part in plan.parts:
            lines.extend(_tree(part, indent + "  "))
        return lines
    lines = [f"{indent}parallel ({len(plan.branches)} branches)"]
    for branch in plan.branches:
        lines.extend(_tree(branch, indent + "  "))
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
