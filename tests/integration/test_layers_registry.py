"""The layer registry contract, run against both adapters: SQLite (local) and DynamoDB (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from pennflow.layers.build import TreeStats
from pennflow.layers.dynamodb import PK, DynamoLayerRegistry
from pennflow.layers.models import (
    LayerConflict,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    LayerRecord,
    LayerStatus,
    LayersUnavailable,
    LayerType,
    Package,
)
from pennflow.layers.mounts import release_layers, resolve_layers
from pennflow.layers.registry import LayerRegistry
from pennflow.layers.service import begin_build, delete_layer, fail_build, finish_build, new_layer
from pennflow.layers.sqlite import SqliteLayerRegistry
from tests.integration import aws_fixtures

mocked_aws = aws_fixtures.mocked_aws
LAYERS_TABLE = "pennflow-layers"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
STATS = TreeStats(size_bytes=2048, file_count=3, checksum="c" * 64)


@pytest.fixture(params=["sqlite", "dynamodb"])
def registry(request: pytest.FixtureRequest, tmp_path) -> Iterator[LayerRegistry]:
    if request.param == "sqlite":
        with SqliteLayerRegistry(tmp_path / "pennflow.db") as sqlite:
            yield sqlite
        return
    request.getfixturevalue("mocked_aws")
    boto3.client("dynamodb", region_name=aws_fixtures.REGION).create_table(
        TableName=LAYERS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": PK, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": PK, "KeyType": "HASH"}],
    )
    yield DynamoLayerRegistry(LAYERS_TABLE)


def _publish(registry: LayerRegistry, name: str, **fields) -> int:
    before = begin_build(registry, name)
    return finish_build(registry, name, before.version, stats=STATS, **fields)


def test_a_record_round_trips_every_field(registry: LayerRegistry) -> None:
    record = LayerRecord(
        name="sci-stack",
        type=LayerType.PYTHON_ENV,
        description="numpy and friends",
        requirements="numpy==2.0\n",
        created_at=T0,
        updated_at=T0,
        created_by="alice",
        packages=[Package(name="numpy", version="2.0")],
        access_points={"1": "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-1"},
    )
    registry.create(record)
    assert registry.get("sci-stack") == record
    assert registry.get("missing") is None
    with pytest.raises(LayerExists, match="sci-stack"):
        registry.create(record.model_copy(update={"description": "other"}))
    assert registry.get("sci-stack").description == "numpy and friends"


def test_list_is_by_name(registry: LayerRegistry) -> None:
    for name in ("zeta", "alpha", "mid"):
        registry.create(new_layer(name, "data"))
    assert [r.name for r in registry.list()] == ["alpha", "mid", "zeta"]


def test_status_transitions_are_conditional(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    assert not registry.transition("atlas", LayerStatus.READY)  # EMPTY -> READY skips the build
    assert not registry.transition("atlas", LayerStatus.FAILED)
    assert registry.transition("atlas", LayerStatus.BUILDING, build_started_at=T0)
    assert not registry.transition("atlas", LayerStatus.BUILDING)  # one build at a time
    assert not registry.transition("atlas", LayerStatus.READY, expect_version=5)  # stale expectation
    assert registry.transition("atlas", LayerStatus.READY, expect_version=0, version=1)
    assert registry.get("atlas").status is LayerStatus.READY
    assert not registry.transition("missing", LayerStatus.BUILDING)


def test_a_stale_build_may_be_taken_over(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    assert registry.transition("atlas", LayerStatus.BUILDING, build_started_at=T0)
    assert not registry.transition("atlas", LayerStatus.BUILDING, stale_before=T0 - timedelta(hours=1))
    assert registry.transition(
        "atlas",
        LayerStatus.BUILDING,
        stale_before=T0 + timedelta(hours=1),
        build_started_at=T0 + timedelta(hours=2),
    )
    assert registry.get("atlas").build_started_at == T0 + timedelta(hours=2)


def test_each_successful_build_increases_the_version(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    assert _publish(registry, "atlas") == 1
    assert _publish(registry, "atlas") == 2
    before = begin_build(registry, "atlas")
    assert fail_build(registry, "atlas", "boom\nlast line")
    record = registry.get("atlas")
    assert (record.status, record.version, record.error) == (LayerStatus.FAILED, 2, "boom\nlast line")
    assert before.version == 2
    assert _publish(registry, "atlas") == 3
    record = registry.get("atlas")
    assert (record.status, record.error, record.size_bytes, record.checksum) == (
        LayerStatus.READY,
        None,
        2048,
        "c" * 64,
    )


def test_a_second_build_is_refused_while_one_runs(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    begin_build(registry, "atlas")
    with pytest.raises(LayerConflict, match="already BUILDING"):
        begin_build(registry, "atlas")
    with pytest.raises(LayerNotFound):
        begin_build(registry, "nope")


def test_finishing_against_a_moved_version_is_refused(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    begin_build(registry, "atlas")
    with pytest.raises(LayerConflict):
        finish_build(registry, "atlas", 7, stats=STATS)
    assert registry.get("atlas").version == 0


def test_resolve_names_every_missing_or_unready_layer(registry: LayerRegistry) -> None:
    registry.create(new_layer("empty-one", "data"))
    registry.create(new_layer("good", "data"))
    _publish(registry, "good")
    registry.create(new_layer("broken", "data"))
    begin_build(registry, "broken")
    fail_build(registry, "broken", "pip: no matching distribution")
    with pytest.raises(LayersUnavailable) as caught:
        resolve_layers(["good", "empty-one", "ghost", "broken", "Bad_Name"], registry, run_id="r-1")
    problems = caught.value.problems
    assert len(problems) == 4
    assert "'empty-one' is EMPTY" in problems[0]
    assert "'ghost' not found" in problems[1]
    assert "'broken' is FAILED" in problems[2] and "no matching distribution" in problems[2]
    assert "'Bad_Name'" in problems[3]
    assert registry.get("good").refs == {}  # nothing referenced when anything is unavailable


def test_resolve_pins_versions_records_access_and_references(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    _publish(registry, "atlas")
    [mount] = resolve_layers(["atlas", "atlas"], registry, run_id="r-1", now=T0)
    assert (mount.name, mount.version, mount.checksum, mount.path) == (
        "atlas",
        1,
        "c" * 64,
        "/mnt/layers/atlas",
    )
    assert mount.run_entry() == {"name": "atlas", "version": "1", "checksum": "c" * 64}
    record = registry.get("atlas")
    assert record.refs == {"r-1": 1}
    assert record.last_accessed_at == T0
    # A rebuild keeps the layer mountable at its current version while BUILDING.
    begin_build(registry, "atlas")
    [again] = resolve_layers(["atlas"], registry, run_id="r-2")
    assert again.version == 1
    release_layers(["atlas"], registry, "r-1")
    assert registry.get("atlas").refs == {"r-2": 1}


def test_a_reference_to_a_replaced_version_is_refused(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    _publish(registry, "atlas")
    _publish(registry, "atlas")
    assert not registry.add_ref("atlas", "r-late", 1, T0)  # version 1 is no longer current
    assert registry.add_ref("atlas", "r-late", 2, T0)
    assert registry.get("atlas").refs == {"r-late": 2}


def test_delete_is_refused_while_a_run_uses_the_layer(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    _publish(registry, "atlas")
    resolve_layers(["atlas"], registry, run_id="r-active")
    with pytest.raises(LayerInUse, match="r-active"):
        delete_layer(registry, "atlas")
    assert registry.get("atlas") is not None
    release_layers(["atlas"], registry, "r-active")
    delete_layer(registry, "atlas")
    assert registry.get("atlas") is None


def test_delete_drops_references_of_runs_that_ended(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    _publish(registry, "atlas")
    resolve_layers(["atlas"], registry, run_id="r-crashed")
    resolve_layers(["atlas"], registry, run_id="r-live")
    with pytest.raises(LayerInUse) as caught:
        delete_layer(registry, "atlas", is_active=lambda run_id: run_id == "r-live")
    assert caught.value.run_ids == ["r-live"]
    assert registry.get("atlas").refs == {"r-live": 1}
    delete_layer(registry, "atlas", is_active=lambda run_id: False)
    assert registry.get("atlas") is None


def test_delete_is_refused_while_building(registry: LayerRegistry) -> None:
    registry.create(new_layer("atlas", "data"))
    begin_build(registry, "atlas")
    with pytest.raises(LayerConflict, match="BUILDING"):
        delete_layer(registry, "atlas")
