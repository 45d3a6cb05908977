"""The API Lambda as a WSGI app, so HTTP tools (schemathesis) can call it in-process.

Each request becomes the API Gateway REST proxy event the deployed node would deliver
(``api_support.event``) and goes to ``lambdas.api.handler``; its proxy response becomes the HTTP
response. Only what API Gateway adds in front is left out (SigV4 checks, its own request validator),
so the handler is tested on everything a caller can send it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from tests.integration import api_support

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def handler_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    from http import HTTPStatus

    from lambdas import api

    response = api.handler(proxy_event(environ), api_support.LambdaContext())
    status = response["statusCode"]
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items() if v}
    headers.update(response.get("headers") or {})
    body = response.get("body") or ""
    payload = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
    start_response(f"{status} {HTTPStatus(status).phrase}", list(headers.items()))
    return [payload]


def proxy_event(environ: dict[str, Any]) -> dict[str, Any]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    headers = {
        key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    # API Gateway hands the Lambda text bodies as they are and binary ones base64-encoded.
    try:
        text, encoded = (raw.decode("utf-8") if raw else None), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(raw).decode(), True
    event = api_support.event(
        environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/", raw=text, headers=headers, query=query
    )
    if "Content-Type" not in headers:  # event() assumes JSON for any body; keep what was sent
        event["headers"].pop("Content-Type", None)
        event["multiValueHeaders"].pop("Content-Type", None)
    event["isBase64Encoded"] = encoded
    return event
