"""The build's Lambda-variant commands (stacks/lambda_compute.py), run by bash with stand-ins for
docker and the AWS CLI: the derived Dockerfile, the recorded command, the exported digest or problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pennflow.processors import lambda_bootstrap
from stacks.lambda_compute import LAMBDA_VARIANT_COMMANDS

LAMBDA_DIGEST = "sha256:" + "c" * 64
FAKE_DOCKER = f"""#!{sys.executable}
import os, shutil, sys
args = sys.argv[1:]
if args[0] == "run":
    sys.exit(0 if os.environ["FAKE_HAS_PYTHON"] == "1" else 127)
if args[0] == "inspect":
    fmt = args[2]
    if "RepoDigests" in fmt:
        print("repo@{LAMBDA_DIGEST}")
    elif "Entrypoint" in fmt:
        print(os.environ["FAKE_ENTRYPOINT"])
    elif "Cmd" in fmt:
        print(os.environ["FAKE_CMD"])
    else:
        print('"/app"')
    sys.exit(0)
if args[0] == "build":
    shutil.copytree(args[-1], os.environ["FAKE_BUILT"])
    sys.exit(0)
if args[0] == "push":
    sys.exit(0)
sys.exit(2)
"""
FAKE_AWS = f"""#!{sys.executable}
import os, shutil, sys
args = [a for a in sys.argv[1:] if a != "--quiet"]
assert args[:2] == ["s3", "cp"] and args[2] == "s3://assets/bootstrap-key.py", args
shutil.copy(os.environ["FAKE_BOOTSTRAP"], args[3])
"""


def run_variant(tmp_path: Path, *, has_python: bool = True, entrypoint="null", cmd='["python", "main.py"]'):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("aws", FAKE_AWS)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "IMAGE": "repo:thumbs-v1-b7",
        "BOOTSTRAP_BUCKET": "assets",
        "BOOTSTRAP_KEY": "bootstrap-key.py",
        "FAKE_HAS_PYTHON": "1" if has_python else "0",
        "FAKE_ENTRYPOINT": entrypoint,
        "FAKE_CMD": cmd,
        "FAKE_BUILT": str(tmp_path / "built"),
        "FAKE_BOOTSTRAP": lambda_bootstrap.__file__,
    }
    script = "\n".join(
        [
            *LAMBDA_VARIANT_COMMANDS,
            'echo "DIGEST=$LAMBDA_IMAGE_DIGEST"',
            'echo "PROBLEM=$LAMBDA_IMAGE_PROBLEM"',
        ]
    )
    done = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, check=True
    )
    values = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if line.startswith(("DIGEST=", "PROBLEM="))
    )
    return values, tmp_path / "built"


def test_the_variant_wraps_the_images_command_with_the_bootstrap(tmp_path):
    values, built = run_variant(tmp_path, entrypoint='["tini", "--"]')
    assert values == {"DIGEST": LAMBDA_DIGEST, "PROBLEM": ""}
    dockerfile = (built / "Dockerfile").read_text()
    assert dockerfile.startswith("FROM repo:thumbs-v1-b7\n")
    assert 'ENTRYPOINT ["python3", "/opt/pennflow/bootstrap.py"]' in dockerfile
    recorded = json.loads((built / "command.json").read_text())
    assert recorded == {"command": ["tini", "--", "python", "main.py"], "workdir": "/app"}
    assert (built / "bootstrap.py").read_text() == Path(lambda_bootstrap.__file__).read_text()


def test_an_image_without_python_or_a_command_gets_no_variant_and_says_why(tmp_path):
    values, built = (
        run_variant(tmp_path / "a", has_python=False) if (tmp_path / "a").mkdir() is None else None
    )
    assert values["DIGEST"] == "" and "no python3" in values["PROBLEM"] and not built.exists()
    (tmp_path / "b").mkdir()
    values, built = run_variant(tmp_path / "b", cmd="null")
    assert values["DIGEST"] == "" and "no ENTRYPOINT or CMD" in values["PROBLEM"]
