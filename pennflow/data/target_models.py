"""What a data target reports, and how it refuses (shared by every target type)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TargetError(ValueError):
    """The target cannot publish: a missing setting, a reserved name, an unsupported type."""


class UnsupportedTarget(TargetError):
    """A target type this node cannot publish to."""


class PublishedFile(BaseModel):
    path: str = Field(description="relative path in the target's INPUT_DIR")
    size: int
    destination: str


class TargetReport(BaseModel):
    target_type: str
    destination: str
    files: list[PublishedFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)
