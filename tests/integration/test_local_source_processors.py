"""``sourceUrl@tag`` in local runs, on real git repositories made here: clone, app.yml, the venv path."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pennflow.engine.home import PennflowHome
from pennflow.engine.launchers import container_runtime_available
from pennflow.engine.local import InvalidRunInput, run_workflow
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import Status

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to make repositories")

MAIN = """\
import json, os, sys
out = os.environ["OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump({
        "size": os.environ.get("THUMBNAIL_SIZE"),
        "mode": os.environ.get("MODE"),
        "greeting": os.environ.get("GREETING"),
        "cwd": os.getcwd(),
        "prefix": sys.prefix,
        "helper": __import__("helper").VALUE,
    }, f)
"""

APP_YML = """\
schemaVersion: '1.0'
name: Thumbnail Generator
applicationType: processor
runtime:
  computeTypes: [standard]
resources:
  cpu: 2048
  memory: 4096
parameters:
  - name: THUMBNAIL_SIZE
    type: integer
    description: width and height
    default: 256
  - name: MODE
    type: string
    default: fast
"""

PLAIN_DOCKERFILE = """\
FROM python:3.12-slim
ARG VERSION=1
LABEL org.opencontainers.image.title=thumbs
WORKDIR /app
COPY requirements.txt /app/requirements.txt
RUN pip install --no-cache-dir -r /app/requirements.txt
COPY src/ /app/src/
ENV PYTHONPATH="/app/src" GREETING=hello
CMD ["python", "/app/src/main.py"]
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def make_repo(root: Path, files: dict[str, str], tag: str = "v1") -> Path:
    root.mkdir(parents=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "processor")
    git(root, "tag", tag)
    return root


def plain_repo(root: Path, **overrides: str) -> Path:
    files = {
        "Dockerfile": PLAIN_DOCKERFILE,
        "app.yml": APP_YML,
        "requirements.txt": "# nothing to install\n",
        "src/main.py": MAIN,
        "src/helper.py": "VALUE = 'from the checkout'\n",
    }
    files.update(overrides)
    return make_repo(root, files)


def definition(url: str, tag: str = "v1", extra: str = "") -> str:
    return f"""
name: thumbs
processors:
  - id: thumbs
    sourceUrl: {url}
    tag: {tag}
{extra}"""


@pytest.fixture
def home(tmp_path: Path) -> PennflowHome:
    return PennflowHome(tmp_path / "home")


def run(text: str, home: PennflowHome, tmp_path: Path, **kwargs):
    return run_workflow(parse_definition(text), definition_dir=tmp_path, home=home, docker=False, **kwargs)


def result(home: PennflowHome, run_id: str) -> dict:
    return json.loads((home.run_dir(run_id) / "thumbs" / "output" / "result.json").read_text())


def test_a_plain_dockerfile_runs_from_its_files_in_a_venv(tmp_path, home, caplog):
    repo = plain_repo(tmp_path / "repo")
    record = run(definition(f"file://{repo}"), home, tmp_path, params={"THUMBNAIL_SIZE": "128"})
    assert record.status is Status.SUCCEEDED, record.reason
    out = result(home, record.run_id)
    assert out["size"] == "128"  # the run's value over app.yml's default
    assert out["mode"] == "fast"  # app.yml's default applies
    assert out["greeting"] == "hello"  # the Dockerfile's ENV
    assert out["helper"] == "from the checkout"  # PYTHONPATH=/app/src, rewritten to the staged files
    assert out["cwd"].endswith("/app")  # WORKDIR
    assert out["prefix"].startswith(str(home.root / "processors" / "venvs"))
    assert record.images == {"thumbs": f"venv:file://{repo}@{git(repo, 'rev-parse', 'v1').strip()}"}
    notes = [r.getMessage() for r in caplog.records if "not the image" in r.getMessage()]
    assert len(notes) == 1 and "python:3.12-slim" in notes[0]


def test_a_local_path_works_and_the_checkout_and_venv_are_reused(tmp_path, home):
    repo = plain_repo(tmp_path / "repo")
    first = run(definition(str(repo)), home, tmp_path)
    second = run(definition("repo"), home, tmp_path)  # relative to the definition's folder
    assert first.status is second.status is Status.SUCCEEDED
    assert result(home, first.run_id)["prefix"] == result(home, second.run_id)["prefix"]
    sources = list((home.root / "processors" / "sources").iterdir())
    assert len(sources) == 1  # one URL (the path and its relative spelling are the same folder)
    commits = [p for p in sources[0].iterdir() if p.is_dir() and p.name != "tags"]
    assert [p.name for p in commits] == [git(repo, "rev-parse", "v1").strip()]


def test_a_moved_tag_is_cloned_again(tmp_path, home):
    repo = plain_repo(tmp_path / "repo")
    first = run(definition(str(repo)), home, tmp_path)
    (repo / "src" / "helper.py").write_text("VALUE = 'second commit'\n")
    git(repo, "commit", "--quiet", "-am", "again")
    git(repo, "tag", "--force", "v1")
    second = run(definition(str(repo)), home, tmp_path)
    assert result(home, first.run_id)["helper"] == "from the checkout"
    assert result(home, second.run_id)["helper"] == "second commit"


def test_bad_typed_params_are_refused_naming_each(tmp_path, home):
    repo = plain_repo(tmp_path / "repo")
    with pytest.raises(InvalidRunInput) as caught:
        run(definition(str(repo)), home, tmp_path, params={"THUMBNAIL_SIZE": "big"})
    assert caught.value.problems == [
        "--param: processor 'thumbs': param 'THUMBNAIL_SIZE': 'big' is not an integer (integer)"
    ]


def test_a_dockerfile_that_is_not_plain_is_refused_naming_the_line(tmp_path, home):
    dockerfile = PLAIN_DOCKERFILE.replace("WORKDIR /app\n", "WORKDIR /app\nRUN apt-get update\n")
    repo = plain_repo(tmp_path / "repo", Dockerfile=dockerfile)
    with pytest.raises(InvalidRunInput) as caught:
        run(definition(str(repo)), home, tmp_path)
    (problem,) = caught.value.problems
    assert "Dockerfile line 5: 'RUN apt-get update' cannot be followed" in problem
    assert "no container runtime here" in problem


def test_a_missing_tag_and_a_bad_manifest_are_refused_together(tmp_path, home):
    good = plain_repo(tmp_path / "good")
    bad = plain_repo(tmp_path / "bad", **{"app.yml": "runtime:\n  computeTypes: [quantum]\n"})
    text = f"""
name: two
processors:
  - id: one
    sourceUrl: {good}
    tag: v9
  - id: two
    sourceUrl: {bad}
    tag: v1
"""
    with pytest.raises(InvalidRunInput) as caught:
        run(text, home, tmp_path)
    one, two = caught.value.problems
    assert one.startswith("processor 'one': cannot fetch") and "v9" in one
    assert "app.yml: runtime.computeTypes[0]: 'quantum' is not one of" in two


def test_a_compute_type_the_manifest_does_not_allow_is_refused(tmp_path, home):
    repo = plain_repo(tmp_path / "repo")
    with pytest.raises(InvalidRunInput, match="computeType 'lambda' is not one app.yml allows"):
        run(definition(str(repo), extra="    computeType: lambda\n"), home, tmp_path)


@pytest.mark.skipif(container_runtime_available(), reason="checks the path without a container daemon")
def test_without_a_daemon_the_default_falls_through_to_the_venv(tmp_path, home):
    repo = plain_repo(tmp_path / "repo")
    record = run_workflow(parse_definition(definition(str(repo))), definition_dir=tmp_path, home=home)
    assert record.status is Status.SUCCEEDED, record.reason
    assert result(home, record.run_id)["size"] == "256"


FAKE_DOCKER = r'''#!{python}
"""A docker CLI with a daemon: records each call; `build` makes the tag exist; `run` plays the image."""
import json, os, sys
from pathlib import Path
state = Path(os.environ["FAKE_DOCKER_STATE"])
args = sys.argv[1:]
with open(state / "calls.jsonl", "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:2] == ["image", "inspect"]:
    sys.exit(0 if (state / "built").exists() else 1)
if args[:1] == ["build"]:
    (state / "built").write_text(args[args.index("--tag") + 1])
    sys.exit(0)
if args[:1] == ["run"]:
    mounts = [args[i + 1] for i, a in enumerate(args) if a == "--mount"]
    run_dir = next(m for m in mounts if "target=/mnt/run" in m).split("source=")[1].split(",")[0]
    env = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--env" and "=" in args[i + 1])
    out = Path(env["OUTPUT_DIR"].replace("/mnt/run", run_dir, 1))
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"image": args[-1], "size": env.get("THUMBNAIL_SIZE")}))
    sys.exit(0)
sys.exit(0)
'''


def test_with_a_container_runtime_the_dockerfile_is_built_once_and_its_image_runs(
    tmp_path, home, monkeypatch
):
    import sys

    bin_dir, state = tmp_path / "bin", tmp_path / "docker-state"
    bin_dir.mkdir()
    state.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.replace("{python}", sys.executable))
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    # Not a plain Dockerfile: with a runtime, it does not have to be.
    repo = plain_repo(
        tmp_path / "repo", Dockerfile=PLAIN_DOCKERFILE.replace("ARG VERSION=1", "RUN apt-get update")
    )
    text = definition(str(repo))
    for _ in range(2):
        record = run_workflow(parse_definition(text), definition_dir=tmp_path, home=home, docker=True)
        assert record.status is Status.SUCCEEDED, record.reason
    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    builds = [call for call in calls if call[0] == "build"]
    assert len(builds) == 1  # the second run found the image of that commit
    tag = (state / "built").read_text()
    commit = git(repo, "rev-parse", "v1").strip()
    assert tag.startswith("pennflow-source/") and tag.endswith(f":{commit[:12]}")
    assert result(home, record.run_id) == {"image": tag, "size": "256"}
    assert record.images == {"thumbs": tag}
