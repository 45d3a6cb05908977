"""ARNs in the partition the node runs in: ``aws``, ``aws-cn`` (China) or ``aws-us-gov`` (GovCloud).

Never write ``arn:aws:`` by hand: take the partition from an ARN the node already has (its role,
its state machine) or from the region, through these helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

# The AWS console of each partition (China and GovCloud have their own hosts).
CONSOLE_HOSTS = {
    "aws": "{region}.console.aws.amazon.com",
    "aws-cn": "console.amazonaws.cn",
    "aws-us-gov": "console.amazonaws-us-gov.com",
}


@dataclass(frozen=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str

    def __str__(self) -> str:
        return f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:{self.resource}"


def parse(arn: str) -> Arn:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[1] or not parts[2]:
        raise ValueError(f"not an ARN: {arn!r}")
    return Arn(*parts[1:])


def partition_of(arn: str) -> str:
    return parse(arn).partition


@cache
def partition_for_region(region: str) -> str:
    """botocore's endpoint data knows every region's partition (cn-north-1 -> aws-cn)."""
    import boto3

    return boto3.session.Session().get_partition_for_region(region)


def build(service: str, region: str, account: str, resource: str, *, partition: str | None = None) -> str:
    """An ARN in the region's partition unless ``partition`` is given."""
    return str(Arn(partition or partition_for_region(region), service, region, account, resource))


def console_host(region: str, partition: str) -> str:
    return CONSOLE_HOSTS.get(partition, CONSOLE_HOSTS["aws"]).format(region=region)


def execution_console_url(arn: str) -> str:
    """The Step Functions console page of an execution, in its own region and partition."""
    parsed = parse(arn)
    host = console_host(parsed.region, parsed.partition)
    return f"https://{host}/states/home?region={parsed.region}#/v2/executions/details/{arn}"
