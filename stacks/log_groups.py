"""Log groups of the node: every one has the retention the settings ask for."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.settings import LOG_RETENTION_DAYS, NodeSettings

# `logs.RetentionDays` lists the same periods as the settings, in the same order (INFINITE last).
_RETENTION = dict(zip(LOG_RETENTION_DAYS, list(logs.RetentionDays)[: len(LOG_RETENTION_DAYS)], strict=True))


def retention(days: int) -> logs.RetentionDays:
    return _RETENTION[days]


def node_log_group(
    scope: Construct, construct_id: str, settings: NodeSettings, *, name: str | None = None
) -> logs.LogGroup:
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=name,
        retention=retention(settings.retention_days.logs),
        removal_policy=RemovalPolicy.DESTROY,  # logs outlive nothing the user keeps; S3 holds the archive
    )
