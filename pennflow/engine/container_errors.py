"""Why ``docker run`` itself failed, in words: the daemon is not running, the image is not there.

When the docker client cannot start a container it exits 125 (126/127 when the container's command
cannot be run) and prints ``docker: <error>`` followed by a ``Run 'docker run --help'`` hint, so the
last line of the attempt's output says nothing. The reason shown is docker's own error line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DOCKER_OWN_EXIT_CODES = frozenset({125, 126, 127})
_DAEMON_DOWN = ("cannot connect to the docker daemon", "is the docker daemon running", "docker.sock: connect")
_NO_IMAGE = (
    "pull access denied",
    "manifest unknown",
    "repository does not exist",
    "no such image",
)


@dataclass(frozen=True)
class ContainerFailure:
    reason: str
    retryable: bool  # a missing image or a stopped daemon stays so for the next attempt


def container_failure(code: int, output: Sequence[str], image: str) -> ContainerFailure | None:
    """The failure of docker itself from the attempt's output lines, or None when the processor ran
    (its own exit code and output then say why)."""
    if code not in DOCKER_OWN_EXIT_CODES:
        return None
    errors = [line.strip() for line in output if line.strip().lower().startswith("docker:")]
    if not errors:
        return None
    detail = errors[-1].split(":", 1)[1].strip()
    lowered = detail.lower()
    if any(sign in lowered for sign in _DAEMON_DOWN):
        return ContainerFailure(
            f"the docker daemon is not running ({detail}): start it, or run with --no-containers",
            retryable=False,
        )
    if any(sign in lowered for sign in _NO_IMAGE):
        return ContainerFailure(f"image {image!r} not found: {detail}", retryable=False)
    if code in (126, 127):
        return ContainerFailure(f"the container's command cannot run: {detail}", retryable=False)
    return ContainerFailure(f"docker could not start the container: {detail}", retryable=True)
