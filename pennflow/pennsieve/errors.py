"""Exceptions raised by the Pennsieve client: one class per answer a caller handles differently."""

from __future__ import annotations


class PennsieveError(Exception):
    """A Pennsieve call failed. ``status`` is the HTTP status (None when no response arrived)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AuthenticationError(PennsieveError):
    """401, or Cognito refused the API key and secret."""


class PermissionDenied(PennsieveError):
    """403: the key's user may not do this (or a file failed its malware scan)."""


class NotFound(PennsieveError):
    """404: the named dataset, package, file or manifest does not exist (or is not visible)."""


class CredentialsNotFound(PennsieveError):
    """No API key and secret in the arguments, the environment, Secrets Manager or the profile file."""


class ChecksumMismatch(PennsieveError):
    """A downloaded file's bytes do not match the checksum Pennsieve recorded for it."""

    def __init__(self, path: str, *, expected: str, actual: str, kind: str) -> None:
        super().__init__(f"checksum mismatch for {path}: expected {kind} {expected}, got {actual}")
        self.path = path
        self.expected = expected
        self.actual = actual
        self.kind = kind


class UploadFailed(PennsieveError):
    """Some files of an upload were not finalized by the upload service."""

    def __init__(self, failures: dict[str, str]) -> None:
        listed = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
        super().__init__(f"{len(failures)} file(s) failed to upload: {listed}")
        self.failures = failures
