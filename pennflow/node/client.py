"""The CLI against a deployed compute node: SigV4-signed requests to its REST API (IAM auth).

    client = NodeClient(node_url())          # --node-url, --node NAME, $PENNFLOW_NODE_URL, or the stack's ApiUrl
    accepted = client.submit("workflow.yaml", dataset="N:dataset:...", params={"WINDOW": "30"})
    for run in client.watch(accepted["runId"]):
        ...

Requests are signed with the caller's AWS credentials (the usual profile/environment chain) by
botocore's ``SigV4Auth`` for the service ``execute-api``. An API error becomes a
:class:`RemoteError` carrying the API's own JSON message; the commands print it, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from pennflow.node.address import DEFAULT_NODE, ENV_NODE, ENV_NODE_URL, URL_OUTPUT, stack_name

SERVICE = "execute-api"
TIMEOUT_SECONDS = 30
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})
DOWNLOAD_CHUNK = 1 << 20
NO_REGION = "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or a region in your AWS profile"
NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_PROFILE (a profile from aws configure or SSO), "
    "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


class RemoteError(Exception):
    """A refused request (the API's error message and fields) or an unreachable node."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str = "", fields: Sequence[dict] = ()
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.fields = list(fields)

    @property
    def is_client_error(self) -> bool:
        return self.status is not None and 400 <= self.status < 500

    def lines(self) -> list[str]:
        """The message, then one line per field (or definition fault) the API named."""
        details = []
        for field in self.fields:
            where = f"{field.get('in', 'body')} {field.get('field', '?')}"
            details.append(f"  - {where}: {field.get('message', '')}")
        return [self.message, *details]

    @classmethod
    def from_response(cls, response: Any) -> RemoteError:
        try:
            error = response.json()["error"]
            return cls(
                error.get("message") or response.reason,
                status=response.status_code,
                code=error.get("code", ""),
                fields=error.get("fields") or [],
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            # Not the API's own error (API Gateway's 403 {"message": ...}, a proxy's HTML page).
            text = (response.text or "").strip()
            with contextlib.suppress(ValueError, AttributeError):
                text = json.loads(text).get("message", text)
            return cls(
                f"HTTP {response.status_code}: {text[:500] or response.reason}", status=response.status_code
            )


class NodeClient:
    """Signed requests to one node's API; ``session`` is a boto3 Session (default: a new one)."""

    def __init__(self, url: str, session: Any = None, *, region: str | None = None, http: Any = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RemoteError(
                f"not a node URL: {url!r} (expected https://<api>.execute-api.<region>.amazonaws.com/<stage>/)"
            )
        self.url = url.rstrip("/")
        self._session = session
        self._region = region
        self._http = http

    # ------------------------------------------------------------ API

    def register(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/workflows", body=definition)

    def start(self, request: Mapping[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/runs", body=request, headers=headers)

    def submit(
        self,
        file: str | Path,
        dataset: str | None = None,
        params: Mapping[str, str] | None = None,
        *,
        packages: Sequence[str] = (),
        layers: Sequence[str] = (),
        dry_run: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Register the definition in ``file`` (a no-op when unchanged), then start a run of it.

        Raises ``pennflow.workflow.definition.DefinitionError`` before any request when the file is invalid.
        The start carries an Idempotency-Key (a new one unless given), so retrying it is safe.
        """
        from pennflow.workflow.definition import load_definition

        workflow = load_definition(file)
        self.register(workflow.model_dump(mode="json", by_alias=True, exclude_none=True))
        request: dict[str, Any] = {"workflow": workflow.name, "params": dict(params or {})}
        if dataset:
            request["datasetId"] = dataset
        if packages:
            request["packageIds"] = list(packages)
        if layers:
            request["layers"] = list(layers)
        if dry_run:
            request["dryRun"] = True
        return self.start(request, idempotency_key or str(uuid.uuid4()))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/runs/{quote(run_id, safe='')}")

    def list_runs(self, **query: Any) -> dict[str, Any]:
        return self.request("GET", "/runs", query={k: v for k, v in query.items() if v is not None})

    def cancel(self, run_id: str) -> dict[str, Any]:
        # An empty JSON object: the stage validates every POST body as one.
        return self.request("POST", f"/runs/{quote(run_id, safe='')}/cancel", body={})

    def rerun(self, run_id: str) -> dict[str, Any]:
        return self.request("POST", f"/runs/{quote(run_id, safe='')}/rerun", body={})

    def logs(
        self, run_id: str, processor: str | None = None, next_token: str | None = None
    ) -> dict[str, Any]:
        """One page of a run's logs: archived objects (presigned URLs) or live events with a nextToken."""
        query = {"processor": processor, "nextToken": next_token}
        return self.request(
            "GET", f"/runs/{quote(run_id, safe='')}/logs", query={k: v for k, v in query.items() if v}
        )

    def results(self, run_id: str, cursor: str | None = None) -> dict[str, Any]:
        """One page of a run's result objects, each with a short-lived presigned GET URL."""
        query = {"cursor": cursor} if cursor else None
        return self.request("GET", f"/runs/{quote(run_id, safe='')}/results", query=query)

    def list_layers(self) -> dict[str, Any]:
        return self.request("GET", "/layers")

    def get_layer(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/layers/{quote(name, safe='')}")

    def create_layer(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/layers", body=body)

    def build_layer(self, name: str) -> dict[str, Any]:
        return self.request("POST", f"/layers/{quote(name, safe='')}/build", body={})

    def populate_layer(self, name: str, dataset: str, packages: Sequence[str] = ()) -> dict[str, Any]:
        body: dict[str, Any] = {"datasetId": dataset}
        if packages:
            body["packageIds"] = list(packages)
        return self.request("POST", f"/layers/{quote(name, safe='')}/populate", body=body)

    def delete_layer(self, name: str) -> dict[str, Any]:
        return self.request("DELETE", f"/layers/{quote(name, safe='')}")

    def download(self, url: str, destination: Path) -> int:
        """Fetch a presigned URL (no signing: the URL carries its own) to ``destination``; bytes written."""
        import requests

        partial = destination.with_name(destination.name + ".part")
        try:
            with (self._http or requests).get(url, stream=True, timeout=TIMEOUT_SECONDS) as response:
                if response.status_code >= 400:
                    raise RemoteError(
                        f"download of {destination.name} refused: HTTP {response.status_code} "
                        "(the link may have expired: run the command again)",
                        status=response.status_code,
                    )
                written = 0
                with open(partial, "wb") as out:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK):
                        out.write(chunk)
                        written += len(chunk)
        except requests.RequestException as exc:
            raise RemoteError(f"cannot download {destination.name}: {exc}") from None
        partial.replace(destination)
        return written

    def watch(
        self,
        run_id: str,
        interval: float = 10.0,
        *,
        timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[dict[str, Any]]:
        """Yield the run each time its status or a processor's changes, until it has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            run = self.get_run(run_id)
            seen = (
                run.get("status"),
                tuple((s.get("processorId"), s.get("status")) for s in run.get("steps", [])),
            )
            if seen != last:
                last = seen
                yield run
            if run.get("status") in TERMINAL:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise RemoteError(f"run {run_id} is still {run.get('status')} after {timeout:g} s")
            sleep(interval)

    # ------------------------------------------------------------ signing

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = self.url + path
        if query:
            url += "?" + urlencode(query, quote_via=quote)  # encoded once, so what is signed is what is sent
        data = None if body is None else json.dumps(body).encode()
        request = AWSRequest(
            method=method, url=url, data=data, headers={"Accept": "application/json", **(headers or {})}
        )
        if data is not None:
            request.headers["Content-Type"] = "application/json"
        SigV4Auth(self._credentials(), SERVICE, self.region).add_auth(request)
        import requests

        try:
            response = (self._http or requests).request(
                method, url, data=data, headers=dict(request.headers.items()), timeout=TIMEOUT_SECONDS
            )
        except requests.RequestException as exc:
            raise RemoteError(f"cannot reach the node at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise RemoteError.from_response(response)
        try:
            return response.json()
        except ValueError:
            raise RemoteError(f"the node answered {method} {path} with something other than JSON") from None

    @property
    def session(self) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.Session()
        return self._session

    @property
    def region(self) -> str:
        region = self._region or region_from_url(self.url) or self.session.region_name
        if not region:
            raise RemoteError(NO_REGION)
        return region

    def _credentials(self) -> Any:
        credentials = self.session.get_credentials()
        if credentials is None:
            raise RemoteError(NO_CREDENTIALS)
        return credentials.get_frozen_credentials()


def region_from_url(url: str) -> str | None:
    match = _REGION_IN_HOST.search(urlsplit(url).hostname or "")
    return match.group(1) if match else None


def node_url(
    explicit: str | None = None,
    *,
    node: str | None = None,
    stack: str | None = None,
    session: Any = None,
) -> str:
    """``--node-url``; else the ``ApiUrl`` output of ``--stack`` or of ``--node NAME``'s stack; else
    ``$PENNFLOW_NODE_URL``; else the stack of ``$PENNFLOW_NODE`` (default ``pennflow``)."""
    if explicit:
        return explicit
    if not (node or stack) and os.environ.get(ENV_NODE_URL):
        return os.environ[ENV_NODE_URL]
    name = node or os.environ.get(ENV_NODE) or DEFAULT_NODE
    stack = stack or stack_name(name)
    hint = f"give --node NAME (the nodeName it was deployed with) or --node-url, or set {ENV_NODE_URL}"
    if session is None:
        import boto3

        session = boto3.Session()
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except NoRegionError:
        raise RemoteError(f"{NO_REGION} (to find node stack {stack!r}); or {hint}") from None
    except NoCredentialsError:
        raise RemoteError(NO_CREDENTIALS) from None
    except ClientError as exc:
        message = exc.response["Error"].get("Message", str(exc))
        if "does not exist" in message:
            where = f" in {session.region_name}" if session.region_name else ""
            raise RemoteError(f"no node stack {stack!r}{where}: {hint}") from None
        raise RemoteError(f"cannot read stack {stack!r}: {message}; {hint}") from None
    except BotoCoreError as exc:
        raise RemoteError(f"cannot read stack {stack!r}: {exc}; {hint}") from None
    for output in stacks[0].get("Outputs", []) if stacks else []:
        if output.get("OutputKey") == URL_OUTPUT:
            return output["OutputValue"]
    raise RemoteError(f"stack {stack!r} has no {URL_OUTPUT} output: is it a pennflow node? {hint}")
