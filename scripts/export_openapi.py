"""Write the REST API's OpenAPI document, generated from the routes, to docs/openapi.json.

python scripts/export_openapi.py          # rewrite docs/openapi.json
python scripts/export_openapi.py --check  # exit 1 when the committed file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "openapi.json"


def document() -> str:
    sys.path.insert(0, str(ROOT))
    from lambdas.api import openapi_json

    return openapi_json() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Compare instead of writing.")
    args = parser.parse_args(argv)
    text = document()
    if args.check:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(
                f"{TARGET.relative_to(ROOT)} is out of date: run python scripts/export_openapi.py",
                file=sys.stderr,
            )
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
