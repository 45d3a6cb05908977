"""The processor contract (DESIGN §3): environment, run folder layout, params, fan-in union, batches."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from pennflow.workflow.contract import (
    LAYERS_MOUNT,
    RUN_MOUNT,
    FanInClash,
    RunLayout,
    UnknownParameter,
    build_union,
    env_name,
    list_input_files,
    make_batches,
    processor_environment,
    run_parameters,
    stage_batch,
    state_key,
)
from pennflow.workflow.definition import parse_definition

WORKFLOW = parse_definition(
    """
name: eeg-quality
processors:
  - id: recordings
    type: data-source
  - id: convert
    command: [python, convert.py]
    dependsOn: [recordings]
    defaultParams: {WINDOW: "30", MODE: fast}
  - id: band-power
    command: [python, bp.py]
    dependsOn: [convert]
    defaultParams: {WINDOW: "2"}
    layers: [sci-stack, atlas]
  - id: report
    command: [python, report.py]
    dependsOn: [convert, band-power]
"""
)
LAYOUT = RunLayout(RUN_MOUNT)


def _write(root: Path, rel: str, text: str = "x") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_names_become_environment_and_state_keys() -> None:
    assert env_name("band-power") == "BAND_POWER"
    assert state_key("band-power") == "band_power"
    assert state_key("3d-model") == "_3d_model"  # JSONPath keys cannot start with a digit


def test_the_run_folder_layout() -> None:
    layout = RunLayout(PurePosixPath("/runs/r-1"))
    assert str(layout.output_dir("convert")) == "/runs/r-1/convert/output"
    assert str(layout.union_dir("report")) == "/runs/r-1/report/input"
    assert str(layout.batch_dir("convert", 7)) == "/runs/r-1/convert/batches/00007"
    assert layout.input_dir(WORKFLOW.processor("recordings")) is None
    assert str(layout.input_dir(WORKFLOW.processor("convert"))) == "/runs/r-1/recordings/output"
    assert str(layout.input_dir(WORKFLOW.processor("report"))) == "/runs/r-1/report/input"


def _env(processor_id: str, **kwargs) -> dict[str, str]:
    return processor_environment(
        WORKFLOW,
        WORKFLOW.processor(processor_id),
        run_id="r-1",
        layout=LAYOUT,
        layers_root=LAYERS_MOUNT,
        params=run_parameters(WORKFLOW)[processor_id],
        **kwargs,
    )


def test_one_dependency_reads_its_output_and_gets_ids_and_params() -> None:
    env = _env("convert", dataset_id="N:ds:1")
    assert env == {
        "WINDOW": "30",
        "MODE": "fast",
        "PROCESSOR_ID": "convert",
        "WORKFLOW_NAME": "eeg-quality",
        "INPUT_DIR": "/mnt/run/recordings/output",
        "OUTPUT_DIR": "/mnt/run/convert/output",
        "LAYERS_DIR": "/mnt/layers",
        "RUN_ID": "r-1",
        "DATASET_ID": "N:ds:1",
    }


def test_fan_in_reads_the_union_and_each_dependency_by_name() -> None:
    env = _env("report")
    assert env["INPUT_DIR"] == "/mnt/run/report/input"
    assert env["INPUT_DIR_CONVERT"] == "/mnt/run/convert/output"
    assert env["INPUT_DIR_BAND_POWER"] == "/mnt/run/band-power/output"
    assert env["DATASET_ID"] == ""
    assert "PYTHONPATH" not in env  # no layers, nothing inherited


def test_layers_get_a_folder_variable_and_their_python_folder_on_pythonpath() -> None:
    env = _env("band-power", inherited_pythonpath="/opt/lib")
    assert env["LAYER_SCI_STACK_DIR"] == "/mnt/layers/sci-stack"
    assert env["LAYER_ATLAS_DIR"] == "/mnt/layers/atlas"
    parts = env["PYTHONPATH"].split(":")
    assert parts[-1] == "/opt/lib"
    for layer in ("sci-stack", "atlas"):  # both layouts: pennflow's older one and Pennsieve's
        assert f"/mnt/layers/{layer}/python" in parts
        assert f"/mnt/layers/{layer}/lib/python3.12/site-packages" in parts
    assert parts.index("/mnt/layers/sci-stack/python") < parts.index("/mnt/layers/atlas/python")
    assert "LAYER_SCI_STACK_DIR" not in _env("convert")  # only the layers a processor asked for


def test_params_are_defaults_with_overrides_on_declared_keys() -> None:
    params = run_parameters(WORKFLOW, {"WINDOW": "10", "convert.MODE": "slow"})
    assert params["convert"] == {"WINDOW": "10", "MODE": "slow"}
    assert params["band-power"] == {"WINDOW": "10"}
    assert params["report"] == {}
    only_one = run_parameters(WORKFLOW, {"band-power.WINDOW": "4"})
    assert (only_one["convert"]["WINDOW"], only_one["band-power"]["WINDOW"]) == ("30", "4")
    assert WORKFLOW.processor("convert").default_params["WINDOW"] == "30"  # the definition is untouched


def test_unknown_params_are_all_named() -> None:
    with pytest.raises(UnknownParameter) as caught:
        run_parameters(WORKFLOW, {"WINDOWS": "1", "report.WINDOW": "2", "MODE": "ok"})
    assert caught.value.keys == ["WINDOWS", "report.WINDOW"]
    assert "'WINDOWS'" in str(caught.value) and "'report.WINDOW'" in str(caught.value)


def test_the_union_holds_every_dependency_file_with_its_folders(tmp_path: Path) -> None:
    _write(tmp_path / "a", "x.txt", "from a")
    _write(tmp_path / "a", "sub/y.txt")
    _write(tmp_path / "b", "z.txt", "from b")
    count = build_union({"a": tmp_path / "a", "b": tmp_path / "b"}, tmp_path / "union")
    assert count == 3
    assert list_input_files(tmp_path / "union") == ["sub/y.txt", "x.txt", "z.txt"]
    assert (tmp_path / "union" / "z.txt").read_text() == "from b"


def test_an_empty_union_is_still_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert build_union({"a": tmp_path / "a"}, tmp_path / "union") == 0
    assert (tmp_path / "union").is_dir()


def test_a_clash_in_the_union_names_the_file_and_both_dependencies(tmp_path: Path) -> None:
    _write(tmp_path / "a", "sub/same.txt")
    _write(tmp_path / "b", "sub/same.txt")
    with pytest.raises(FanInClash, match=r"sub/same.txt is written by both 'a' and 'b'"):
        build_union({"a": tmp_path / "a", "b": tmp_path / "b"}, tmp_path / "union")
    assert not (tmp_path / "union").exists()  # checked before anything is linked


def test_batches_split_in_order_and_stage_only_their_files(tmp_path: Path) -> None:
    for name in ("c.txt", "a.txt", "sub/b.txt", "d.txt", "e.txt"):
        _write(tmp_path / "in", name, name)
    files = list_input_files(tmp_path / "in")
    assert files == ["a.txt", "c.txt", "d.txt", "e.txt", "sub/b.txt"]
    batches = make_batches(files, 2)
    assert batches == [["a.txt", "c.txt"], ["d.txt", "e.txt"], ["sub/b.txt"]]
    assert make_batches([], 3) == []

    stage_batch(tmp_path / "in", batches[2], tmp_path / "batch")
    assert list_input_files(tmp_path / "batch") == ["sub/b.txt"]
    assert (tmp_path / "batch" / "sub" / "b.txt").read_text() == "sub/b.txt"
    stage_batch(tmp_path / "in", [], tmp_path / "empty")
    assert (tmp_path / "empty").is_dir()
