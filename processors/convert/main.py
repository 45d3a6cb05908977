"""Convert raw EEG recordings (CSV, EDF) into `<stem>.npz` arrays.

Processor contract: reads every `*.csv` and `*.edf` under INPUT_DIR (any depth) and writes
`<stem>.npz` into the same relative sub-folder of OUTPUT_DIR, holding `data` (float32,
channels x samples), `channels` (names) and `sfreq` (Hz).

CSV layout: a header row `time,<ch1>,<ch2>,...`, then one row per sample with the time in
seconds in the first column. The sampling rate comes from the time column, which must be regular.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NAME = "convert"
SUFFIXES = (".csv", ".edf")
# Sample intervals may differ from their median by this fraction (rounding in written times).
SAMPLING_JITTER = 0.01


class ProcessorError(Exception):
    """A problem with the input or the parameters; reported as one line on stderr."""


@dataclass
class Recording:
    data: np.ndarray  # float32, channels x samples
    channels: list[str]
    sfreq: float


def read_csv(path: Path, label: str) -> Recording:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ProcessorError(f"{label}: not a UTF-8 text file") from None
    if not lines or not lines[0].strip():
        raise ProcessorError(f"{label}: line 1: missing header row 'time,<channel>,...'")
    header = [name.strip() for name in lines[0].split(",")]
    if header[0].lower() != "time" or len(header) < 2:
        raise ProcessorError(f"{label}: line 1: header must be 'time,<channel>,...', got '{lines[0][:80]}'")
    if any(not name for name in header[1:]):
        raise ProcessorError(f"{label}: line 1: empty channel name in header")
    rows, line_numbers = [], []
    resolution = 1.0  # the finest rounding step seen; '0.5' may be '0.500000' with zeros trimmed
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != len(header):
            raise ProcessorError(f"{label}: line {number}: expected {len(header)} values, got {len(fields)}")
        try:
            rows.append([float(field) for field in fields])
            line_numbers.append(number)
            resolution = min(resolution, time_resolution(fields[0]))
        except ValueError:
            bad = next(field for field in fields if not _is_number(field))
            raise ProcessorError(f"{label}: line {number}: '{bad.strip()[:40]}' is not a number") from None
    if len(rows) < 2:
        raise ProcessorError(f"{label}: needs at least 2 samples, found {len(rows)}")
    table = np.asarray(rows, dtype=np.float64)
    not_finite = np.flatnonzero(~np.isfinite(table).all(axis=1))
    if not_finite.size:
        raise ProcessorError(
            f"{label}: line {line_numbers[not_finite[0]]}: values must be finite (no nan or inf)"
        )
    sfreq = sampling_rate(table[:, 0], resolution, line_numbers, label)
    return Recording(table[:, 1:].T.astype(np.float32), header[1:], sfreq)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def time_resolution(text: str) -> float:
    """The rounding step of a written time value, e.g. 1e-6 for '0.003906'."""
    text = text.strip().lower()
    if "e" in text:  # scientific notation: assume full precision
        return 1e-9
    if "." not in text:
        return 1.0
    return 10.0 ** -len(text.split(".")[1])


def sampling_rate(times: np.ndarray, resolution: float, line_numbers: list[int], label: str) -> float:
    steps = np.diff(times)
    step = float(np.median(steps))
    if step <= 0:
        raise ProcessorError(f"{label}: time column must increase")
    # Times written with few decimals wobble by one rounding step around the true interval.
    tolerance = SAMPLING_JITTER * step + resolution
    irregular = np.flatnonzero(np.abs(steps - step) > tolerance)
    if irregular.size:
        line = line_numbers[int(irregular[0]) + 1]  # step i ends at sample i + 1
        raise ProcessorError(f"{label}: line {line}: irregular sampling (time step differs from {step:g} s)")
    # The span of the whole recording gives the most precise rate; keep only the digits it supports.
    span = float(times[-1] - times[0])
    sfreq = (len(times) - 1) / span
    uncertainty = sfreq * resolution / span
    return round(sfreq, int(min(max(np.floor(-np.log10(2 * uncertainty)), 0), 9)))


def read_edf(path: Path, label: str) -> Recording:
    """Read an EDF/EDF+ file (16-bit samples); annotation signals are left out."""
    raw = path.read_bytes()
    if len(raw) < 256 or raw[:8].strip() != b"0":
        raise ProcessorError(f"{label}: not an EDF file (version field must be '0')")
    try:
        header_bytes = int(raw[184:192])
        record_count = int(raw[236:244])
        record_seconds = float(raw[244:252])
        signal_count = int(raw[252:256])
    except ValueError:
        raise ProcessorError(f"{label}: malformed EDF header") from None
    if signal_count < 1 or header_bytes != 256 * (signal_count + 1) or len(raw) < header_bytes:
        raise ProcessorError(f"{label}: malformed EDF header (header size does not match signal count)")
    fields = _edf_signal_fields(raw[256:header_bytes], signal_count, label)
    samples_per_record = fields["samples"]
    record_size = 2 * sum(samples_per_record)
    available = (len(raw) - header_bytes) // record_size
    if record_count < 0:  # -1 while recording was in progress
        record_count = available
    if record_seconds <= 0:
        raise ProcessorError(f"{label}: malformed EDF header (record duration must be positive)")
    if raw[192:197] == b"EDF+D":
        raise ProcessorError(f"{label}: discontinuous EDF+ (EDF+D) is not supported")
    if available < record_count or record_count < 1:
        raise ProcessorError(f"{label}: EDF data is shorter than its header says ({available} records)")
    body = np.frombuffer(raw, dtype="<i2", count=record_count * record_size // 2, offset=header_bytes)
    records = body.reshape(record_count, -1)
    keep = [i for i, name in enumerate(fields["labels"]) if name != "EDF Annotations"]
    rates = {samples_per_record[i] for i in keep}
    if not keep:
        raise ProcessorError(f"{label}: EDF file has no data signals")
    if len(rates) > 1:
        raise ProcessorError(
            f"{label}: signals have different sampling rates, which this converter does not support"
        )
    offsets = np.cumsum([0, *samples_per_record])
    data = np.empty((len(keep), record_count * samples_per_record[keep[0]]), dtype=np.float32)
    for row, i in enumerate(keep):
        digital = records[:, offsets[i] : offsets[i + 1]].reshape(-1).astype(np.float64)
        span = fields["digital_max"][i] - fields["digital_min"][i]
        if span == 0:
            raise ProcessorError(
                f"{label}: signal '{fields['labels'][i]}' has digital min equal to digital max"
            )
        gain = (fields["physical_max"][i] - fields["physical_min"][i]) / span
        data[row] = (digital - fields["digital_min"][i]) * gain + fields["physical_min"][i]
    sfreq = round(samples_per_record[keep[0]] / record_seconds, 6)
    return Recording(data, [fields["labels"][i] for i in keep], sfreq)


def _edf_signal_fields(block: bytes, count: int, label: str) -> dict[str, list]:
    """Split the per-signal header: each field is stored for all signals before the next field."""
    widths = [
        ("labels", 16),
        ("transducer", 80),
        ("unit", 8),
        ("physical_min", 8),
        ("physical_max", 8),
        ("digital_min", 8),
        ("digital_max", 8),
        ("prefilter", 80),
        ("samples", 8),
        ("reserved", 32),
    ]
    fields: dict[str, list] = {}
    position = 0
    for name, width in widths:
        values = [
            block[position + i * width : position + (i + 1) * width].decode("ascii", "replace").strip()
            for i in range(count)
        ]
        position += width * count
        fields[name] = values
    try:
        for name in ("physical_min", "physical_max", "digital_min", "digital_max"):
            fields[name] = [float(value) for value in fields[name]]
        fields["samples"] = [int(value) for value in fields["samples"]]
    except ValueError:
        raise ProcessorError(f"{label}: malformed EDF signal header") from None
    if any(n < 1 for n in fields["samples"]):
        raise ProcessorError(f"{label}: EDF signal with no samples per record")
    return fields


READERS = {".csv": read_csv, ".edf": read_edf}


def find_recordings(input_dir: Path) -> list[Path]:
    return sorted(p for p in input_dir.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def convert_all(input_dir: Path, output_dir: Path) -> int:
    sources = find_recordings(input_dir)
    if not sources:
        raise ProcessorError(f"no .csv or .edf recordings found in INPUT_DIR ({input_dir})")
    written: dict[Path, str] = {}
    for source in sources:
        label = source.relative_to(input_dir).as_posix()
        target = output_dir / source.relative_to(input_dir).with_suffix(".npz")
        if target in written:
            raise ProcessorError(f"{label}: same output name as {written[target]}")
        written[target] = label
        recording = READERS[source.suffix.lower()](source, label)
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, data=recording.data, channels=np.array(recording.channels), sfreq=recording.sfreq)
        channels, samples = recording.data.shape
        print(
            f"{label} -> {target.relative_to(output_dir).as_posix()}: "
            f"{channels} channels x {samples} samples at {recording.sfreq:g} Hz"
        )
    return len(sources)


def required_dir(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise ProcessorError(f"environment variable {name} is not set")
    path = Path(value)
    if not path.is_dir():
        raise ProcessorError(f"{name} ({value}) is not a directory")
    return path


def main() -> int:
    try:
        count = convert_all(required_dir("INPUT_DIR"), required_dir("OUTPUT_DIR"))
    except ProcessorError as error:
        print(f"{NAME}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{NAME}: error: {error.filename or ''}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"converted {count} recording(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
