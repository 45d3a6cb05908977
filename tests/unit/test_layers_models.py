"""Layer names, the status model, storage class and cost, and the pure AWS pieces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pennflow.layers import sandbox
from pennflow.layers.build import BuildResult, TreeStats, excerpt, main
from pennflow.layers.cost import GB, LayerPrices, layer_storage, monthly_cost, storage_class
from pennflow.layers.efs import read_only_statement, task_volumes, unneeded_access_points, version_path
from pennflow.layers.models import (
    InvalidLayerName,
    InvalidLayerRequest,
    LayerRecord,
    LayerStatus,
    LayerType,
    StorageClass,
    allowed_predecessors,
    can_transition,
    check_layer_name,
)
from pennflow.layers.mounts import LayerMount
from pennflow.layers.service import new_layer

NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "required"),
        ("Atlas", "lower-case"),
        ("-atlas", "lower-case"),
        ("at las", "lower-case"),
        ("atlas_v2", "lower-case"),
        ("../etc", "lower-case"),
        ("a" * 65, "at most 64"),
    ],
)
def test_bad_names_are_rejected_with_the_reason(name: str, problem: str) -> None:
    with pytest.raises(InvalidLayerName, match=problem):
        check_layer_name(name)
    with pytest.raises(InvalidLayerName):
        new_layer(name, "data")


def test_good_names_pass() -> None:
    for name in ("a", "0-brain-atlas", "sci-stack-2025", "a" * 64):
        assert check_layer_name(name) == name


def test_status_model() -> None:
    assert can_transition(LayerStatus.EMPTY, LayerStatus.BUILDING)
    assert can_transition(LayerStatus.READY, LayerStatus.BUILDING)
    assert can_transition(LayerStatus.FAILED, LayerStatus.BUILDING)
    assert not can_transition(LayerStatus.EMPTY, LayerStatus.READY)
    assert not can_transition(LayerStatus.READY, LayerStatus.FAILED)
    assert allowed_predecessors(LayerStatus.READY) == {LayerStatus.BUILDING}
    assert allowed_predecessors(LayerStatus.BUILDING) == {
        LayerStatus.EMPTY,
        LayerStatus.READY,
        LayerStatus.FAILED,
    }


def test_new_layer_checks_type_and_requirements() -> None:
    with pytest.raises(InvalidLayerRequest, match="type: expected one of python-env, r-env, data") as caught:
        new_layer("x", "conda")
    assert caught.value.field == "type"
    with pytest.raises(InvalidLayerRequest, match="needs a requirements.txt"):
        new_layer("x", "python-env", requirements="  \n")
    with pytest.raises(InvalidLayerRequest, match="only python-env"):
        new_layer("x", "data", requirements="numpy")
    assert new_layer("x", "r-env").status is LayerStatus.EMPTY


def test_mountable_only_with_a_published_version() -> None:
    record = LayerRecord(name="x", type=LayerType.DATA)
    assert not record.mountable
    assert record.model_copy(update={"version": 1, "status": LayerStatus.READY}).mountable
    assert record.model_copy(update={"version": 1, "status": LayerStatus.BUILDING}).mountable
    assert not record.model_copy(update={"version": 0, "status": LayerStatus.BUILDING}).mountable
    assert not record.model_copy(update={"version": 1, "status": LayerStatus.FAILED}).mountable


# ------------------------------------------------------------------ cost


def test_storage_class_follows_the_lifecycle_days() -> None:
    assert storage_class(None, now=NOW) is StorageClass.STANDARD
    assert storage_class(NOW - timedelta(days=29, hours=23), now=NOW) is StorageClass.STANDARD
    assert storage_class(NOW - timedelta(days=30), now=NOW) is StorageClass.INFREQUENT_ACCESS
    assert storage_class(NOW - timedelta(days=8), now=NOW, ia_after_days=7) is StorageClass.INFREQUENT_ACCESS


def test_monthly_cost_uses_the_class_price() -> None:
    prices = LayerPrices()
    assert monthly_cost(10 * GB, StorageClass.STANDARD, prices) == pytest.approx(3.0)
    assert monthly_cost(10 * GB, StorageClass.INFREQUENT_ACCESS, prices) == pytest.approx(0.16)
    assert monthly_cost(0, StorageClass.STANDARD, prices) == 0


def test_a_layer_idle_since_its_last_access_or_write_moves_to_ia() -> None:
    prices = LayerPrices()
    record = LayerRecord(name="x", type=LayerType.DATA, size_bytes=2 * GB, built_at=NOW - timedelta(days=40))
    assert layer_storage(record, prices, NOW) == (StorageClass.INFREQUENT_ACCESS, pytest.approx(0.032))
    touched = record.model_copy(update={"last_accessed_at": NOW - timedelta(days=2)})
    assert layer_storage(touched, prices, NOW) == (StorageClass.STANDARD, pytest.approx(0.60))
    # A fresh build counts as an access: the files were just written.
    rebuilt = record.model_copy(update={"built_at": NOW - timedelta(hours=1)})
    assert layer_storage(rebuilt, prices, NOW)[0] is StorageClass.STANDARD


def test_prices_come_from_the_environment() -> None:
    prices = LayerPrices.from_env(
        {
            "LAYER_PRICE_STANDARD_GB_MONTH": "0.33",
            "LAYER_PRICE_IA_GB_MONTH": "0.0175",
            "LAYER_IA_AFTER_DAYS": "7",
        }
    )
    assert (prices.standard, prices.infrequent_access, prices.ia_after_days) == (0.33, 0.0175, 7)
    assert LayerPrices.from_env({}) == LayerPrices(standard=0.30, infrequent_access=0.016, ia_after_days=30)
    with pytest.raises(ValueError, match="LAYER_PRICE_IA_GB_MONTH"):
        LayerPrices.from_env({"LAYER_PRICE_IA_GB_MONTH": "cheap"})


# ------------------------------------------------------------------ build helpers


def test_excerpt_keeps_the_last_lines() -> None:
    text = "\n".join(f"line {i}" for i in range(50)) + "\n\n"
    kept = excerpt(text)
    assert kept.splitlines() == [f"line {i}" for i in range(30, 50)]
    assert excerpt("") == "pip failed without output"


def test_build_manifest_round_trips() -> None:
    result = BuildResult(True, "3.12.1", [{"name": "a", "version": "1"}], TreeStats(1, 2, "c"))
    assert BuildResult.from_json(result.to_json()) == result


def test_layer_build_processor_names_missing_inputs(tmp_path, capsys) -> None:
    assert main({}) == 2
    assert "INPUT_DIR, OUTPUT_DIR, LAYER_TARGET_DIR not set" in capsys.readouterr().err
    env = {
        "INPUT_DIR": str(tmp_path),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "LAYER_TARGET_DIR": str(tmp_path / "v1"),
    }
    assert main(env) == 2
    assert "requirements.txt not found" in capsys.readouterr().err


# ------------------------------------------------------------------ AWS pieces (pure)


def _mount(name: str, version: int = 1, arn: str | None = "default") -> LayerMount:
    if arn == "default":
        arn = f"arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-{name}{version}"
    return LayerMount(name, LayerType.DATA, version, "c", f"/mnt/layers/{name}", arn)


def test_version_paths_and_access_point_ids() -> None:
    assert version_path("atlas", 3) == "/layers/atlas/v3"
    assert _mount("atlas", 3).access_point_id == "fsap-atlas3"


def test_pieces_need_an_access_point_for_every_layer() -> None:
    with pytest.raises(ValueError, match="'atlas' version 1 has no EFS access point"):
        task_volumes([_mount("atlas", arn=None)], "fs-1")
    with pytest.raises(ValueError, match="access point"):
        read_only_statement([_mount("atlas", arn=None)], "arn:fs")


def test_statement_never_grants_write() -> None:
    statement = read_only_statement([_mount("a"), _mount("b")], "arn:fs")
    assert statement["Action"] == ["elasticfilesystem:ClientMount"]
    assert not any("Write" in action or "Root" in action for action in statement["Action"])


def test_unneeded_access_points_spare_the_current_and_referenced_versions() -> None:
    record = LayerRecord(
        name="x",
        type=LayerType.DATA,
        version=4,
        access_points={str(v): f"arn-{v}" for v in (1, 2, 3, 4)},
        refs={"r-1": 2},
    )
    assert unneeded_access_points(record) == {1: "arn-1", 3: "arn-3"}


# ------------------------------------------------------------------ sandbox argv


def test_namespace_wrapper_binds_each_layer_then_hides_the_root(tmp_path, monkeypatch) -> None:
    (tmp_path / "layers").mkdir()
    view = sandbox.LayersView.create(
        tmp_path / "view", [_mount("atlas")], hidden=tmp_path / "layers", mode=sandbox.SandboxMode.NAMESPACE
    )
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    argv = sandbox.wrap_command(["python", "-m", "proc"], view)
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert argv[-4:] == [str(view.fstab), "python", "-m", "proc"]
    # one mount list: each layer bound read-only into the view, then the real layers folder covered
    lines = view.fstab.read_text().splitlines()
    assert lines[0].split()[:4] == ["/mnt/layers/atlas", str(view.root / "atlas"), "none", "bind,ro"]
    assert lines[-1].split()[1] == str(tmp_path / "layers") and "tmpfs" in lines[-1]
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    assert sandbox.wrap_command(["true"], view)[:4] == ["unshare", "--user", "--map-root-user", "--mount"]
    assert (view.root / "atlas").is_dir() and not (view.root / "atlas").is_symlink()
