"""``pennflow processors add|list|show``: locally on real git repositories, and against a node's answers."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.node.client import NodeClient, RemoteError
from tests.integration.test_local_source_processors import PLAIN_DOCKERFILE, git, plain_repo

runner = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_add_prepares_the_venv_and_list_and_show_read_the_cache(tmp_path):
    repo = plain_repo(tmp_path / "repo")
    added = runner.invoke(app, ["processors", "add", f"{repo}@v1", "--no-containers", "--json"])
    assert added.exit_code == 0, added.output
    data = json.loads(added.output)
    assert data["commit"] == git(repo, "rev-parse", "v1").strip()
    assert data["runsAs"].startswith("a virtual environment at ")
    assert data["manifest"]["parameters"][0]["name"] == "THUMBNAIL_SIZE"

    listed = runner.invoke(app, ["processors", "list"])
    assert listed.exit_code == 0 and f"{repo}@v1  commit {data['commit'][:12]}" in listed.output
    shown = runner.invoke(app, ["processors", "show", f"{repo}@v1"])
    assert shown.exit_code == 0
    assert "param THUMBNAIL_SIZE (integer) = '256'  width and height" in shown.output


@pytest.mark.parametrize(
    ("source", "message"),
    [("no-tag-here", "is not URL@TAG"), ("{repo}@v7", "cannot fetch"), ("{bad}@v1", "Dockerfile line 2")],
)
def test_add_refusals_exit_2_with_one_line(tmp_path, source, message):
    repo = plain_repo(tmp_path / "repo")
    bad = plain_repo(tmp_path / "bad", Dockerfile=PLAIN_DOCKERFILE.replace("ARG VERSION=1", "RUN make"))
    result = runner.invoke(app, ["processors", "add", source.format(repo=repo, bad=bad), "--no-containers"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_remote_add_posts_the_source_and_prints_the_build(monkeypatch):
    sent = []

    def request(self, method, path, *, body=None, **kwargs):
        sent.append((method, path, body))
        return {
            "id": "thumbs-v1-12345678",
            "status": "BUILDING",
            "sourceUrl": "https://github.com/x/thumbs",
            "tag": "v1",
            "buildId": "pennflow_processor-builds:1",
        }

    monkeypatch.setattr(NodeClient, "request", request)
    result = runner.invoke(
        app,
        [
            "processors",
            "add",
            "https://github.com/x/thumbs@v1",
            "--remote",
            "--node-url",
            "https://abc.execute-api.us-east-1.amazonaws.com/prod",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sent == [("POST", "/processors", {"sourceUrl": "https://github.com/x/thumbs", "tag": "v1"})]
    assert "thumbs-v1-12345678  BUILDING" in result.output


def test_remote_refusals_exit_2(monkeypatch):
    def request(self, method, path, **kwargs):
        raise RemoteError("no processor 'x'", status=404)

    monkeypatch.setattr(NodeClient, "request", request)
    result = runner.invoke(
        app,
        [
            "processors",
            "show",
            "x",
            "--remote",
            "--node-url",
            "https://abc.execute-api.us-east-1.amazonaws.com/prod",
        ],
    )
    assert result.exit_code == 2 and "no processor 'x'" in result.output
