"""What Pennsieve's own processors read, with Pennsieve's names and meanings (DESIGN §3).

| Variable              | Meaning                                   | Local                        | AWS (ECS)                         |
|-----------------------|-------------------------------------------|------------------------------|-----------------------------------|
| INTEGRATION_ID        | the run (Pennsieve: the integration)      | the run id                   | container override ``$.run.id``   |
| EXECUTION_RUN_ID      | the run (Pennsieve: the execution run)    | the run id                   | container override ``$.run.id``   |
| PENNSIEVE_API_HOST    | api host                                  | the client's api host        | task definition (node setting)    |
| PENNSIEVE_API_HOST2   | api2 host                                 | the client's api2 host       | task definition (node setting)    |
| ENVIRONMENT           | where it runs                             | ``local``                    | task definition (node setting)    |
| REGION                | AWS region                                | AWS_REGION, else empty       | task definition (the node's)      |
| DEPLOYMENT_MODE       | network mode: basic, secure, compliant    | empty (Pennsieve: local)     | task definition (node setting)    |
| ORGANIZATION_ID       | the workflow's organizationId, else the   | the credentials' organization| override (workflow) or task       |
|                       | organization of the Pennsieve credentials |                              | definition (node)                 |
| SESSION_TOKEN         | a Cognito access token for the run        | minted per processor start   | task definition ``secrets``: the  |
|                       |                                           | from the user's credentials  | slot's parameter, written at lease|

Tokens never travel in state input, container overrides, run records or logs, and the API key and
secret never reach a processor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pennflow.workflow.definition import Workflow

DEFAULT_API_HOST = "https://api.pennsieve.io"
DEFAULT_API2_HOST = "https://api2.pennsieve.io"
SESSION_TOKEN = "SESSION_TOKEN"
RUN_VARIABLES = ("INTEGRATION_ID", "EXECUTION_RUN_ID")
DEPLOYMENT_MODES = ("basic", "secure", "compliant")


@dataclass(frozen=True)
class PennsieveNodeEnvironment:
    """The node-wide half: the same for every run on a node (on AWS, it lives in task definitions)."""

    api_host: str
    api_host2: str
    environment: str
    region: str = ""
    deployment_mode: str = ""
    organization_id: str = ""

    def variables(self) -> dict[str, str]:
        return {
            "PENNSIEVE_API_HOST": self.api_host,
            "PENNSIEVE_API_HOST2": self.api_host2,
            "ENVIRONMENT": self.environment,
            "REGION": self.region,
            "DEPLOYMENT_MODE": self.deployment_mode,
            "ORGANIZATION_ID": self.organization_id,
        }

    @classmethod
    def local(
        cls, api_host: str, api_host2: str, organization_id: str = "", env: Mapping[str, str] | None = None
    ) -> PennsieveNodeEnvironment:
        env = os.environ if env is None else env
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
        return cls(api_host, api_host2, "local", region, "", organization_id)


def hosts_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(api, api2) as this machine names them, else Pennsieve's production hosts (unvalidated: the
    Pennsieve client checks them, ``pennflow.pennsieve.settings.PennsieveHosts``)."""
    env = os.environ if env is None else env
    return (
        env.get("PENNSIEVE_API_HOST") or DEFAULT_API_HOST,
        # PENNSIEVE_API_HOST2 is Pennsieve's own name for it (what its processors read)
        env.get("PENNSIEVE_API2_HOST") or env.get("PENNSIEVE_API_HOST2") or DEFAULT_API2_HOST,
    )


def run_variables(workflow: Workflow, run_id: str) -> dict[str, str]:
    """The run's half: what changes per run (on AWS, in container overrides; never a token)."""
    env = dict.fromkeys(RUN_VARIABLES, run_id)
    if workflow.organization_id:
        env["ORGANIZATION_ID"] = workflow.organization_id
    return env


def pennsieve_environment(
    workflow: Workflow, run_id: str, node: PennsieveNodeEnvironment, session_token: str | None = None
) -> dict[str, str]:
    env = {**node.variables(), **run_variables(workflow, run_id)}
    if session_token:
        env[SESSION_TOKEN] = session_token
    return env
