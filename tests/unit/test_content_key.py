"""The content key: stable under reordering, different when anything that shapes the results differs."""

from __future__ import annotations

import random
import stat
import textwrap
from pathlib import Path

import pytest

from pennflow.data.content_key import (
    LayerPin,
    ResolvedImage,
    image_tag,
    plan_run,
    resolve_image,
)
from pennflow.data.datasource import InputFile, InputSummary
from pennflow.workflow.contract import run_parameters
from pennflow.workflow.definition import parse_definition

DEFINITION = """
name: eeg-quality
processors:
  - {id: recordings, type: data-source}
  - {id: convert, image: "ghcr.io/lab/convert:1.2", dependsOn: [recordings], defaultParams: {FORMAT: edf}}
  - {id: bandpower, image: "ghcr.io/lab/bandpower:2.0", dependsOn: [convert], defaultParams: {WINDOW: "30"},
     layers: [scientific-stack]}
  - {id: results, type: data-target, targetType: s3, dependsOn: [bandpower]}
"""
DIGESTS = {
    "ghcr.io/lab/convert:1.2": "sha256:" + "a" * 64,
    "ghcr.io/lab/bandpower:2.0": "sha256:" + "b" * 64,
}
FILES = [
    InputFile(file_id="101", path="sub-01/rec-1.edf", size=2048, checksum="9e107d9d372bb6826bd81d3542a419d6"),
    InputFile(file_id="102", path="sub-01/rec-2.edf", size=4096, checksum="e4d909c290d0fb1ca068ffaddf22cbd0"),
    InputFile(
        file_id="103", path="sub-02/rec-1.edf", size=1024, checksum="d41d8cd98f00b204e9800998ecf8427e-2"
    ),
]
LAYERS = [
    LayerPin(name="scientific-stack", version=3, checksum="c" * 64),
    LayerPin(name="atlas", version=1, checksum="d" * 64),
]


def workflow(text: str = DEFINITION):
    return parse_definition(textwrap.dedent(text), "yaml")


def resolver(image: str) -> ResolvedImage:
    digest = DIGESTS.get(image)
    if digest is None:
        return ResolvedImage(reference=image, source="unresolved", detail="not found")
    return ResolvedImage(reference=image, digest=digest, source="ecr")


def inputs(files=FILES, dataset: str = "N:dataset:1") -> InputSummary:
    files = list(files)
    return InputSummary(
        dataset_id=dataset, file_count=len(files), total_bytes=sum(f.size for f in files), entries=files
    )


def key(**changes) -> str:
    wf = changes.pop("workflow", workflow())
    arguments = {
        "params": run_parameters(wf),
        "inputs": inputs(),
        "layers": LAYERS,
        "resolver": resolver,
    } | changes
    return plan_run(wf, **arguments).content_key


def test_the_key_is_stable_under_any_reordering():
    wf = workflow()
    shuffled = list(FILES)
    random.Random(7).shuffle(shuffled)
    params = {pid: dict(reversed(list(p.items()))) for pid, p in reversed(list(run_parameters(wf).items()))}

    assert key() == key(inputs=inputs(shuffled), layers=list(reversed(LAYERS)), params=params)
    assert key() == key()  # and deterministic
    assert len(key()) == 64


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(
            {
                "workflow": workflow(
                    DEFINITION.replace("{FORMAT: edf}}", "{FORMAT: edf}, timeoutSeconds: 600}")
                )
            },
            id="definition",
        ),
        pytest.param(
            {"resolver": lambda ref: ResolvedImage(reference=ref, digest="sha256:" + "e" * 64, source="ecr")},
            id="image digest",
        ),
        pytest.param({"params": {**run_parameters(workflow()), "bandpower": {"WINDOW": "10"}}}, id="param"),
        pytest.param(
            {"layers": [LAYERS[0].model_copy(update={"version": 4}), LAYERS[1]]}, id="layer version"
        ),
        pytest.param(
            {"layers": [LAYERS[0].model_copy(update={"checksum": "f" * 64}), LAYERS[1]]}, id="layer checksum"
        ),
        pytest.param({"layers": LAYERS[:1]}, id="layer removed"),
        pytest.param(
            {"inputs": inputs([FILES[0].model_copy(update={"checksum": "0" * 32}), *FILES[1:]])},
            id="file checksum",
        ),
        pytest.param(
            {"inputs": inputs([FILES[0].model_copy(update={"size": 2049}), *FILES[1:]])}, id="file size"
        ),
        pytest.param(
            {"inputs": inputs([FILES[0].model_copy(update={"path": "sub-01/renamed.edf"}), *FILES[1:]])},
            id="file renamed",
        ),
        pytest.param({"inputs": inputs(FILES[:2])}, id="file removed"),
        pytest.param({"inputs": inputs(dataset="N:dataset:2")}, id="dataset"),
        pytest.param({"inputs": None}, id="no inputs"),
    ],
)
def test_the_key_changes_with_each_of_its_inputs(changed):
    assert key(**changed) != key()


def test_the_same_digest_under_a_new_tag_is_the_same_computation():
    moved = workflow(DEFINITION.replace("convert:1.2", "convert@" + DIGESTS["ghcr.io/lab/convert:1.2"]))
    plan = plan_run(
        moved, params=run_parameters(moved), inputs=inputs(), layers=LAYERS, resolver=resolve_image
    )
    original = plan_run(
        workflow(), params=run_parameters(workflow()), inputs=inputs(), layers=LAYERS, resolver=resolver
    )

    assert plan.processors[1].image.digest == original.processors[1].image.digest
    assert plan.processors[1].image.source == "pinned"
    assert plan.content_key != original.content_key  # the definition itself changed (its hash is keyed)


def test_the_dry_run_plan_says_what_the_key_covers_and_warns_about_mutable_tags():
    wf = workflow(DEFINITION.replace('"ghcr.io/lab/bandpower:2.0"', "ghcr.io/lab/bandpower"))
    summary = inputs([*FILES, InputFile(file_id="104", path="notes.txt", size=10, checksum=None)])

    plan = plan_run(
        wf,
        params=run_parameters(wf),
        inputs=summary,
        layers=[LayerPin(name="atlas", version=1)],
        resolver=resolver,
    )

    assert [(p.id, p.image.source) for p in plan.processors] == [
        ("recordings", "builtin"),
        ("convert", "ecr"),
        ("bandpower", "unresolved"),
        ("results", "builtin"),
    ]
    assert plan.processors[2].params == {"WINDOW": "30"}
    assert plan.warnings == [
        "bandpower: image ghcr.io/lab/bandpower was not resolved to a digest (not found); an untagged "
        "reference means 'latest', which moves, so a rebuilt image would get the same content key",
        "layer 'atlas' version 1 has no checksum: keyed by its version only",
        "1 input file(s) have no checksum in Pennsieve: keyed by id, path and size only",
    ]
    shown = plan.model_dump(mode="json")
    assert shown["inputs"]["file_count"] == 4 and "entries" not in shown["inputs"]  # the response stays small
    assert shown["content_key"] == plan.content_key


def test_an_unresolved_tag_is_named_in_the_warning():
    wf = workflow(DEFINITION.replace("convert:1.2", "convert:nightly"))
    plan = plan_run(wf, params=run_parameters(wf), resolver=resolver)
    assert "its tag 'nightly' can move" in plan.warnings[0]


def test_sourceurl_processors_use_the_registrys_image_and_commands_are_flagged():
    wf = workflow(
        """
        name: mixed
        processors:
          - {id: src, type: data-source}
          - {id: convert, sourceUrl: "https://github.com/lab/convert", tag: v1.2.0, dependsOn: [src]}
          - {id: local, command: [python, -m, score], dependsOn: [convert]}
        """
    )
    unresolved = plan_run(wf, params=run_parameters(wf), resolver=resolver)
    resolved = plan_run(
        wf, params=run_parameters(wf), resolver=resolver, images={"convert": "ghcr.io/lab/convert:1.2"}
    )

    assert unresolved.processors[1].image.reference == "https://github.com/lab/convert@v1.2.0"
    assert resolved.processors[1].image.digest == DIGESTS["ghcr.io/lab/convert:1.2"]
    assert resolved.content_key != unresolved.content_key
    assert resolved.warnings == ["local: runs a local command; the code it runs is not part of the key"]


# -- resolving images without a registry -------------------------------------------------------


def fake_docker(tmp_path: Path, output: str, code: int = 0) -> str:
    script = tmp_path / "docker"
    stream = "" if code == 0 else " >&2"  # docker reports errors on stderr
    script.write_text(f"#!/bin/sh\ncat{stream} <<'EOF'\n{output}\nEOF\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_local_image_resolves_through_docker_repo_digests_or_its_id(tmp_path):
    pushed = fake_docker(tmp_path, '["ghcr.io/lab/convert@sha256:' + "1" * 64 + '"]|sha256:' + "2" * 64)
    (tmp_path / "built").mkdir()
    built = fake_docker(tmp_path / "built", "[]|sha256:" + "3" * 64)

    assert resolve_image("ghcr.io/lab/convert:1.2", docker=pushed) == ResolvedImage(
        reference="ghcr.io/lab/convert:1.2", digest="sha256:" + "1" * 64, source="docker"
    )
    local = resolve_image("convert-dev:latest", docker=built)
    assert (local.digest, local.source) == ("sha256:" + "3" * 64, "docker-id")


def test_an_image_docker_cannot_inspect_stays_unresolved(tmp_path):
    failing = fake_docker(tmp_path, "Error: No such image: ghcr.io/lab/x:1", code=1)

    refused = resolve_image("ghcr.io/lab/x:1", docker=failing)
    missing = resolve_image("ghcr.io/lab/x:1", docker=str(tmp_path / "no-docker-here"))

    assert (refused.source, refused.digest) == ("unresolved", None)
    assert "No such image" in (refused.detail or "")
    assert missing.detail == "no docker client to ask"


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("ghcr.io/lab/convert:1.2", "1.2"),
        ("localhost:5000/convert", None),
        ("localhost:5000/convert:dev", "dev"),
        ("python", None),
    ],
)
def test_tags_are_read_after_the_last_slash(image, tag):
    assert image_tag(image) == tag


def test_layer_pins_come_from_the_registrys_published_versions():
    from pennflow.api.runs import layer_pins
    from pennflow.layers.models import LayerRecord, LayerStatus, LayerType

    ready = LayerStatus.READY
    records = {
        "atlas": LayerRecord(name="atlas", type=LayerType.DATA, status=ready, version=2, checksum="d" * 64),
        "scientific-stack": LayerRecord(
            name="scientific-stack", type=LayerType.PYTHON_ENV, status=ready, version=5
        ),
        "empty": LayerRecord(name="empty", type=LayerType.DATA),
    }

    class Registry:
        def get(self, name):
            return records.get(name)

    pins = layer_pins(["scientific-stack", "atlas", "atlas"], Registry())

    assert pins == [
        LayerPin(name="atlas", version=2, checksum="d" * 64),
        LayerPin(name="scientific-stack", version=5, checksum=None),
    ]
    with pytest.raises(ValueError) as refused:
        layer_pins(["empty", "missing", "atlas"], Registry())
    assert str(refused.value) == "layer 'empty' is EMPTY: populate it first; layer 'missing' not found"
