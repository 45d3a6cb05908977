"""The join function with its role as synthesized: what a waiting state and a done signal make it do
is allowed, and the role reaches no further than the node's state machines and the join items.

IAM authorizes ``states:SendTaskSuccess`` against the state machine whose waiting task issued the
token (see ``tests/iam/actions.py``): the tier is told which one by the test that issues the token.
Here the tokens belong to a folder workflow's machine (``<node>_<name>``), an API-registered one
(``<node>-api_<name>``) and a split workflow's child (``<node>-api_<name>_part1``); a token of a
machine outside the node is refused, and so is any call the grant leaves out."""

from __future__ import annotations

import pytest

from pennflow.workflow.asl_split import part_name
from stacks import constants as C
from tests.iam.evaluator import Request, evaluate
from tests.iam.moto_node import IamNode
from tests.iam.recorder import issue_task_token
from tests.iam.template import ACCOUNT, REGION

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def machine(name: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"


def node_machines(node: IamNode) -> list[str]:
    folder = C.state_machine_prefix(node.node_name) + "eeg-quality"
    registered = C.api_state_machine_prefix(node.node_name) + "large"
    return [machine(folder), machine(registered), machine(part_name(registered, 1))]


def test_a_wait_and_its_release_are_allowed_for_each_kind_of_node_machine(iam_node: IamNode):
    for number, arn in enumerate(node_machines(iam_node)):
        run_id, token = f"run-join-{number}", issue_task_token(arn)
        waiting = iam_node.invoke(
            "join", {"action": "wait", "runId": run_id, "node": "c", "deps": ["b"], "token": token}
        )
        assert waiting["released"] == []
        done = iam_node.invoke("join", {"action": "done", "runId": run_id, "node": "b", "waiters": ["c"]})
        assert done == {"released": ["c"], "marked": True}  # SendTaskSuccess with the token, authorized
    assert iam_node.recorder.actions[iam_node.role("join")] == {
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "states:SendTaskSuccess",
    }


def test_the_role_reaches_no_machine_outside_the_node_and_no_other_table(iam_node: IamNode):
    role = iam_node.role("join")
    statements = iam_node.recorder.statements(role)
    joins = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{iam_node.name('JoinsJoinsTable')}"
    runs = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{iam_node.name('StorageRunsTable')}"

    def allowed(action: str, resource: str) -> bool:
        return evaluate(statements, Request(action, resource)).allowed

    for arn in node_machines(iam_node):
        assert allowed("states:SendTaskSuccess", arn), arn
        # nothing fails a waiter through its token: a failed dependency fails the Parallel instead
        assert not allowed("states:SendTaskFailure", arn)
    assert not allowed("states:SendTaskSuccess", machine("another-team_workflow"))
    assert not allowed("states:SendTaskSuccess", machine(f"{iam_node.node_name}x_workflow"))
    assert not allowed("states:StartExecution", node_machines(iam_node)[0])
    for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:BatchGetItem"):
        assert allowed(action, joins), action
        assert not allowed(action, runs), action
    for action in ("dynamodb:DeleteItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:UpdateItem"):
        assert not allowed(action, joins), action
