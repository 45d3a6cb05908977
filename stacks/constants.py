"""Names, paths and defaults of the compute node, in one place.

Runtime code (lambdas/, pennflow/) reads the same values from the environment variables listed in
`ENV`, so a name changes here and nowhere else.
"""

from __future__ import annotations

from pennflow.workflow.registered import API_STATE_MACHINE_MARK, STATE_MACHINE_NAME_LIMIT

STACK_ID = "PennflowNode"
DEFAULT_NODE_NAME = "pennflow"
CONTEXT_KEY = "pennflow"  # the cdk.json context object users edit
NODE_TAG_KEY = "pennflow:node"  # tags every resource of the stack
SLOT_TAG_KEY = "pennflow:slot"

# Workflow definitions compiled into one state machine each at synth.
DEFAULT_WORKFLOWS_FOLDER = "workflows"
WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")

# EFS layout (DESIGN §4). Lambdas mount the /runs access point; each run slot is an access point of
# its own whose root is that slot's folder, so a task sees only the run leased to its slot.
RUNS_PATH = "/runs"
LAYERS_PATH = "/layers"
SLOTS_PATH = f"{RUNS_PATH}/slots"
POSIX_UID = "1000"
POSIX_GID = "1000"
FOLDER_PERMISSIONS = "750"
LAMBDA_RUNS_MOUNT = "/mnt/runs"
MAX_RUN_SLOTS = 50  # every slot's access point ARN is listed in the task roles' shared policy (size limit)
EFS_IA_AFTER_DAYS = 30  # EFS lifecycle: files move to Infrequent Access after 30 days without access

# Step Functions / ECS naming, shared with the API Lambda that creates state machines at runtime.
NODE_NAME_MAX = STATE_MACHINE_NAME_LIMIT - 64 - 1  # room for "<node>_" + a 64-char workflow name
ECS_SYNC_MANAGED_RULE = "StepFunctionsGetEventsForECSTaskRule"
SFN_SYNC_MANAGED_RULE = "StepFunctionsGetEventsForStepFunctionsExecutionRule"  # startExecution.sync(:2)


# Every name a node gives the resources its IAM policies match by pattern (functions, state machines,
# task-definition families, slot task roles) starts with "<nodeName>_". A node name is [a-z0-9-]
# only (stacks.settings), so it never holds the separator: "lab_*" can never match a name of node
# "lab-dev" ("lab-dev_..."), whereas "lab-*" would. Two nodes in one account grant each other nothing.
NODE_SEPARATOR = "_"


def node_prefix(node_name: str) -> str:
    return f"{node_name}{NODE_SEPARATOR}"


def state_machine_prefix(node_name: str) -> str:
    return node_prefix(node_name)


def api_state_machine_prefix(node_name: str) -> str:
    """Workflows registered through the API: a namespace no folder workflow's state machine can take."""
    return state_machine_prefix(node_name) + API_STATE_MACHINE_MARK


def task_family_prefix(node_name: str) -> str:
    return f"{node_prefix(node_name)}proc-"


# Notebook sessions (stacks/notebooks.py); the runtime's names are pennflow.node.notebook_runs' (a test
# checks they agree: the CDK app imports only the workflow compiler of pennflow).
NOTEBOOK_GROUP = "pennflow-notebook"  # RunTask's group of a session's task
NOTEBOOK_TAG_KEY = "pennflow:notebook"  # on a session's task: its run id
NOTEBOOK_ROLE_KIND = "notebook"  # <node>_<region>_<slot>-notebook
NOTEBOOK_TOKEN_PARAMETER = "notebook-token"  # a slot parameter's leaf
PORT_FORWARDING_DOCUMENT = "AWS-StartPortForwardingSession"


def notebook_family_prefix(node_name: str) -> str:
    """Notebook sessions' task definitions (pennflow.node.notebooks), content-addressed like processors'."""
    return f"{node_prefix(node_name)}nb-"


def slot_parameter_prefix(node_name: str) -> str:
    """SSM parameters of each run slot (the leased run's id and SESSION_TOKEN): <prefix><slot>/<leaf>."""
    return f"/pennflow/{node_name}/slots/"


def slot_id(index: int) -> str:
    return f"slot-{index:02d}"


def function_name(node_name: str, name: str) -> str:
    """Fixed names, so functions can name each other without a circular reference."""
    return f"{node_prefix(node_name)}{name.replace('_', '-')}"


# Each run slot has a processor and a built-in task role of its own (stacks.compute). Their names
# are fixed, so the runtime derives a slot's role ARNs from one template instead of a list (50 slots
# of ARNs would not fit in a function's 4 KB environment). IAM role names are global to the account,
# hence the region; "_" also ends the region, so one region's pattern never matches another's.
SLOT_ROLE_KINDS = ("processor", "builtin")


def slot_role_prefix(node_name: str, region: str) -> str:
    return f"{node_prefix(node_name)}{region}{NODE_SEPARATOR}"


def slot_role_name(node_name: str, region: str, slot: str, kind: str) -> str:
    return f"{slot_role_prefix(node_name, region)}{slot}-{kind}"


# Lambda functions: handler module per name (lambdas/<name>.py, function `handler`). `download` runs
# the data sources' Distributed Map batches (the compiler names it in every data-source state).
LAMBDA_NAMES = ("api", "prepare", "status", "finalize", "cancel", "resume", "list_batches", "download")
# These all may start queued runs when a slot frees (pennflow.node.lifecycle), so they share one
# role: the runs manager, the only principal allowed root on the file system. `resume` redrives a
# run (pennflow.node.redrive) and, on a schedule, frees the slots kept for resumes.
RUNS_MANAGER_LAMBDAS = ("prepare", "status", "finalize", "cancel", "resume")
LAMBDA_CODE_ROOT_ITEMS = ("pennflow", "lambdas")  # the only folders the asset carries
LAMBDA_ASSET_EXCLUDES = (
    "*",
    *(f"!{item}" for item in LAMBDA_CODE_ROOT_ITEMS),
    *(f"!{item}/**" for item in LAMBDA_CODE_ROOT_ITEMS),
    "**/__pycache__",
    "**/*.pyc",
)
# Third-party packages pennflow imports that the Powertools layer lacks (PyYAML, requests), built
# without Docker into this folder of the project (see DEPENDENCY_LAYER_BUILD) and shipped as a layer.
DEPENDENCY_LAYER_DIR = "build/lambda-deps"
DEPENDENCY_LAYER_BUILD = (
    "pip install --platform manylinux2014_aarch64 --implementation cp --python-version 3.12 "
    "--only-binary=:all: --target build/lambda-deps/python pyyaml requests"
)
LAMBDA_MEMORY_MB = 512
LAMBDA_TIMEOUT_SECONDS = {
    "api": 29,  # API Gateway's integration timeout
    "prepare": 120,
    # It finalizes every run that ends other than through the machine's last state (each failed run:
    # nothing in the machine catches a failure), so it gets finalize's time for the log archive.
    "status": 300,
    "finalize": 300,
    "cancel": 60,
    "resume": 60,
    "list_batches": 120,
    "download": 900,  # one batch of a dataset, planned by bytes
    "webhook": 29,
    "trigger_events": 60,
    "trigger_fire": 120,
    "layer_jobs": 60,  # starts a task or publishes a version; the long work runs in ECS
    "notify": 60,  # three webhook attempts of at most 10 s each, with their backoff
    "processor_builds": 60,  # one build's outcome: a digest, app.yml from S3, a log tail
    "notebooks": 60,  # one session's start (lease, task definition, RunTask), stop or end
    "join": 30,  # a few DynamoDB reads and writes and SendTaskSuccess calls (stacks/joins.py)
}
LAMBDA_MEMORY_OVERRIDES_MB = {"download": 1024}
# Functions attached to the VPC because they mount the runs access point (all but the API).
EFS_LAMBDAS = (*RUNS_MANAGER_LAMBDAS, "list_batches", "download")
# Reserved concurrency: bounds the writers that a burst of events or run starts could fan out.
RESERVED_CONCURRENCY = {"status": 10, "prepare": 5, "cancel": 2}
# Invoked asynchronously (EventBridge, or the API's fire-and-forget start and cancel): these get the DLQ,
# so an invocation that fails every retry is kept, not lost.
ASYNC_LAMBDAS = (
    "status",
    "prepare",
    "cancel",
    "resume",
    "trigger_events",
    "layer_jobs",
    "notify",
    "processor_builds",
    "notebooks",
)
ASYNC_RETRY_ATTEMPTS = 2
REDRIVE_DAYS = 14  # Step Functions redrives an execution up to 14 days after it ended
RELEASE_KEPT_SLOTS_EVERY = 15  # minutes between runs of the kept-slot cleanup (pennflow.node.redrive)
EVENT_MAX_AGE_HOURS = 6

# Powertools for AWS Lambda (Python) v3 public layer. AWS publishes the layer ARN of every release as
# a public SSM parameter per architecture and Python version; resolving it at deploy time gives the
# right account, partition and layer number for the deploy region, pinned to this release.
PYTHON_RUNTIME = "python3.12"
POWERTOOLS_VERSION = "3.37.0"
POWERTOOLS_LAYER_PARAMETER = f"/aws/service/powertools/python/arm64/{PYTHON_RUNTIME}/{POWERTOOLS_VERSION}"

METRICS_NAMESPACE = "pennflow"
RUN_COST_METRIC = (
    "RunCost"  # USD per run, dimensions service (the node) and workflow (lambdas/observability.py)
)
CUSTOM_METRICS = ("RunsStarted", "RunsSucceeded", "RunsFailed", "RunDuration", "ProcessorDuration")
# What lambdas/trigger_fire.py, webhook.py, layer_jobs.py and download.py count (the dashboard graphs each).
TRIGGER_METRICS = ("TriggeredRuns", "WebhookRejected")
LAYER_JOB_METRICS = ("LayerJobsStarted", "LayerVersionsPublished", "LayerJobsFailed")
DOWNLOAD_FILE_METRICS = ("DownloadedFiles", "VerifiedFiles")
DOWNLOAD_BYTES_METRIC = "DownloadedBytes"

# Layer jobs (pennflow.layers.jobs): build, populate and clean tasks of task definitions named
# "<node>_layer-<kind>", defined by the stack; they mount the /layers access point read-write here.
LAYERS_RW_MOUNT = "/mnt/layers-rw"
LAYER_JOBS_PREFIX = "layer-jobs/"  # job specs and manifests in the log archive bucket
LAYER_JOBS_LOG_PREFIX = "layers"  # log streams "layers/<container>/<task id>" in the processor log group
LAYER_BUILD_TASK = {"cpu": 1024, "memory": 4096}  # processors/builtin/layer_build/processor.yaml
LAYER_POPULATE_TASK = {"cpu": 1024, "memory": 2048}
LAYER_CLEAN_TASK = {"cpu": 256, "memory": 512}
LAYER_SIDECAR_MEMORY_MIB = 256  # the build's stage and report steps (built-in image)


def layer_job_family(node_name: str, kind: str = "") -> str:
    return f"{node_prefix(node_name)}layer-{kind}"


# DynamoDB key schema (the DynamoDB store uses the same names).
RUNS_PK = "run_id"
RUNS_SK = "sk"  # "RUN" or "STEP#<processor_id>"
RUNS_BY_WORKFLOW_INDEX = "by-workflow"
RUNS_BY_STATUS_INDEX = "by-status"
RUNS_BY_CONTENT_KEY_INDEX = "by-content-key"  # finds a succeeded run with the same content key
RUNS_WORKFLOW_ATTR = "workflow_name"
RUNS_STATUS_ATTR = "status"
RUNS_CREATED_ATTR = "created_at"
RUNS_CONTENT_KEY_ATTR = "content_key"
WORKFLOWS_PK = "name"
LAYERS_PK = "name"
PROCESSORS_PK = "processor_key"  # "<sourceUrl>#<tag>"
SLOTS_PK = "slot_id"
IDEMPOTENCY_PK = "id"  # Powertools idempotency defaults
IDEMPOTENCY_TTL_ATTR = "expiration"

# Triggers (pennflow/triggers/store.py uses the same key names).
TRIGGER_RULES_PK = "rule_id"
TRIGGER_BY_DATASET_INDEX = "by-dataset"
TRIGGER_DATASET_ATTR = "dataset_id"
TRIGGER_CREATED_ATTR = "created_at"
TRIGGER_STATE_PK = "pk"
TRIGGER_TTL_ATTR = "expires_at"
DATASET_EVENT_SOURCE = "pennflow.datasets"
DATASET_EVENT_DETAIL_TYPE = "Dataset Files Added"
WEBHOOK_PATH = "webhook"  # POST /webhook: public, HMAC-signed

# S3 layout.
RESULTS_PREFIX = "runs/"
RUN_MANIFEST_KEYS = f"{RESULTS_PREFIX}*/manifest.json"  # pennflow.data.datasource.manifest_key
LOG_ARCHIVE_KEYS = f"{RESULTS_PREFIX}*/logs/*"  # pennflow.node.finalize.archive_logs
ACCESS_LOGS_PREFIX = "access-logs/"
ACCESS_LOG_RETENTION_DAYS = 90
INFREQUENT_ACCESS_AFTER_DAYS = 30  # S3's minimum for STANDARD_IA
ABORT_MULTIPART_AFTER_DAYS = 7

# API Gateway stage throttling (requests per second, burst).
API_STAGE_NAME = "v1"
API_RATE_LIMIT = 50
API_BURST_LIMIT = 100

# Environment variables the Lambda functions receive (values are names and ids, never secrets).
ENV = {
    "node": "PENNFLOW_NODE_NAME",
    "runs_table": "RUNS_TABLE",
    "workflows_table": "WORKFLOWS_TABLE",
    "processors_table": "PROCESSORS_TABLE",
    # computeType lambda (stacks/lambda_compute.py): the processor functions' names and slot roles
    "processor_function_prefix": "PROCESSOR_FUNCTION_PREFIX",
    "processor_function_roles": "PROCESSOR_FUNCTION_ROLE_TEMPLATE",
    "slots_table": "SLOTS_TABLE",
    "idempotency_table": "IDEMPOTENCY_TABLE",
    "results_bucket": "RESULTS_BUCKET",
    "log_bucket": "LOG_ARCHIVE_BUCKET",
    "cluster": "CLUSTER_ARN",
    "processor_log_group": "PROCESSOR_LOG_GROUP",
    "execution_role": "TASK_EXECUTION_ROLE_ARN",
    # "arn:...:role/<node>_<region>_{slot}-{kind}": a slot's task roles (see slot_role_name)
    "slot_task_roles": "SLOT_TASK_ROLE_ARN_TEMPLATE",
    "file_system": "FILE_SYSTEM_ID",
    "runs_access_point": "RUNS_ACCESS_POINT_ID",
    "layers_access_point": "LAYERS_ACCESS_POINT_ID",
    "runs_mount": "RUNS_MOUNT",
    "run_slots": "RUN_SLOTS",
    "subnets": "TASK_SUBNET_IDS",
    "task_security_group": "TASK_SECURITY_GROUP_ID",
    "task_family_prefix": "TASK_FAMILY_PREFIX",
    "state_machine_prefix": "STATE_MACHINE_PREFIX",
    "state_machine_role": "STATE_MACHINE_ROLE_ARN",
    "state_machine_log_group": "STATE_MACHINE_LOG_GROUP_ARN",
    "pennsieve_secret": "PENNSIEVE_SECRET_ARN",
    "slot_parameter_prefix": "SLOT_PARAMETER_PREFIX",
    "pennsieve_api_host": "PENNSIEVE_API_HOST",
    "pennsieve_api2_host": "PENNSIEVE_API2_HOST",
    "pennsieve_environment": "PENNSIEVE_ENVIRONMENT",
    "pennsieve_organization_id": "PENNSIEVE_ORGANIZATION_ID",
    "deployment_mode": "DEPLOYMENT_MODE",
    "prepare_function": "PREPARE_FUNCTION_NAME",
    "cancel_function": "CANCEL_FUNCTION_NAME",
    "resume_function": "RESUME_FUNCTION_NAME",
    "failed_run_retention_days": "FAILED_RUN_RETENTION_DAYS",
    "finalize_function": "FINALIZE_FUNCTION_ARN",  # an ARN or a name: the node passes names
    "list_batches_function": "LIST_BATCHES_FUNCTION_ARN",
    "download_function": "DOWNLOAD_FUNCTION_ARN",
    "join_function": "JOIN_FUNCTION_ARN",  # a name, like the others the node passes
    "joins_table": "JOINS_TABLE",
    "layers_table": "LAYERS_TABLE",
    "builtin_image": "BUILTIN_IMAGE",
    "run_retention_days": "RUN_RETENTION_DAYS",
    "trigger_rules_table": "TRIGGERS_TABLE",
    "trigger_state_table": "TRIGGER_STATE_TABLE",
    "trigger_fire_queue": "TRIGGER_FIRE_QUEUE_URL",
    "webhook_secret": "WEBHOOK_SECRET_ARN",
    "layer_price_standard": "LAYER_PRICE_STANDARD_GB_MONTH",
    "layer_price_ia": "LAYER_PRICE_IA_GB_MONTH",
    "layer_ia_after_days": "LAYER_IA_AFTER_DAYS",
    "layer_jobs_function": "LAYER_JOBS_FUNCTION_NAME",
    "layer_build_task": "LAYER_BUILD_TASK_DEFINITION",
    "layer_populate_task": "LAYER_POPULATE_TASK_DEFINITION",
    "layer_clean_task": "LAYER_CLEAN_TASK_DEFINITION",
    "cost_prices": "COST_PRICES",
    "notify_topic": "NOTIFY_TOPIC_ARN",  # run ends (stacks/notifications.py, pennflow.node.run_end)
    "gpu_capacity_provider": "GPU_CAPACITY_PROVIDER",  # computeType gpu (stacks/gpu.py, pennflow.node.gpu)
    "gpu_instance_types": "GPU_INSTANCE_TYPES",
    "notify_webhook_secret": "WEBHOOK_URL_SECRET_ARN",
    # Notebook sessions (stacks/notebooks.py, pennflow.node.notebooks, pennflow.api.notebooks)
    "notebooks_function": "NOTEBOOKS_FUNCTION_NAME",
    "notebook_principals": "NOTEBOOK_PRINCIPALS",
    "notebook_image": "NOTEBOOK_IMAGE",
    "notebook_python": "NOTEBOOK_PYTHON",
    "notebook_idle_minutes": "NOTEBOOK_IDLE_MINUTES",
    "notebook_security_group": "NOTEBOOK_SECURITY_GROUP_ID",
    "notebook_log_group": "NOTEBOOK_LOG_GROUP",
    "notebook_family_prefix": "NOTEBOOK_FAMILY_PREFIX",
    "run_cost_ceiling": "RUN_COST_CEILING_USD",  # JSON: the cdk.json costPrices overrides (pennflow.workflow.cost)
}
