"""The environment a local ``command`` processor starts with: what it inherits from this machine.

A processor gets the contract's variables (DESIGN §3: its folders, ids, params, Pennsieve's
variables, a SESSION_TOKEN when it asks) and from this process only an allow-list: locale, time
zone, terminal, the user's names, and a PATH of the system's directories. Anything whose name looks
like a credential is withheld even when allowed, so a new secret-bearing variable is withheld
without anyone adding its name to a list. Pennflow's own virtual environment stays out (no
VIRTUAL_ENV, PYTHONPATH, or its ``bin`` on PATH): a processor that wants an interpreter names it,
as a container's image would bring its own. This is the one home of that rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fnmatch import fnmatchcase

# What an ECS task's container has as PATH (and Debian's default): no user or virtualenv folders.
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Set by whoever runs the engine (never by a workflow) to give command processors another PATH.
PROCESSOR_PATH_ENV = "PENNFLOW_PROCESSOR_PATH"

ALLOWED_NAMES = frozenset(
    {"HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "COLORTERM", "NO_COLOR"}
)
ALLOWED_PREFIXES = ("LC_",)

# fnmatch patterns over the upper-cased name. The contract's own variables (SESSION_TOKEN,
# PENNSIEVE_API_HOST, ...) are set after this filter, on purpose, and never pass through it.
SECRET_PATTERNS = (
    "*TOKEN*",
    "*SECRET*",
    "*_KEY",
    "*_KEY_*",
    "*PASSWORD*",
    "*PASSWD*",
    "*CREDENTIAL*",
    "*AUTH*",
    "*SESSION*",
    "*COOKIE*",
    "*PRIVATE*",
    "AWS_*",
    "PENNSIEVE_*",
    "PENNFLOW_*",
)


def is_secret_name(name: str) -> bool:
    """True for a name that may carry a credential (see SECRET_PATTERNS)."""
    upper = name.upper()
    return any(fnmatchcase(upper, pattern) for pattern in SECRET_PATTERNS)


def is_inherited(name: str) -> bool:
    """Whether a variable of this process reaches a processor: allowed, and not secret-like."""
    allowed = name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)
    return allowed and not is_secret_name(name)


def inherited_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of ``environ`` (this process's, by default) a processor inherits."""
    environ = os.environ if environ is None else environ
    return {name: value for name, value in environ.items() if is_inherited(name)}


def processor_path(environ: Mapping[str, str] | None = None) -> str:
    """The PATH a command processor gets: PENNFLOW_PROCESSOR_PATH if set, else the system's."""
    environ = os.environ if environ is None else environ
    return environ.get(PROCESSOR_PATH_ENV) or os.pathsep.join(SYSTEM_PATH)


def command_environment(
    contract_env: Mapping[str, str],
    inherited: Mapping[str, str] | None = None,
    path: str | None = None,
) -> dict[str, str]:
    """A command processor's complete environment: the inherited allow-list, PATH, then the contract."""
    env = dict(inherited_environment() if inherited is None else inherited)
    env["PATH"] = path or processor_path()
    env.update(contract_env)
    return env
