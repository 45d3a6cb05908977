"""Every AWS call made inside ``with recorder.as_role(role_id)`` is authorized against that role's
policies as synthesized, before moto sees it; a call the role may not make is refused with
AccessDenied, as AWS would, and recorded, so the test fails even if the code swallows the error.

The hook sits on botocore's ``BaseClient._make_api_call``: every client (the node's cached ones,
paginators, s3transfer's uploads) goes through it. The role belongs to the thread that entered
``as_role`` and to the pool threads it hands work to (the download pool, s3transfer), not to other
threads: the fake Pennsieve server's own AWS calls are not the node's.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import boto3
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.iam.actions import Call, UnmappedOperation, missing_key_request, requests_for
from tests.iam.evaluator import Request, evaluate
from tests.iam.template import REGION, NodeTemplate

Statements = list[dict[str, Any]]


@dataclass(frozen=True)
class Denial:
    role: str
    operation: str
    request: Request
    reason: str

    def __str__(self) -> str:
        return (
            f"AccessDenied: role {self.role} may not {self.request.action} on {self.request.resource} "
            f"(in {self.operation}; {self.reason})"
        )


class _MotoFacts:
    """What IAM knows of existing resources, read from moto outside any role."""

    def task_definition_roles(self, task_definition: str) -> list[str]:
        described = boto3.client("ecs", region_name=REGION).describe_task_definition(
            taskDefinition=task_definition
        )["taskDefinition"]
        return [described[k] for k in ("taskRoleArn", "executionRoleArn") if described.get(k)]

    def access_point_tags(self, access_point_id: str) -> dict[str, str]:
        points = boto3.client("efs", region_name=REGION).describe_access_points(AccessPointId=access_point_id)
        return {t["Key"]: t["Value"] for t in points["AccessPoints"][0].get("Tags", [])}

    def access_point_file_system(self, access_point_id: str) -> str:
        points = boto3.client("efs", region_name=REGION).describe_access_points(AccessPointId=access_point_id)
        return points["AccessPoints"][0]["FileSystemId"]

    def task_token_machine(self, task_token: str) -> str:
        if task_token not in _TASK_TOKENS:
            raise LookupError(f"task token {task_token[:24]!r} was not issued by the test (issue_task_token)")
        return _TASK_TOKENS[task_token]


# The state machine each task token a test issued belongs to (what IAM authorizes a callback against).
_TASK_TOKENS: dict[str, str] = {}


def issue_task_token(state_machine_arn: str) -> str:
    """A task token as a waiting state of ``state_machine_arn`` would hand out (opaque, unique)."""
    token = f"AQB{uuid.uuid4().hex}{uuid.uuid4().hex}"
    _TASK_TOKENS[token] = state_machine_arn
    return token


@dataclass
class AccessRecorder:
    template: NodeTemplate
    # Policies as synthesized; a test may replace a role's statements (to reintroduce a defect).
    overrides: dict[str, Statements] = field(default_factory=dict)
    denials: list[Denial] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)  # authorized requests per role
    actions: dict[str, set[str]] = field(default_factory=dict)  # distinct actions per role
    # Calls answered here once authorized, instead of by moto (e.g. Lambda invokes of the node's
    # functions, which the tests then run themselves): (service, operation) -> params -> response.
    responders: dict[tuple[str, str], Callable[[Mapping[str, Any]], Any]] = field(default_factory=dict)
    _local: threading.local = field(default_factory=threading.local)
    _statements: dict[str, Statements] = field(default_factory=dict)

    def statements(self, role: str) -> Statements:
        if role in self.overrides:
            return self.overrides[role]
        if role not in self._statements:
            self._statements[role] = self.template.role_statements(role)
        return self._statements[role]

    @contextlib.contextmanager
    def as_role(self, role: str) -> Iterator[None]:
        """Calls made inside (on any thread) run with ``role``'s permissions."""
        if role not in self.template.resources:
            raise KeyError(f"no role {role} in the template")
        previous = getattr(self._local, "role", None)
        self._local.role = role
        try:
            yield
        finally:
            self._local.role = previous

    @contextlib.contextmanager
    def installed(self) -> Iterator[AccessRecorder]:
        original = BaseClient._make_api_call
        submit = ThreadPoolExecutor.submit
        recorder = self

        def checked_call(client: BaseClient, operation: str, params: Mapping[str, Any]) -> Any:
            return recorder._call(original, client, operation, params)

        def submit_as_role(
            pool: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
        ) -> Any:
            role = getattr(recorder._local, "role", None)
            if role is None:
                return submit(pool, fn, *args, **kwargs)

            def run_as_role() -> Any:
                with recorder.as_role(role):
                    return fn(*args, **kwargs)

            return submit(pool, run_as_role)

        with (
            mock.patch.object(BaseClient, "_make_api_call", checked_call),
            mock.patch.object(ThreadPoolExecutor, "submit", submit_as_role),
        ):
            yield self

    def denials_text(self) -> str:
        return "\n".join([*map(str, self.denials), *self.unmapped])

    def assert_clean(self) -> None:
        assert not self.denials and not self.unmapped, "calls the synthesized roles do not allow:\n" + (
            self.denials_text()
        )

    # --- the hook ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _unchecked(self) -> Iterator[None]:
        previous = getattr(self._local, "unchecked", False)
        self._local.unchecked = True
        try:
            yield
        finally:
            self._local.unchecked = previous

    def _call(self, original: Callable[..., Any], client: BaseClient, operation: str, params: Any) -> Any:
        role = getattr(self._local, "role", None)
        if role is None or getattr(self._local, "unchecked", False):
            return original(client, operation, params)
        call = Call(client.meta.service_model.service_name, operation, params, client.meta.region_name)
        with self._unchecked():
            try:
                requests = requests_for(call, _MotoFacts())
            except UnmappedOperation as exc:
                self.unmapped.append(str(exc))
                raise
        for request in requests:
            self._authorize(role, operation, request)
        responder = self.responders.get((call.service, operation))
        if responder is not None:
            return responder(params)
        try:
            return original(client, operation, params)
        except ClientError as exc:
            if call.service == "s3" and operation in ("GetObject", "HeadObject") and _missing_key(exc):
                # Only a caller that may list the bucket learns that the key is missing.
                self._authorize(role, operation, missing_key_request(params["Bucket"], params["Key"]))
            raise

    def check(self, role: str, operation: str, request: Request) -> Denial | None:
        """Authorize one request of ``role`` (counted); the denial, recorded, if it is not allowed."""
        decision = evaluate(self.statements(role), request)
        self.checked[role] += 1
        self.actions.setdefault(role, set()).add(request.action)
        if decision.allowed:
            return None
        denial = Denial(role, operation, request, decision.reason)
        self.denials.append(denial)
        return denial

    def _authorize(self, role: str, operation: str, request: Request) -> None:
        denial = self.check(role, operation, request)
        if denial is not None:
            code = "AccessDenied" if request.action.startswith("s3:") else "AccessDeniedException"
            raise ClientError({"Error": {"Code": code, "Message": str(denial)}}, operation)


def _missing_key(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in ("NoSuchKey", "404", "NotFound")
