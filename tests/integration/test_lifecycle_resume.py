"""Large workflows start: task-definition registration spread over prepare invocations, on moto.

The fake clock makes each RegisterTaskDefinition cost one second (the account's sustained rate)
and each DescribeTaskDefinition a tenth of one; every prepare invocation gets prepare's 120 s,
measured on that clock, as ``context.get_remaining_time_in_millis()`` would measure it.
"""

from __future__ import annotations

from dataclasses import replace

import boto3
import pytest

from pennflow.node.cancel import cancel_run
from pennflow.node.lifecycle import Node, prepare_run
from pennflow.node.resume import AsyncPrepare, TimeBudget
from pennflow.workflow.definition import Workflow
from pennflow.workflow.runs import Status
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import REGION, MotoNode, build_moto_node

mocked_aws = aws_fixtures.mocked_aws

PREPARE_TIMEOUT = 120.0  # seconds, prepare's Lambda timeout
REGISTER_SECONDS = 1.0
DESCRIBE_SECONDS = 0.1
PROCESSORS = 100


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def invocation_budget(self) -> TimeBudget:
        started = self.now
        return TimeBudget(lambda: PREPARE_TIMEOUT - (self.now - started))


class Handovers:
    """The continuation port: records the runs handed on, as the async invocations would carry them."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    def resume(self, run_id: str) -> None:
        self.pending.append(run_id)


def hundred_processors() -> Workflow:
    steps = [
        {"id": f"p{i:03d}", "image": f"ghcr.io/x/step-{i:03d}:1", "dependsOn": ["recordings"]}
        for i in range(PROCESSORS)
    ]
    return Workflow.model_validate(
        {"name": "wide", "processors": [{"id": "recordings", "type": "data-source"}, *steps]}
    )


@pytest.fixture
def node_and_clock(mocked_aws, tmp_path) -> tuple[MotoNode, FakeClock, Handovers]:
    moto = build_moto_node(tmp_path / "runs", slots=1)
    clock = FakeClock()
    events = moto.node.task_definitions.ecs.meta.events
    events.register("before-call.ecs.RegisterTaskDefinition", lambda **_: clock.advance(REGISTER_SECONDS))
    events.register("before-call.ecs.DescribeTaskDefinition", lambda **_: clock.advance(DESCRIBE_SECONDS))
    handovers = Handovers()
    moto.node = replace(moto.node, continuation=handovers)
    return moto, clock, handovers


def create_run(moto: MotoNode, workflow: Workflow):
    return moto.create_run(workflow, dataset_id="N:dataset:1")  # the store's create, as the API's


def invoke_prepare(node: Node, clock: FakeClock, run_id: str):
    """One prepare invocation: its own 120 s budget; returns the result and the seconds it took."""
    started = clock.now
    result = prepare_run(run_id, replace(node, budget=clock.invocation_budget()))
    return result, clock.now - started


def registered_revisions() -> list[str]:
    ecs = boto3.client("ecs", region_name=REGION)
    pages = ecs.get_paginator("list_task_definitions").paginate()
    return [arn for page in pages for arn in page["taskDefinitionArns"]]


def test_a_hundred_processor_workflow_starts_on_a_fresh_slot_within_the_prepare_timeout(
    node_and_clock,
) -> None:
    moto, clock, handovers = node_and_clock
    workflow = hundred_processors()
    moto.register(workflow)
    run = create_run(moto, workflow)

    first, took = invoke_prepare(moto.node, clock, run.run_id)

    assert took <= PREPARE_TIMEOUT - 15  # stopped with time to spare, not killed by the timeout
    assert first.outcome == "preparing" and first.slot_id == "slot-00"
    assert handovers.pending == [run.run_id]
    lease = moto.node.slots.get("slot-00")
    assert lease.run_id == run.run_id, "the slot stays with the run between invocations"
    waiting = moto.store.get_run(run.run_id)
    assert waiting.status is Status.NOT_STARTED and "preparing in slot-00" in waiting.reason
    assert [q.run_id for q in moto.node.slots.queued()] == [run.run_id]
    done_first = len(moto.registrations)
    assert 50 < done_first < PROCESSORS and len(lease.task_definitions) == done_first

    invocations = 1
    result = first
    while handovers.pending:
        invocations += 1
        result, took = invoke_prepare(moto.node, clock, handovers.pending.pop(0))
        assert took <= PREPARE_TIMEOUT
        assert moto.node.slots.get("slot-00").leased_at == lease.leased_at, "one lease throughout"
        assert invocations <= 3

    assert invocations == 2 and result.outcome == "started"
    started = moto.store.get_run(run.run_id)
    assert started.status is Status.STARTED and started.reason is None and started.execution_arn
    assert moto.node.slots.queued() == []
    # Each processor's task definition was registered once, and the run uses exactly those.
    assert len(moto.registrations) == len(set(moto.registrations)) == PROCESSORS
    revisions = registered_revisions()
    assert len(revisions) == PROCESSORS and all(arn.endswith(":1") for arn in revisions)
    assert sorted(moto.node.slots.get("slot-00").run_task_definitions.values()) == sorted(revisions)


def test_a_run_arriving_during_the_handover_waits_and_the_half_prepared_run_goes_first(
    node_and_clock,
) -> None:
    moto, clock, handovers = node_and_clock
    wide = hundred_processors()
    moto.register(wide)
    first = create_run(moto, wide)
    assert invoke_prepare(moto.node, clock, first.run_id)[0].outcome == "preparing"
    later = create_run(moto, wide)

    # The later run's invocation serves the queue: it finishes the run that holds the slot.
    result, took = invoke_prepare(moto.node, clock, later.run_id)

    assert result.outcome == "queued" and took <= PREPARE_TIMEOUT
    assert moto.store.get_run(first.run_id).status is Status.STARTED
    assert moto.node.slots.get("slot-00").run_id == first.run_id
    assert [q.run_id for q in moto.node.slots.queued()] == [later.run_id]
    # The hand-over event arrives after that: nothing is left to do for it.
    assert invoke_prepare(moto.node, clock, handovers.pending.pop(0))[0].outcome == "skipped"
    assert len(moto.registrations) == PROCESSORS


class Killed(BaseException):
    """Lambda's timeout: the process stops mid-call, no except clause runs."""


def test_an_invocation_killed_mid_registration_is_resumed_by_the_retry_without_registering_again(
    node_and_clock,
) -> None:
    moto, clock, _ = node_and_clock
    workflow = hundred_processors()
    moto.register(workflow)
    run = create_run(moto, workflow)

    def kill_at_the_thirtieth(**_) -> None:  # registered, but not yet remembered on the slot item
        if len(moto.registrations) == 30:
            raise Killed

    moto.node.task_definitions.ecs.meta.events.register(
        "after-call.ecs.RegisterTaskDefinition", kill_at_the_thirtieth
    )
    with pytest.raises(Killed):
        prepare_run(run.run_id, moto.node)  # unlimited budget: nothing stops it before the kill
    assert moto.node.slots.get("slot-00").run_id == run.run_id
    assert moto.node.slots.queued() == []  # it was taken off the queue to be started
    assert len(moto.node.slots.get("slot-00").task_definitions) == 29

    moto.node.task_definitions.ecs.meta.events.unregister(
        "after-call.ecs.RegisterTaskDefinition", kill_at_the_thirtieth
    )
    retried = prepare_run(run.run_id, moto.node)  # Lambda's asynchronous retry of the same event

    assert retried.outcome == "started" and retried.slot_id == "slot-00"
    # The thirtieth was found with DescribeTaskDefinition, not registered a second time.
    assert len(moto.registrations) == len(set(moto.registrations)) == PROCESSORS
    revisions = registered_revisions()
    assert len(revisions) == PROCESSORS and all(arn.endswith(":1") for arn in revisions)


def test_cancelling_a_half_prepared_run_frees_its_slot(node_and_clock) -> None:
    moto, clock, _ = node_and_clock
    workflow = hundred_processors()
    moto.register(workflow)
    run = create_run(moto, workflow)
    assert invoke_prepare(moto.node, clock, run.run_id)[0].outcome == "preparing"

    assert cancel_run(run.run_id, moto.node) is Status.CANCELED

    assert moto.node.slots.get("slot-00").is_free
    assert moto.node.slots.queued() == []


def test_a_small_workflow_starts_in_one_invocation_without_a_handover(node_and_clock) -> None:
    moto, clock, handovers = node_and_clock
    workflow = Workflow.model_validate(
        {"name": "small", "processors": [{"id": "only", "image": "ghcr.io/x/only:1"}]}
    )
    moto.register(workflow)
    run = moto.create_run(workflow)
    assert invoke_prepare(moto.node, clock, run.run_id)[0].outcome == "started"
    assert handovers.pending == []


def test_the_budget_reads_the_lambda_context_and_the_handover_invokes_prepare_asynchronously() -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 30_000

    budget = TimeBudget.of_lambda(Context(), reserve=20.0)
    assert budget.limited and budget.seconds_left() == 30.0
    assert budget.allows(9.5) and not budget.allows(10.5)
    assert not TimeBudget.of_lambda(object()).limited and TimeBudget().allows(1e9)

    calls = []

    class Lambda:
        def invoke(self, **request) -> None:
            calls.append(request)

    AsyncPrepare("pennflow-prepare", client=Lambda()).resume("r-1")
    assert calls == [
        {"FunctionName": "pennflow-prepare", "InvocationType": "Event", "Payload": b'{"runId": "r-1"}'}
    ]
