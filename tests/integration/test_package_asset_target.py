"""``Pennsieve Package Asset`` targets publish viewer assets the way Pennsieve's asset target does.

Against the fake Pennsieve (api2 ``/packages/assets``) and moto S3: the asset is created on the
target packages with its type, name and properties, every file lands under the asset's key prefix,
and the asset is marked ready. Each refusal names what to set.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from pennflow.data.package_asset import publish_package_asset
from pennflow.data.targets import TargetError, publish

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]


@pytest.fixture
def figure(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    (results / "tiles").mkdir(parents=True)
    (results / "figure.png").write_bytes(b"\x89PNG fake")
    (results / "tiles" / "0.png").write_bytes(b"\x89PNG tile")
    (results / "asset.json").write_text(json.dumps({"width": 640, "height": 480}))
    return results


def keys(bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        o["Key"][len(prefix) + 1 :]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed
    }


def test_files_become_a_ready_viewer_asset_on_the_package(pennsieve, pennsieve_client, figure) -> None:
    dataset = pennsieve.add_dataset("eeg-study")
    package = dataset.add_package("a.edf", [("a.edf", 100)])
    params = {"ASSET_TYPE": "PNG", "ASSET_NAME": "quick-plot", "ASSET_PROPERTIES_FILE": "asset.json"}

    report = publish(
        "Pennsieve Package Asset",
        figure,
        run_id="run-1",
        params=params,
        run_dataset_id=dataset.node_id,
        run_package_ids=[package.node_id],
        pennsieve=lambda: pennsieve_client,
    )

    [asset] = pennsieve.assets.values()
    assert (asset["name"], asset["asset_type"], asset["status"]) == ("quick-plot", "PNG", "ready")
    assert asset["properties"] == {"width": 640, "height": 480}
    assert asset["package_ids"] == [package.node_id]
    uploaded = keys(pennsieve.upload_bucket, f"assets/{dataset.node_id}/{asset['id']}")
    assert uploaded == {"figure.png": b"\x89PNG fake", "tiles/0.png": b"\x89PNG tile"}  # no properties file
    assert sorted(f.path for f in report.files) == ["figure.png", "tiles/0.png"]
    assert asset["id"] in report.destination


def test_an_explicit_package_id_and_no_properties_file(pennsieve, pennsieve_client, figure) -> None:
    dataset = pennsieve.add_dataset("eeg-study")
    package = dataset.add_package("b.edf", [("b.edf", 100)])
    publish_package_asset(
        figure,
        client=pennsieve_client,
        dataset_id=dataset.node_id,
        params={"ASSET_TYPE": "ome-zarr", "ASSET_NAME": "zarr", "PACKAGE_ID": package.node_id},
    )
    [asset] = pennsieve.assets.values()
    assert asset["properties"] == {} and asset["package_ids"] == [package.node_id]
    assert "asset.json" in keys(pennsieve.upload_bucket, f"assets/{dataset.node_id}/{asset['id']}")


def test_an_empty_input_creates_no_asset(pennsieve, pennsieve_client, tmp_path) -> None:
    dataset = pennsieve.add_dataset("eeg-study")
    package = dataset.add_package("c.edf", [("c.edf", 100)])
    report = publish_package_asset(
        tmp_path, client=pennsieve_client, dataset_id=dataset.node_id,
        params={"ASSET_TYPE": "PNG", "ASSET_NAME": "x", "PACKAGE_ID": package.node_id},
    )  # fmt: skip
    assert report.files == [] and pennsieve.assets == {}


@pytest.mark.parametrize(
    ("params", "packages", "message"),
    [
        ({"ASSET_NAME": "x"}, ["N:package:1"], "needs ASSET_TYPE"),
        ({"ASSET_TYPE": "PNG"}, ["N:package:1"], "needs ASSET_NAME"),
        ({"ASSET_TYPE": "PNG", "ASSET_NAME": "x"}, [], "needs packages: set PACKAGE_ID"),
        ({"ASSET_TYPE": "PNG", "ASSET_NAME": "x", "PACKAGE_ID": "N:dataset:1"}, [], "not a package node id"),
        ({"ASSET_TYPE": "PNG", "ASSET_NAME": "x", "ASSET_PROPERTIES_FILE": "../x.json"}, ["N:package:1"],
         "must name a file inside INPUT_DIR"),
        ({"ASSET_TYPE": "PNG", "ASSET_NAME": "x", "ASSET_PROPERTIES_FILE": "bad.json"}, ["N:package:1"],
         "is not JSON"),
        ({"ASSET_TYPE": "PNG", "ASSET_NAME": "x", "ASSET_PROPERTIES_FILE": "list.json"}, ["N:package:1"],
         "must hold a JSON object"),
    ],
)  # fmt: skip
def test_each_refusal_names_what_to_set(
    pennsieve, pennsieve_client, figure, params, packages, message
) -> None:
    (figure / "bad.json").write_text("{not json")
    (figure / "list.json").write_text("[1]")
    dataset = pennsieve.add_dataset("eeg-study")
    with pytest.raises(TargetError, match=message):
        publish("Pennsieve Package Asset", figure, run_id="r", params=params, run_dataset_id=dataset.node_id,
                run_package_ids=packages, pennsieve=lambda: pennsieve_client)  # fmt: skip
    assert pennsieve.assets == {}


def test_a_package_of_another_dataset_is_refused_by_pennsieve(pennsieve, pennsieve_client, figure) -> None:
    from pennflow.pennsieve import PennsieveError

    ours, other = pennsieve.add_dataset("ours"), pennsieve.add_dataset("other")
    foreign = other.add_package("d.edf", [("d.edf", 100)])
    with pytest.raises(PennsieveError, match="not found"):
        publish_package_asset(figure, client=pennsieve_client, dataset_id=ours.node_id,
                              params={"ASSET_TYPE": "PNG", "ASSET_NAME": "x", "PACKAGE_ID": foreign.node_id})  # fmt: skip


def test_without_a_dataset_or_credentials_it_says_so(figure) -> None:
    params = {"ASSET_TYPE": "PNG", "ASSET_NAME": "x", "PACKAGE_ID": "N:package:1"}
    with pytest.raises(TargetError, match="needs the packages' dataset"):
        publish("Pennsieve Package Asset", figure, run_id="r", params=params)
    with pytest.raises(TargetError, match="needs Pennsieve credentials"):
        publish("Pennsieve Package Asset", figure, run_id="r", params=params, run_dataset_id="N:dataset:1")


def test_a_local_run_publishes_its_figure_to_the_package_it_started_on(
    pennsieve, cognito_user, tmp_path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from pennflow.cli import app

    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("PENNSIEVE_API_HOST", pennsieve.api_host)
    monkeypatch.setenv("PENNSIEVE_API2_HOST", pennsieve.api2_host)
    monkeypatch.setenv("PENNSIEVE_API_KEY", cognito_user.api_key)
    monkeypatch.setenv("PENNSIEVE_API_SECRET", cognito_user.api_secret)
    dataset = pennsieve.add_dataset("eeg-study")
    package = dataset.add_package("a.edf", [("a.edf", 100)])
    definition = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "pennsieve" / "figure-asset.json").read_text()
    )
    render = definition["processors"][1]
    render.pop("sourceUrl"), render.pop("tag")
    render["command"] = [
        "python",
        "-c",
        "import os; open(os.environ['OUTPUT_DIR'] + '/plot.png', 'wb').write(b'png')",
    ]
    definition.pop("organizationId")
    path = tmp_path / "figure.json"
    path.write_text(json.dumps(definition))

    result = CliRunner().invoke(
        app, ["run", str(path), "--dataset", dataset.node_id, "--package", package.node_id, "--publish"]
    )

    assert result.exit_code == 0, result.output
    [asset] = pennsieve.assets.values()
    assert (asset["name"], asset["asset_type"], asset["status"]) == ("figure", "PNG", "ready")
    assert asset["package_ids"] == [package.node_id]
    assert keys(pennsieve.upload_bucket, f"assets/{dataset.node_id}/{asset['id']}") == {"plot.png": b"png"}
