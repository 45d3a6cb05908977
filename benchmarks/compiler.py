"""Compiler figures, measured side by side on the same DAGs in one run.

* makespan / critical path (mean, worst) of the compiler (joins, timed by running the compiled
  ASL's structure), of the previous compiler's level cuts and of Kahn levels, over random DAGs and
  random durations (a join's own latency counted as zero);
* per processor of a successful run: state transitions, Lambda calls and history events, joins
  against level cuts, and the run's transition cost at list price;
* definition size; decompose and compile time at 1,000 to 5,000 nodes and their growth exponent.

Run: python benchmarks/compiler.py
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from transitions import count_transitions  # noqa: E402

from pennflow.workflow.asl import CompileOptions, _Compiler  # noqa: E402
from pennflow.workflow.asl_input import canonical  # noqa: E402
from pennflow.workflow.dag import LEVEL_CUTS, Dag, decompose, simulate  # noqa: E402
from pennflow.workflow.definition import validate_definition  # noqa: E402
from tests.asl_run import run_asl  # noqa: E402

# AWS Step Functions pricing, Standard workflows: $0.025 per 1,000 state transitions
# (https://aws.amazon.com/step-functions/pricing/, us-east-1 list price).
PRICE_PER_TRANSITION = 0.025 / 1000
SCALE_SIZES = (1000, 2000, 5000)


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


def compiled(dag: Dag, strategy: str) -> dict[str, Any]:
    """The definition the compiler writes with this strategy (no limit check: sizes are measured)."""
    return _Compiler(as_workflow(dag), CompileOptions(), decompose(dag, strategy)).compile()


# ------------------------------------------------------------------ makespan


def makespan_figures(samples: int = 100) -> list[str]:
    rng = random.Random(2)
    lines = [
        "nodes  SP share   joins (ASL run) mean, worst   level cuts mean, worst   Kahn levels mean, worst"
    ]
    for n in (10, 30, 100):
        ours, cuts, kahn, sp = [], [], [], 0
        for _ in range(samples):
            dag = random_dag(n, rng, mean_in_degree=rng.choice([1.0, 1.5, 2.5]))
            joined = decompose(dag)
            sp += joined.is_series_parallel
            durations = {node: rng.uniform(1, 10) for node in dag.nodes}
            critical = dag.critical_path(durations)
            # the compiled definition's own structure, joins included, timed state by state
            ours.append(run_asl(compiled(dag, "joins"), durations)[0] / critical)
            cuts.append(simulate(decompose(dag, LEVEL_CUTS).plan, durations) / critical)
            kahn.append(simulate(dag.kahn_plan(), durations) / critical)
        lines.append(
            f"{n:5d}  {sp / samples:7.0%}   {statistics.mean(ours):13.3f}, {max(ours):.3f}"
            f"   {statistics.mean(cuts):16.3f}, {max(cuts):.3f}   {statistics.mean(kahn):17.3f}, {max(kahn):.3f}"
        )
    return lines


# ------------------------------------------------------------------ run costs


def success_events(machine: dict[str, Any]) -> int:
    """History events of a successful run with no retry (Distributed Map items are child executions)."""
    total = 0
    states = machine["States"]
    name = machine["StartAt"]
    while name is not None:
        state = states[name]
        kind = state["Type"]
        total += 2 if kind not in ("Succeed", "Fail") else 1  # entered, exited
        if kind == "Task":
            resource = state["Resource"]
            total += 4 if resource.endswith((".sync", ".waitForTaskToken")) else 3
        elif kind == "Parallel":
            total += 2 + sum(success_events(branch) for branch in state["Branches"])
        elif kind == "Map":
            total += 4
        if state.get("End") or kind in ("Succeed", "Fail"):
            break
        name = state.get("Next")
    return total


def lambda_calls(machine: dict[str, Any]) -> int:
    """Lambda invocations on the success path outside Map items (finalize, verify, listings, joins)."""
    return _lambda_states(machine) - 1  # the failure path's finalize never runs on success


def _lambda_states(machine: dict[str, Any]) -> int:
    calls = 0
    for state in machine["States"].values():
        if state["Type"] == "Task" and "lambda:invoke" in state["Resource"]:
            calls += 1
        calls += sum(_lambda_states(branch) for branch in state.get("Branches", ()))
    return calls


def cost_figures() -> list[str]:
    rng = random.Random(5)
    lines = [
        "nodes  form        transitions/proc  Lambda calls/proc  history events/proc  size kB  $ per 1,000 runs"
    ]
    for n in (30, 100, 1000):
        dag = random_dag(n, rng)
        for strategy in ("joins", LEVEL_CUTS):
            machine = compiled(dag, strategy)
            transitions = count_transitions(machine, 0)
            size = len(canonical(machine).encode()) / 1000
            lines.append(
                f"{n:5d}  {strategy:10}  {transitions / n:16.2f}  {lambda_calls(machine) / n:17.2f}"
                f"  {success_events(machine) / n:19.2f}  {size:7.0f}  {transitions * PRICE_PER_TRANSITION * 1000:16.2f}"
            )
    return lines


# ------------------------------------------------------------------ scale


def _interleaved_best(jobs: dict[int, Any], repeats: int) -> dict[int, float]:
    """The best of ``repeats`` CPU times of each job (this process's, so other work on a shared
    machine does not count), the sizes taking turns in every round."""
    best = dict.fromkeys(jobs, math.inf)
    for _ in range(repeats):
        for n, job in jobs.items():
            start = time.process_time()
            job()
            best[n] = min(best[n], time.process_time() - start)
    return best


def scale_figures() -> list[str]:
    rng = random.Random(1)
    dags = {n: random_dag(n, rng) for n in SCALE_SIZES}
    workflows = {n: as_workflow(dag) for n, dag in dags.items()}
    plans = {n: decompose(dag) for n, dag in dags.items()}
    dec = _interleaved_best({n: (lambda dag=dag: decompose(dag)) for n, dag in dags.items()}, 9)
    com = _interleaved_best(
        {n: (lambda n=n: _Compiler(workflows[n], CompileOptions(), plans[n]).compile()) for n in SCALE_SIZES},
        3,
    )
    lines = ["nodes  decompose_cpu_s  compile_cpu_s  size_MB (over 1 MB: refused, or level cuts if they fit)"]
    for n in SCALE_SIZES:
        size = len(canonical(_Compiler(workflows[n], CompileOptions(), plans[n]).compile()).encode())
        lines.append(f"{n:5d}  {dec[n]:15.3f}  {com[n]:13.3f}  {size / 1_048_576:7.2f}")
    first, last = SCALE_SIZES[0], SCALE_SIZES[-1]
    span = math.log(last / first)
    lines.append(
        f"growth exponent {first:,} -> {last:,}: decompose {math.log(dec[last] / dec[first]) / span:.2f}, "
        f"compile {math.log(com[last] / com[first]) / span:.2f} (n log n here: "
        f"{math.log(last * math.log(last) / (first * math.log(first))) / span:.2f})"
    )
    return lines


def main() -> None:
    print("== makespan / critical path, random DAGs, random durations U(1, 10) ==")
    print("\n".join(makespan_figures()))
    print()
    print("== a successful run, per processor: joins against level cuts (no Map items, no retries) ==")
    print("\n".join(cost_figures()))
    print()
    print("== decompose and compile (no limit check) at scale ==")
    print("\n".join(scale_figures()))


if __name__ == "__main__":
    main()
