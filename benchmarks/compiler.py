"""Compiler figures, measured side by side on the same DAGs in one run.

* makespan / critical path (mean, worst) of the compiler (joins, timed by running the compiled
  ASL's structure), of the previous compiler's level cuts and of Kahn levels, over random DAGs and
  random durations (a join's own latency counted as zero);
* per processor of a successful run: state transitions, Lambda calls and history events, joins
  against level cuts, and the run's transition cost at list price;
* at 1,000 to 5,000 nodes: decompose and compile (+ split into child machines) time and their growth
  exponent, one machine's size against the split's (child machines, the largest definition, the
  worst-case history of any execution), the largest payload, and what validate/compile answers.

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

from pennflow.workflow.asl import CompileError, CompileOptions, _Compiler, compile_machines  # noqa: E402
from pennflow.workflow.asl_input import canonical, largest_payload_estimate  # noqa: E402
from pennflow.workflow.asl_split import Split, split  # noqa: E402
from pennflow.workflow.dag import LEVEL_CUTS, Dag, decompose, simulate  # noqa: E402
from pennflow.workflow.definition import validate_definition  # noqa: E402
from pennflow.workflow.limits import worst_case_history  # noqa: E402
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
            total += 4 if resource.endswith((".sync", ".sync:2", ".waitForTaskToken")) else 3
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
    """A split workflow's run is its parent's execution and each child's: their figures are summed
    (a child's start is one Task state in its parent), and its size is its largest machine's."""
    rng = random.Random(5)
    lines = [
        "nodes  form        transitions/proc  Lambda calls/proc  history events/proc  size kB  "
        "machines  $ per 1,000 runs"
    ]
    for n in (30, 100, 1000):
        dag = random_dag(n, rng)
        for strategy in ("joins", LEVEL_CUTS):
            pieces = split(compiled(dag, strategy), CompileOptions())
            machines = [pieces.definition, *(part.definition for part in pieces.parts)]
            transitions = sum(count_transitions(m, 0) for m in machines)
            calls = lambda_calls(pieces.definition) + sum(_lambda_states(m) for m in machines[1:])
            events = sum(success_events(m) for m in machines)
            size = max(len(canonical(m).encode()) for m in machines) / 1000
            lines.append(
                f"{n:5d}  {strategy:10}  {transitions / n:16.2f}  {calls / n:17.2f}  {events / n:19.2f}"
                f"  {size:7.0f}  {len(machines):8d}  {transitions * PRICE_PER_TRANSITION * 1000:16.2f}"
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


def split_compile(workflow, plan) -> Split:
    """The compiler's machines for a plan (joins, split where one machine would pass a limit)."""
    return split(_Compiler(workflow, CompileOptions(), plan).compile(), CompileOptions())


def scale_figures() -> list[str]:
    rng = random.Random(1)
    dags = {n: random_dag(n, rng) for n in SCALE_SIZES}
    workflows = {n: as_workflow(dag) for n, dag in dags.items()}
    plans = {n: decompose(dag) for n, dag in dags.items()}
    dec = _interleaved_best({n: (lambda dag=dag: decompose(dag)) for n, dag in dags.items()}, 9)
    one = _interleaved_best(
        {n: (lambda n=n: _Compiler(workflows[n], CompileOptions(), plans[n]).compile()) for n in SCALE_SIZES},
        3,
    )
    com = _interleaved_best(
        {n: (lambda n=n: split_compile(workflows[n], plans[n])) for n in SCALE_SIZES},
        3,
    )
    lines = [
        "nodes  decompose_cpu_s  compile_cpu_s  compile+split_cpu_s  one_machine_MB  child_machines  largest_MB  "
        "worst_history_per_execution  largest_payload_KiB  validate/compile"
    ]
    for n in SCALE_SIZES:
        size = len(canonical(_Compiler(workflows[n], CompileOptions(), plans[n]).compile()).encode())
        pieces = split_compile(workflows[n], plans[n])
        machines = [pieces.definition, *(part.definition for part in pieces.parts)]
        largest = max(len(canonical(m).encode()) for m in machines)
        history = max(worst_case_history(m)[0] for m in machines)
        payload = largest_payload_estimate(workflows[n])
        try:
            compile_machines(workflows[n])
            verdict = "exit 0"
        except CompileError as exc:
            verdict = "exit 2: " + str(exc).split(";")[0][:70]
        lines.append(
            f"{n:5d}  {dec[n]:15.3f}  {one[n]:13.3f}  {com[n]:19.3f}  {size / 1_048_576:14.2f}  {len(pieces.parts):14d}"
            f"  {largest / 1_048_576:10.2f}  {history:27,d}  {payload / 1024:19.0f}  {verdict}"
        )
    first, last = SCALE_SIZES[0], SCALE_SIZES[-1]
    span = math.log(last / first)
    lines.append(
        f"growth exponent {first:,} -> {last:,}: decompose {math.log(dec[last] / dec[first]) / span:.2f}, "
        f"compile {math.log(one[last] / one[first]) / span:.2f}, compile+split {math.log(com[last] / com[first]) / span:.2f} (n log n here: "
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
    print("== decompose, compile and split at scale (the timings without the limit check) ==")
    print("\n".join(scale_figures()))


if __name__ == "__main__":
    main()
