"""Series-parallel workflows whose compiled bytes are pinned (tests/fixtures/asl/series-parallel.json).

The pins were written by the compiler before joins existed (re-pinned once for the cost-allocation
tags every RunTask now carries, and once when the failure path left the machine: no Catch, no
failure finalize or Fail state, so that a redrive re-runs the failed processor; each checked equal
but for that): a series-parallel workflow must still
compile to exactly those bytes. Regenerate only on purpose: python -m tests.sp_golden
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from pennflow.workflow.asl import compile_to_json
from pennflow.workflow.dag import Dag
from pennflow.workflow.definition import load_definition
from tests.dag_strategies import workflow_from_dag

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "asl" / "series-parallel.json"
EXAMPLES = (
    "workflows/eeg-quality.yaml",
    "workflows/eeg-quality.pennsieve.json",
    "tests/fixtures/definitions/diamond.yaml",
)
SEEDS = range(40)


def series_parallel(seed: int) -> Dag:
    """A random series-parallel DAG (series and parallel composition of single nodes), seeded."""
    rng = random.Random(seed)
    counter = iter(range(10_000))

    def build(budget: int):
        if budget <= 1 or rng.random() < 0.2:
            node = f"n{next(counter)}"
            return [node], [], [node], [node]
        left = rng.randint(1, budget - 1)
        a, b = build(left), build(budget - left)
        if rng.random() < 0.5:
            return a[0] + b[0], a[1] + b[1] + [(s, t) for s in a[3] for t in b[2]], a[2], b[3]
        return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]

    nodes, edges, _, _ = build(rng.randint(2, 40))
    rng.shuffle(nodes)
    return Dag.from_edges(nodes, edges)


def compiled_hashes() -> dict[str, str]:
    texts = {name: compile_to_json(load_definition(ROOT / name)) for name in EXAMPLES}
    texts.update(
        {
            f"series-parallel seed {seed}": compile_to_json(workflow_from_dag(series_parallel(seed)))
            for seed in SEEDS
        }
    )
    return {name: hashlib.sha256(text.encode()).hexdigest() for name, text in texts.items()}


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(compiled_hashes(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
