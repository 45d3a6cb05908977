"""Where the CLI finds a deployed node: ``--node-url``, else ``--node NAME`` (the URL output of that node's
CloudFormation stack), else ``$PENNFLOW_NODE_URL``, else the stack of ``$PENNFLOW_NODE`` (default
``pennflow``, the ``nodeName`` of cdk.json).

Names only, in a module of their own: the CLI's help shows them without importing the node's client.
"""

ENV_NODE_URL = "PENNFLOW_NODE_URL"
ENV_NODE = "PENNFLOW_NODE"
DEFAULT_NODE = "pennflow"
URL_OUTPUT = "ApiUrl"


def stack_name(node: str) -> str:
    """The node's stack, as ``stacks.entrypoint`` names it."""
    return f"{node}-node"


DEFAULT_STACK = stack_name(DEFAULT_NODE)
