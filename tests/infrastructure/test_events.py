"""EventBridge: execution and task state changes of this node go to the status function."""

from __future__ import annotations


def rules(node) -> dict[str, dict]:
    return {
        r["Properties"]["EventPattern"]["source"][0]: r["Properties"]
        for r in node.resources("AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"]  # not the schedules (test_resume_schedule.py)
    }


def test_execution_rule_matches_the_node_state_machine_prefix(node):
    pattern = rules(node)["aws.states"]["EventPattern"]
    assert pattern["detail-type"] == ["Step Functions Execution Status Change"]
    (prefix,) = pattern["detail"]["stateMachineArn"]
    assert prefix["prefix"]["Fn::Join"][1][-1] == ":stateMachine:pennflow_"


def test_variant_prefix_is_concrete_for_a_fixed_environment(variant):
    pattern = rules(variant)["aws.states"]["EventPattern"]
    assert pattern["detail"]["stateMachineArn"] == [
        {"prefix": "arn:aws:states:eu-west-1:123456789012:stateMachine:lab_"}
    ]


def test_task_rule_matches_this_cluster_only(node):
    pattern = rules(node)["aws.ecs"]["EventPattern"]
    assert pattern["detail-type"] == ["ECS Task State Change"]
    cluster = node.logical_id(node.stack.compute.cluster)
    assert pattern["detail"] == {"clusterArn": [{"Fn::GetAtt": [cluster, "Arn"]}]}


def test_both_rules_target_status_with_retries_and_the_dlq(node):
    status = node.logical_id(node.stack.functions["status"])
    queue = node.logical_id(node.stack.functions.dead_letter_queue)
    for source in ("aws.states", "aws.ecs"):
        rule = rules(node)[source]
        (target,) = rule["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [status, "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}
        assert target["RetryPolicy"]["MaximumRetryAttempts"] == 8
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] == 6 * 3600
