"""Starting wide workflows on a fresh slot: prepare invocations and the longest one, at the account's rate.

RegisterTaskDefinition is throttled to about one call a second, so the time a preparation takes is
set by that rate, not by this machine: a clock advanced by 1 s per RegisterTaskDefinition and
0.1 s per DescribeTaskDefinition stands in for it, while every other call (DynamoDB, ECS, Step
Functions, all on moto) is real code. Each prepare invocation gets prepare's 120 s Lambda timeout on
that clock, as ``context.get_remaining_time_in_millis()`` would give it.

Side by side for 20, 100 and 300 processors: the preparation handed on across invocations (the node
now) and one invocation doing it all (before: it ran past the timeout and lost the slot).

Run: python benchmarks/prepare_handover.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moto import mock_aws  # noqa: E402

from pennflow import aws  # noqa: E402
from pennflow.node.lifecycle import prepare_run  # noqa: E402
from pennflow.node.resume import TimeBudget  # noqa: E402
from pennflow.workflow.definition import Workflow  # noqa: E402
from tests.integration.aws_fixtures import build_moto_node  # noqa: E402

TIMEOUT = 120.0  # prepare's Lambda timeout
REGISTER, DESCRIBE = 1.0, 0.1  # seconds each on the throttled clock
SIZES = (20, 100, 300)


def wide(processors: int) -> Workflow:
    steps = [
        {"id": f"p{i:03d}", "image": f"ghcr.io/x/step-{i:03d}:1", "dependsOn": ["recordings"]}
        for i in range(processors)
    ]
    return Workflow.model_validate(
        {"name": f"wide-{processors}", "processors": [{"id": "recordings", "type": "data-source"}, *steps]}
    )


def prepare(processors: int, *, handed_on: bool) -> dict[str, float]:
    clock = [0.0]
    pending: list[str] = []

    class Continuation:
        def resume(self, run_id: str) -> None:
            pending.append(run_id)

    with tempfile.TemporaryDirectory() as tmp, mock_aws():
        aws.reset_clients()
        moto = build_moto_node(Path(tmp) / "runs", slots=1)
        events = moto.node.task_definitions.ecs.meta.events
        events.register(
            "before-call.ecs.RegisterTaskDefinition", lambda **_: clock.__setitem__(0, clock[0] + REGISTER)
        )
        events.register(
            "before-call.ecs.DescribeTaskDefinition", lambda **_: clock.__setitem__(0, clock[0] + DESCRIBE)
        )
        workflow = wide(processors)
        moto.register(workflow)
        run = moto.create_run(workflow, dataset_id="N:dataset:1")
        node = replace(moto.node, continuation=Continuation())
        pending.append(run.run_id)
        invocations, longest, outcome = 0, 0.0, ""
        while pending:
            started = clock[0]
            budget = (
                TimeBudget(lambda started=started: TIMEOUT - (clock[0] - started))
                if handed_on
                else TimeBudget()
            )
            outcome = prepare_run(pending.pop(0), replace(node, budget=budget)).outcome
            invocations += 1
            longest = max(longest, clock[0] - started)
        slot_kept = moto.node.slots.get("slot-00").run_id == run.run_id
        aws.reset_clients()
    return {
        "registrations": len(moto.registrations),
        "invocations": invocations,
        "longest": longest,
        "ok": outcome == "started" and slot_kept and longest <= TIMEOUT,
    }


def main() -> int:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ.setdefault(name, "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    print(f"cores: {os.cpu_count()}; clock: {REGISTER:g} s per registration, prepare timeout {TIMEOUT:g} s")
    print(
        f"{'procs':>6} {'registered':>10} {'invocations':>11} {'longest s':>10} {'one-shot s':>10} {'one-shot':>10}"
    )
    met = True
    for size in SIZES:
        ours = prepare(size, handed_on=True)
        before = prepare(size, handed_on=False)
        fits = before["longest"] <= TIMEOUT
        print(
            f"{size:>6} {ours['registrations']:>10} {ours['invocations']:>11} {ours['longest']:>10.1f} "
            f"{before['longest']:>10.1f} {'fits' if fits else 'times out':>10}"
        )
        met = met and ours["ok"] and ours["registrations"] == size
    print(
        f"goal every invocation <= {TIMEOUT:g} s, each task definition registered once: {'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
