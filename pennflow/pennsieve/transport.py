"""requests sessions with urllib3's retry policy and a connection pool sized for parallel transfers."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from pennflow.pennsieve.settings import HttpSettings

RETRY_STATUSES = (429, 500, 502, 503, 504)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def build_session(settings: HttpSettings, *, retry_post: bool = False) -> requests.Session:
    """A session retrying connection errors and 429/5xx with jittered exponential backoff.

    GET is always retried; POST only on a session built with ``retry_post`` (used for the calls
    that are safe to repeat). Retry-After is honoured. The final error response is returned, not
    raised, so the caller maps its status to a precise exception.
    """
    methods = (SAFE_METHODS | {"POST"}) if retry_post else SAFE_METHODS
    retry = Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=0,
        allowed_methods=methods,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=settings.backoff_factor,
        backoff_max=settings.backoff_max,
        backoff_jitter=settings.backoff_jitter,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(
        max_retries=retry, pool_connections=settings.pool_size, pool_maxsize=settings.pool_size
    )
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
