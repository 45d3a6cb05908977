"""Entry point of the built-in image: ``python -m pennflow.node.builtins {data-source | data-target} ...``.

Exit codes follow the processor contract: 0 success, 1 the work failed (the message is the last
line of the log, which the run record quotes), 2 bad arguments or environment.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pennflow.data.targets import TargetError, UnsupportedTarget
from pennflow.layers.populate_task import LayerTargetError
from pennflow.node.builtins import BuiltinError, run_data_source, run_data_target
from pennflow.pennsieve import CredentialsNotFound, PennsieveError
from pennflow.workflow.definition import TargetType


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python -m pennflow.node.builtins", description=__doc__)
    kinds = parse.add_subparsers(dest="kind", required=True)
    kinds.add_parser("data-source", help="download DATASET_ID into OUTPUT_DIR")
    target = kinds.add_parser("data-target", help="publish INPUT_DIR")
    target.add_argument("--target-type", required=True, choices=[t.value for t in TargetType])
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = run_data_source() if args.kind == "data-source" else run_data_target(args.target_type)
    except LayerTargetError as exc:  # retryable: another build holds the layer; a retry helps
        print(f"{'failed' if exc.retryable else 'error'}: {exc}", file=sys.stderr)
        return 1 if exc.retryable else 2
    except (BuiltinError, CredentialsNotFound, UnsupportedTarget) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (TargetError, PennsieveError, OSError) as exc:
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # an AWS or library error: keep the trace, end with the one-line reason
        logging.getLogger("pennflow.node.builtins").exception("unexpected error")
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
