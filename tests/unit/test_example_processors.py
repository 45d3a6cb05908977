"""The example EEG processors, run as the engine runs them: subprocesses reading INPUT_DIR and
writing OUTPUT_DIR, chained by hand on a small generated dataset."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pennflow.workflow.definition import FARGATE_MEMORY, load_definition

REPO = Path(__file__).resolve().parents[2]
PROCESSORS = REPO / "processors"
WORKFLOWS = REPO / "workflows"
GENERATOR = PROCESSORS / "make_example_dataset.py"
EXAMPLES = ["convert", "bandpower", "quality", "report"]
SUBJECTS, SESSIONS, SECONDS, SFREQ = 2, 2, 20, 256
BANDS = ["delta", "theta", "alpha", "beta", "gamma"]


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_example_dataset", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dataset = _load_generator()
# The movement artefacts sit in the last session of the last subject.
NOISY_RECORDING = "sub-02/ses-02/sub-02_ses-02_task-rest_eeg"


def run_processor(name: str, output_dir: Path, input_dir: Path | None = None, **params: str):
    output_dir.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "OUTPUT_DIR": str(output_dir), "RUN_ID": "run-test"}
    env |= {"PROCESSOR_ID": name, "WORKFLOW_NAME": "eeg-quality", **params}
    if input_dir is not None:
        env["INPUT_DIR"] = str(input_dir)
    command = [sys.executable, str(PROCESSORS / name / "main.py")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    return result


def generate(root: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(GENERATOR), str(root), *args]
    return check(subprocess.run(command, capture_output=True, text=True, timeout=60))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """The whole example workflow on 2 subjects x 2 sessions of 20 s."""
    root = tmp_path_factory.mktemp("eeg")
    dirs = {name: root / name for name in ["raw", "convert", "bandpower", "quality", "union", "report"]}
    generate(dirs["raw"], "--subjects", str(SUBJECTS), "--sessions", str(SESSIONS), "--seconds", str(SECONDS))
    check(run_processor("convert", dirs["convert"], dirs["raw"]))
    check(run_processor("bandpower", dirs["bandpower"], dirs["convert"], WINDOW_SECONDS="2"))
    check(run_processor("quality", dirs["quality"], dirs["convert"], LINE_FREQ="60"))
    # Fan-in as the engine sets it up: the union of both outputs plus one folder per dependency.
    for dep in ("bandpower", "quality"):
        shutil.copytree(dirs[dep], dirs["union"], dirs_exist_ok=True)
    fan_in = {"INPUT_DIR_BANDPOWER": str(dirs["bandpower"]), "INPUT_DIR_QUALITY": str(dirs["quality"])}
    check(run_processor("report", dirs["report"], dirs["union"], MIN_QUALITY="0.5", **fan_in))
    return dirs


def recordings(run: dict[str, Path]) -> list[str]:
    return sorted(p.relative_to(run["raw"]).with_suffix("").as_posix() for p in run["raw"].rglob("*.csv"))


def read_bandpower(path: Path) -> dict[str, dict[str, float]]:
    with path.open(newline="") as handle:
        return {row.pop("channel"): {k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)}


def quality_channels(run: dict[str, Path], recording: str) -> tuple[dict, dict[str, dict]]:
    report = json.loads((run["quality"] / f"{recording}.quality.json").read_text())
    return report, {channel["name"]: channel for channel in report["channels"]}


# ---------------------------------------------------------------- dataset generator


def test_generator_writes_each_session_in_its_own_folder(run):
    assert recordings(run) == [
        f"sub-{s:02d}/ses-{e:02d}/sub-{s:02d}_ses-{e:02d}_task-rest_eeg" for s in (1, 2) for e in (1, 2)
    ]
    lines = (run["raw"] / "sub-01/ses-01/sub-01_ses-01_task-rest_eeg.csv").read_text().splitlines()
    assert lines[0] == "time," + ",".join(dataset.CHANNELS)
    assert len(lines) == 1 + SECONDS * SFREQ


def test_generator_is_deterministic_per_seed(run, tmp_path):
    args = ["--subjects", str(SUBJECTS), "--sessions", str(SESSIONS), "--seconds", str(SECONDS)]
    out = generate(tmp_path / "same", *args).stdout
    assert "4 recording(s) in" in out
    generate(tmp_path / "other", *args, "--seed", "1")
    for recording in recordings(run):
        expected = (run["raw"] / f"{recording}.csv").read_bytes()
        assert (tmp_path / "same" / f"{recording}.csv").read_bytes() == expected
        assert (tmp_path / "other" / f"{recording}.csv").read_bytes() != expected


# ---------------------------------------------------------------- convert


def test_convert_keeps_subfolders_shapes_channels_and_sfreq(run):
    for recording in recordings(run):
        with np.load(run["convert"] / f"{recording}.npz") as archive:
            data, channels, sfreq = archive["data"], list(archive["channels"]), float(archive["sfreq"])
        assert data.dtype == np.float32
        assert data.shape == (len(dataset.CHANNELS), SECONDS * SFREQ)
        assert channels == dataset.CHANNELS
        assert sfreq == SFREQ
        second_row = (run["raw"] / f"{recording}.csv").read_text().splitlines()[2].split(",")
        np.testing.assert_allclose(data[:, 1], [float(v) for v in second_row[1:]], atol=1e-3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("time,Fz,Cz\n0,1,2\n0.5,3,4\n1.0,5,abc\n", ["line 4", "'abc' is not a number"]),
        ("time,Fz,Cz\n0,1,2\n0.5,3\n", ["line 3", "expected 3 values, got 2"]),
        ("seconds,Fz\n0,1\n0.5,2\n", ["line 1", "header must be 'time,<channel>,...'"]),
        ("time,Fz\n0,1\n0.5,2\n1.0,3\n2.0,4\n", ["line 5", "irregular sampling"]),
        ("time,Fz\n0,1\n\n0.5,nan\n", ["line 4", "values must be finite"]),
    ],
)
def test_convert_rejects_malformed_csv_naming_file_and_line(tmp_path, text, expected):
    (tmp_path / "in" / "sub-01").mkdir(parents=True)
    (tmp_path / "in" / "sub-01" / "bad.csv").write_text(text)
    result = run_processor("convert", tmp_path / "out", tmp_path / "in")
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("convert: error: sub-01/bad.csv: ")
    for part in expected:
        assert part in message


def write_edf(path: Path, signals: dict[str, np.ndarray], sfreq: int, physical=(-500.0, 500.0)) -> None:
    """A minimal EDF+ writer: 1 s records, 16-bit samples and one annotation signal."""
    labels = [*signals, "EDF Annotations"]
    per_record = [sfreq] * len(signals) + [30]
    records = len(next(iter(signals.values()))) // sfreq
    digital = (-32768, 32767)

    def field(value, width: int) -> bytes:
        return str(value).ljust(width)[:width].encode("ascii")

    def fields(values, width: int) -> bytes:
        return b"".join(field(value, width) for value in values)

    count = len(labels)
    header = b"".join(
        [field(0, 8), field("X X X X", 80), field("Startdate X X X X", 80), field("01.01.24", 8)]
        + [field("00.00.00", 8), field(256 * (count + 1), 8), field("EDF+C", 44), field(records, 8)]
        + [
            field(1, 8),
            field(count, 4),
            fields(labels, 16),
            fields([""] * count, 80),
            fields(["uV"] * count, 8),
        ]
        + [fields([physical[0]] * count, 8), fields([physical[1]] * count, 8)]
        + [fields([digital[0]] * count, 8), fields([digital[1]] * count, 8), fields([""] * count, 80)]
        + [fields(per_record, 8), fields([""] * count, 32)]
    )
    gain = (digital[1] - digital[0]) / (physical[1] - physical[0])
    body = []
    for record in range(records):
        for values in signals.values():
            chunk = values[record * sfreq : (record + 1) * sfreq]
            body.append(np.round((chunk - physical[0]) * gain + digital[0]).astype("<i2").tobytes())
        body.append(f"+{record}\x14\x14\x00".encode().ljust(60, b"\x00"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(body))


def test_convert_reads_edf_and_drops_annotations(tmp_path):
    rng = np.random.default_rng(3)
    signals = {"Fz": rng.normal(0, 40, 4 * 128), "Oz": 100 * np.sin(np.arange(4 * 128) / 5)}
    write_edf(tmp_path / "in" / "sub-01" / "rec.edf", signals, sfreq=128)
    result = check(run_processor("convert", tmp_path / "out", tmp_path / "in"))
    assert "sub-01/rec.edf" in result.stdout
    with np.load(tmp_path / "out" / "sub-01" / "rec.npz") as archive:
        assert list(archive["channels"]) == ["Fz", "Oz"]
        assert float(archive["sfreq"]) == 128
        step = 1000 / 65535  # one digital unit in uV
        np.testing.assert_allclose(archive["data"], np.vstack(list(signals.values())), atol=step)


def test_convert_rejects_truncated_edf(tmp_path):
    write_edf(tmp_path / "in" / "rec.edf", {"Fz": np.zeros(4 * 128)}, sfreq=128)
    path = tmp_path / "in" / "rec.edf"
    path.write_bytes(path.read_bytes()[:-300])
    result = run_processor("convert", tmp_path / "out", tmp_path / "in")
    assert result.returncode != 0
    assert "rec.edf: EDF data is shorter than its header says" in result.stderr


# ---------------------------------------------------------------- bandpower


def test_alpha_dominates_on_channels_with_an_alpha_rhythm(run):
    steady = [c for c in dataset.ALPHA_CHANNELS if c not in dataset.MOVEMENT_CHANNELS]
    for recording in recordings(run):
        powers = read_bandpower(run["bandpower"] / f"{recording}.bandpower.csv")
        assert list(powers) == dataset.CHANNELS
        for channel in steady:
            others = [powers[channel][band] for band in BANDS if band != "alpha"]
            assert powers[channel]["alpha"] > 2 * max(others), (recording, channel, powers[channel])
            assert powers[channel]["alpha_rel"] > 0.5
        # Frontal channels carry only a weak alpha rhythm.
        assert powers["Fp1"]["alpha_rel"] < powers["O1"]["alpha_rel"] / 2
        assert np.isnan(powers[dataset.FLAT_CHANNEL]["alpha_rel"])  # no power at all


def test_bandpower_welch_scaling_and_params(tmp_path):
    """A sine of amplitude A carries power A**2 / 2, whatever the window; BANDS renames the columns."""
    times = np.arange(20 * SFREQ) / SFREQ
    data = np.vstack([10 * np.sin(2 * np.pi * 10 * times), 4 * np.sin(2 * np.pi * 2.5 * times)])
    (tmp_path / "in").mkdir()
    np.savez(
        tmp_path / "in" / "sines.npz",
        data=data.astype(np.float32),
        channels=np.array(["a", "b"]),
        sfreq=256.0,
    )
    check(
        run_processor(
            "bandpower", tmp_path / "out", tmp_path / "in", WINDOW_SECONDS="4", BANDS="low:1-6,high:6-20"
        )
    )
    powers = read_bandpower(tmp_path / "out" / "sines.bandpower.csv")
    assert powers["a"]["high"] == pytest.approx(50, rel=0.02)
    assert powers["a"]["low"] < 0.01
    assert powers["b"]["low"] == pytest.approx(8, rel=0.02)
    assert powers["b"]["high_rel"] < 0.01


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"WINDOW_SECONDS": "two"}, "WINDOW_SECONDS must be a positive number of seconds, got 'two'"),
        ({"BANDS": "alpha:8-13,beta:30"}, "BANDS: 'beta:30' is not of the form name:low-high"),
        ({"BANDS": "high:100-200"}, "band high reaches 200 Hz, above the Nyquist frequency 128 Hz"),
    ],
)
def test_bandpower_rejects_bad_params(run, tmp_path, params, message):
    result = run_processor("bandpower", tmp_path / "out", run["convert"], **params)
    assert result.returncode != 0
    assert message in result.stderr


# ---------------------------------------------------------------- quality


def test_flat_line_noise_and_clipped_channels_score_low(run):
    for recording in recordings(run):
        report, channels = quality_channels(run, recording)
        assert channels[dataset.FLAT_CHANNEL]["flat_fraction"] > 0.9
        assert channels[dataset.LINE_NOISE_CHANNEL]["line_noise_ratio"] > 0.5
        assert channels[dataset.CLIPPED_CHANNEL]["clip_fraction"] > 0.05
        for bad in (dataset.FLAT_CHANNEL, dataset.LINE_NOISE_CHANNEL, dataset.CLIPPED_CHANNEL):
            assert channels[bad]["score"] < 0.2, (recording, channels[bad])
        for good in ("P4", "O1", "O2"):
            assert channels[good]["score"] > 0.9, (recording, channels[good])
        assert report["score"] == pytest.approx(np.mean([c["score"] for c in channels.values()]), abs=1e-3)


def test_movement_artefacts_count_as_amplitude_outliers(run):
    _, noisy = quality_channels(run, NOISY_RECORDING)
    _, calm = quality_channels(run, "sub-01/ses-01/sub-01_ses-01_task-rest_eeg")
    for channel in dataset.MOVEMENT_CHANNELS:
        assert noisy[channel]["outlier_fraction"] > 0.05
        assert noisy[channel]["score"] < 0.2
        assert calm[channel]["score"] > 0.9


def test_line_freq_param_moves_the_line_noise_check(run, tmp_path):
    check(run_processor("quality", tmp_path / "out", run["convert"], LINE_FREQ="50"))
    report = json.loads(
        (tmp_path / "out" / "sub-01/ses-01/sub-01_ses-01_task-rest_eeg.quality.json").read_text()
    )
    channel = next(c for c in report["channels"] if c["name"] == dataset.LINE_NOISE_CHANNEL)
    assert report["line_freq"] == 50
    assert channel["line_noise_ratio"] < 0.05  # its noise is at 60 Hz


# ---------------------------------------------------------------- report (fan-in)


def read_summary(folder: Path) -> list[dict[str, str]]:
    with (folder / "summary.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_summary_has_one_row_per_recording_and_fails_the_noisy_one(run):
    rows = read_summary(run["report"])
    assert [row["recording"] for row in rows] == recordings(run)
    for row in rows:
        report, _ = quality_channels(run, row["recording"])
        assert float(row["quality_score"]) == pytest.approx(report["score"], abs=1e-4)
        assert row["status"] == ("fail" if row["recording"] == NOISY_RECORDING else "pass")
        assert float(row["alpha_beta_ratio"]) > 2  # good channels are alpha-dominated
        assert int(row["channels"]) == 8
    assert {row["recording"]: int(row["good_channels"]) for row in rows}[NOISY_RECORDING] == 3
    markdown = (run["report"] / "summary.md").read_text()
    assert "4 recording(s), 3 pass and 1 fail at minimum quality 0.5 (run run-test)." in markdown
    assert f"| {NOISY_RECORDING} |" in markdown


def test_report_reads_each_dependency_from_its_own_folder(run, tmp_path):
    (tmp_path / "empty-union").mkdir()
    fan_in = {"INPUT_DIR_BANDPOWER": str(run["bandpower"]), "INPUT_DIR_QUALITY": str(run["quality"])}
    check(run_processor("report", tmp_path / "out", tmp_path / "empty-union", **fan_in))
    assert read_summary(tmp_path / "out") == read_summary(run["report"])


def test_report_fails_when_a_recording_has_no_quality_scores(run, tmp_path):
    quality = tmp_path / "quality"
    shutil.copytree(run["quality"], quality)
    (quality / f"{NOISY_RECORDING}.quality.json").unlink()
    fan_in = {"INPUT_DIR_BANDPOWER": str(run["bandpower"]), "INPUT_DIR_QUALITY": str(quality)}
    result = run_processor("report", tmp_path / "out", **fan_in)
    assert result.returncode != 0
    assert f"recording {NOISY_RECORDING} has no quality scores" in result.stderr


# ---------------------------------------------------------------- failures every processor shares


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("convert", "no .csv or .edf recordings found in INPUT_DIR"),
        ("bandpower", "no .npz recordings found in INPUT_DIR"),
        ("quality", "no .npz recordings found in INPUT_DIR"),
        ("report", "no *.bandpower.csv files in INPUT_DIR"),
    ],
)
def test_empty_input_dir_fails_clearly(tmp_path, name, message):
    (tmp_path / "in").mkdir()
    result = run_processor(name, tmp_path / "out", tmp_path / "in")
    assert result.returncode != 0
    assert result.stderr.strip().startswith(f"{name}: error: {message}")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", EXAMPLES)
def test_missing_input_dir_variable_fails_clearly(tmp_path, name):
    result = run_processor(name, tmp_path / "out")
    assert result.returncode != 0
    assert "INPUT_DIR" in result.stderr and "is not set" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- manifests and example workflows


def test_each_processor_folder_builds_on_its_own():
    workflow = load_definition(WORKFLOWS / "eeg-quality.yaml")
    for name in EXAMPLES:
        folder = PROCESSORS / name
        dockerfile = (folder / "Dockerfile").read_text()
        assert "FROM python:3.12-slim" in dockerfile
        assert 'ENTRYPOINT ["python", "/app/main.py"]' in dockerfile
        assert "COPY main.py /app/main.py" in dockerfile
        manifest = yaml.safe_load((folder / "processor.yaml").read_text())
        assert manifest["name"] == name and manifest["description"]
        processor = workflow.processor(name)
        assert manifest["image"] == processor.image
        assert (manifest["resources"]["cpu"], manifest["resources"]["memory"]) == (
            processor.cpu,
            processor.memory,
        )
        assert manifest["resources"]["memory"] in FARGATE_MEMORY[manifest["resources"]["cpu"]]
        source = (folder / "main.py").read_text()
        for param, spec in manifest["params"].items():
            assert f'"{param}"' in source, f"{name} does not read {param}"
            assert spec["description"]
        for param, value in processor.default_params.items():
            assert manifest["params"][param]["default"] == value, (name, param)
        # Processors are standalone: no pennflow, no AWS.
        assert not any(
            f"{word} {module}" in source for word in ("import", "from") for module in ("pennflow", "boto3")
        )


def test_example_workflows_describe_the_same_pipeline():
    ours = load_definition(WORKFLOWS / "eeg-quality.yaml")
    pennsieve = load_definition(WORKFLOWS / "eeg-quality.pennsieve.json")
    graph = {p.id: (p.type.value, p.dependencies, p.default_params) for p in ours.processors}
    assert graph == {p.id: (p.type.value, p.dependencies, p.default_params) for p in pennsieve.processors}
    assert graph["report"][1] == ("bandpower", "quality")
    assert ours.processor("results").target_type.value == "s3"
    assert pennsieve.processor("results").target_type.value == "Pennsieve Dataset"
    assert pennsieve.organization_id and pennsieve.description
    for processor in ours.processors:
        if processor.command:
            # The local engine runs commands from the workflow file's folder.
            assert (WORKFLOWS / processor.command[-1]).resolve().is_file(), processor.command
    for processor in pennsieve.processors:
        if processor.type.value == "processor":
            assert processor.source_url and processor.tag and processor.compute_type.value == "standard"
    assert any(p.retry for p in ours.processors) and any(p.timeout_seconds < 86_400 for p in ours.processors)
