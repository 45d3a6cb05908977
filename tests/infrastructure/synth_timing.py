"""Times the node's synthesis by phase: `python -m tests.infrastructure.synth_timing`.

Build (constructs + compiling the workflows), synth (templates and the Lambda asset), cdk-nag.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")


def measure() -> dict[str, float]:
    started = time.perf_counter()
    from cdk_nag import AwsSolutionsChecks

    from stacks.entrypoint import create_app

    imported = time.perf_counter()
    with tempfile.TemporaryDirectory() as outdir:
        app, _ = create_app(outdir=outdir, with_nag=False)
        built = time.perf_counter()
        app.synth()
        synthesized = time.perf_counter()
        findings = AwsSolutionsChecks().validate_scope(app).violations
        checked = time.perf_counter()
    return {
        "import": imported - started,
        "build": built - imported,
        "synth": synthesized - built,
        "cdk-nag": checked - synthesized,
        "total": checked - started,
        "findings": float(len(findings)),
    }


def main() -> None:
    for phase, value in measure().items():
        print(f"{phase:>9}: {value:6.2f}{'' if phase == 'findings' else ' s'}")


if __name__ == "__main__":
    main()
