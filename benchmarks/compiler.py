"""Compiler figures: compile time and size by DAG size; makespan / critical path vs Kahn levels.

Run: python benchmarks/compiler.py
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pennflow.workflow.asl import compile_to_json  # noqa: E402
from pennflow.workflow.dag import Dag, decompose, simulate  # noqa: E402
from pennflow.workflow.definition import validate_definition  # noqa: E402


def random_dag(n: int, rng: random.Random, mean_in_degree: float = 2.0) -> Dag:
    """Each node depends on a few earlier ones, chosen mostly from nearby (a layered pipeline look)."""
    nodes = [f"p{i}" for i in range(n)]
    edges = set()
    for j in range(1, n):
        for _ in range(max(1, round(rng.expovariate(1 / mean_in_degree)))):
            edges.add((nodes[max(0, j - 1 - int(rng.expovariate(1 / 8)))], nodes[j]))
    return Dag.from_edges(nodes, sorted(edges))


def as_workflow(dag: Dag):
    processors = [
        {"id": n, "image": f"img/{n}:1", "dependsOn": list(dag.deps[n]), "defaultParams": {"K": "v"}}
        if dag.deps[n]
        else {"id": n, "type": "data-source"}
        for n in dag.nodes
    ]
    return validate_definition({"name": "bench", "processors": processors})


def compile_figures() -> list[str]:
    rng = random.Random(1)
    lines = ["nodes  compile_ms  size_kB  kB_per_node"]
    for n in (10, 100, 1000):
        workflow = as_workflow(random_dag(n, rng))
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            text = compile_to_json(workflow)
            timings.append(time.perf_counter() - start)
        size = len(text.encode())
        lines.append(f"{n:5d}  {min(timings) * 1000:10.1f}  {size / 1000:7.1f}  {size / 1000 / n:11.2f}")
    return lines


def makespan_figures(samples: int = 200) -> list[str]:
    rng = random.Random(2)
    lines = [
        "DAG size   SP share   ours/critical (mean, worst)   kahn/critical (mean, worst)   ours<=kahn  ours<kahn"
    ]
    for n in (10, 30, 100):
        ours, kahn, sp, dominated, better = [], [], 0, 0, 0
        for _ in range(samples):
            dag = random_dag(n, rng, mean_in_degree=rng.choice([1.0, 1.5, 2.5]))
            plan = decompose(dag)
            sp += plan.is_series_parallel
            durations = {node: rng.uniform(1, 10) for node in dag.nodes}
            critical = dag.critical_path(durations)
            a, b = simulate(plan.plan, durations), simulate(dag.kahn_plan(), durations)
            ours.append(a / critical)
            kahn.append(b / critical)
            dominated += a <= b + 1e-9
            better += a < b - 1e-9
        lines.append(
            f"{n:8d}   {sp / samples:8.0%}   {statistics.mean(ours):6.3f}, {max(ours):6.3f}"
            f"               {statistics.mean(kahn):6.3f}, {max(kahn):6.3f}               {dominated}/{samples}"
            f"     {better / samples:6.0%}"
        )
    return lines


def main() -> None:
    print("== compile time and definition size (compact JSON, as deployed) ==")
    print("\n".join(compile_figures()))
    print()
    print("== makespan / critical path over random DAGs, random durations U(1, 10) ==")
    print("\n".join(makespan_figures()))


if __name__ == "__main__":
    main()
