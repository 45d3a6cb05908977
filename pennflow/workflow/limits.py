"""Names and sizes the definition format allows (shared by the models and the Pennsieve-shape reader)."""

from __future__ import annotations

import re

# Anchored for pydantic (whose regex engine's ``$`` is the end of the text); Python code must use
# ``fullmatch``, since ``re.match`` with ``$`` accepts a final newline ("FOO\n").
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME = 64
MAX_DISPLAY_NAME = 255

# Valid Fargate cpu -> memory (MiB) combinations.
FARGATE_MEMORY: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}
# Lambda memory sizes (MB) and the memory at which Lambda gives one full vCPU.
LAMBDA_MEMORY = (128, 10_240)
LAMBDA_MB_PER_VCPU = 1769


def is_name(text: object) -> bool:
    return isinstance(text, str) and len(text) <= MAX_NAME and NAME_RE.fullmatch(text) is not None


def is_param_name(text: object) -> bool:
    return isinstance(text, str) and PARAM_RE.fullmatch(text) is not None
