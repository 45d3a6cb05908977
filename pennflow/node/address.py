"""Where the CLI finds a deployed node: ``--node-url``, else this environment variable, else the URL
output of the node's CloudFormation stack.

Names only, in a module of their own: the CLI's help shows them without importing the node's client.
"""

ENV_NODE_URL = "PENNFLOW_NODE_URL"
DEFAULT_STACK = "PennflowNode"
URL_OUTPUT = "ApiUrl"
