"""Tell the node's notification topic that a run ended (e-mail and webhook subscribers hear it).

Called once per run, when finalize ends it; a failed publish is logged and never fails the finalize.
"""

from __future__ import annotations

import logging

from pennflow.aws import client as aws_client
from pennflow.aws.arns import execution_console_url
from pennflow.node.lifecycle import Node
from pennflow.workflow.run_end import RunEnded
from pennflow.workflow.runs import RunRecord

log = logging.getLogger(__name__)


def publish_run_end(node: Node, run: RunRecord) -> RunEnded | None:
    topic = node.config.notify_topic_arn
    if not topic:
        return None
    console = execution_console_url(run.execution_arn) if run.execution_arn else None
    message = RunEnded.of(run, console_url=console, remote=True)
    try:
        (node.sns_client or aws_client("sns")).publish(
            TopicArn=topic,
            Subject=message.subject(),
            # JSON for the webhook function, the text for e-mail: SNS sends each protocol its own.
            MessageStructure="json",
            Message=_per_protocol(message),
            MessageAttributes={
                "status": {"DataType": "String", "StringValue": message.status},
                "workflow": {"DataType": "String", "StringValue": message.workflow},
            },
        )
    except Exception:
        log.exception("publishing the end of run %s failed; the run is finalized all the same", run.run_id)
        return None
    return message


def _per_protocol(message: RunEnded) -> str:
    import json

    body = message.model_dump_json(by_alias=True)
    return json.dumps({"default": body, "lambda": body, "email": message.text()})


# ------------------------------------------------------------------ the webhook subscriber

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_SECONDS = 10


class WebhookFailed(RuntimeError):
    """Every attempt failed: the invocation fails, Lambda retries it, then it goes to the DLQ."""


def webhook_url(secret_arn: str, secrets: object = None) -> str:
    """The webhook URL the owner stored in the node's webhook secret (the URL, or {"url": ...})."""
    import json

    value = (secrets or aws_client("secretsmanager")).get_secret_value(SecretId=secret_arn)["SecretString"]
    value = value.strip()
    if value.startswith("{"):
        value = str(json.loads(value).get("url", ""))
    if not value.startswith("https://"):
        raise ValueError("the webhook secret holds no https:// URL: put the URL in it (see README)")
    return value


def deliver(message: RunEnded, url: str, *, http: object = None, sleep=None) -> int:
    """POST the Slack-compatible JSON, retrying a failed or 5xx/429 answer with backoff; returns the
    status. A 4xx other than 429 is not retried: the URL or the payload is wrong, retrying cannot help."""
    import time

    import requests

    session = http or requests
    pause = sleep or time.sleep
    last = "no attempt"
    for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
        try:
            response = session.post(url, json=message.slack(), timeout=WEBHOOK_TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}"
        else:
            if response.status_code < 300:
                return response.status_code
            last = f"HTTP {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code != 429:
                raise WebhookFailed(f"the webhook refused the message ({last}); not retried")
        if attempt < WEBHOOK_ATTEMPTS:
            pause(2 ** (attempt - 1))
    raise WebhookFailed(f"the webhook failed {WEBHOOK_ATTEMPTS} times (last: {last})")
