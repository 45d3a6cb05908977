"""Band-power features per channel from a Welch power spectral density.

Processor contract: reads every `*.npz` under INPUT_DIR (as written by the convert processor:
`data` channels x samples, `channels`, `sfreq`) and writes `<stem>.bandpower.csv` into the same
relative sub-folder of OUTPUT_DIR: one row per channel with the absolute power of each band
(signal units squared) and its share of the power across all bands (`<band>_rel`).

Params (environment variables): WINDOW_SECONDS (Welch segment length, default "2"), BANDS
(optional, e.g. "delta:1-4,theta:4-8,alpha:8-13,beta:13-30,gamma:30-45").
"""

from __future__ import annotations

import csv
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

NAME = "bandpower"
DEFAULT_BANDS = "delta:1-4,theta:4-8,alpha:8-13,beta:13-30,gamma:30-45"
DEFAULT_WINDOW_SECONDS = "2"


class ProcessorError(Exception):
    """A problem with the input or the parameters; reported as one line on stderr."""


def welch_psd(signal: np.ndarray, sfreq: float, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """One-sided PSD (units^2/Hz): periodic Hann window, 50% overlap, mean removed per segment."""
    nperseg = min(nperseg, signal.size)
    step = max(nperseg // 2, 1)
    segments = np.lib.stride_tricks.sliding_window_view(signal.astype(np.float64), nperseg)[::step]
    segments = segments - segments.mean(axis=1, keepdims=True)
    window = np.hanning(nperseg + 1)[:-1] if nperseg > 1 else np.ones(1)
    spectra = np.abs(np.fft.rfft(segments * window, axis=1)) ** 2
    psd = spectra.mean(axis=0) / (sfreq * np.sum(window**2))
    # Fold negative frequencies in: every bin except DC (and Nyquist for even lengths) counts twice.
    psd[1 : None if nperseg % 2 else -1] *= 2
    return np.fft.rfftfreq(nperseg, d=1.0 / sfreq), psd


def band_powers(
    freqs: np.ndarray, psd: np.ndarray, bands: dict[str, tuple[float, float]]
) -> dict[str, float]:
    resolution = freqs[1] - freqs[0] if freqs.size > 1 else 0.0
    return {
        name: float(psd[(freqs >= low) & (freqs < high)].sum() * resolution)
        for name, (low, high) in bands.items()
    }


def parse_bands(text: str) -> dict[str, tuple[float, float]]:
    bands: dict[str, tuple[float, float]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, edges = item.partition(":")
        low, _, high = edges.partition("-")
        try:
            low_hz, high_hz = float(low), float(high)
        except ValueError:
            raise ProcessorError(f"BANDS: '{item}' is not of the form name:low-high (Hz)") from None
        if not name.strip() or not 0 <= low_hz < high_hz:
            raise ProcessorError(f"BANDS: '{item}' needs a name and 0 <= low < high")
        if name.strip() in bands:
            raise ProcessorError(f"BANDS: band '{name.strip()}' is given twice")
        bands[name.strip()] = (low_hz, high_hz)
    if not bands:
        raise ProcessorError("BANDS: no bands given")
    return bands


def parse_window_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ProcessorError(f"WINDOW_SECONDS must be a positive number of seconds, got '{text}'") from None
    if not seconds > 0:
        raise ProcessorError(f"WINDOW_SECONDS must be a positive number of seconds, got '{text}'")
    return seconds


def load_recording(path: Path, label: str) -> tuple[np.ndarray, list[str], float]:
    try:
        with np.load(path) as archive:
            data, channels, sfreq = (
                archive["data"],
                [str(c) for c in archive["channels"]],
                float(archive["sfreq"]),
            )
    except KeyError as error:
        raise ProcessorError(f"{label}: missing array {error} (expected data, channels, sfreq)") from None
    except (OSError, ValueError, zipfile.BadZipFile):
        raise ProcessorError(f"{label}: not a readable .npz file") from None
    if data.ndim != 2 or data.shape[0] != len(channels) or sfreq <= 0:
        raise ProcessorError(
            f"{label}: data must be channels x samples with one name per channel and sfreq > 0"
        )
    return data, channels, sfreq


def write_features(target: Path, rows: list[dict[str, object]], band_names: list[str]) -> None:
    columns = ["channel", *band_names, *(f"{name}_rel" for name in band_names)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {key: value if isinstance(value, str) else f"{value:.6g}" for key, value in row.items()}
            )


def process(source: Path, label: str, target: Path, bands: dict[str, tuple[float, float]], seconds: float):
    data, channels, sfreq = load_recording(source, label)
    nyquist = sfreq / 2
    for name, (_, high) in bands.items():
        if high > nyquist:
            raise ProcessorError(
                f"{label}: band {name} reaches {high:g} Hz, above the Nyquist frequency {nyquist:g} Hz"
            )
    nperseg = max(int(round(seconds * sfreq)), 2)
    rows = []
    for name, signal in zip(channels, data, strict=True):
        powers = band_powers(*welch_psd(signal, sfreq, nperseg), bands)
        total = sum(powers.values())
        shares = {
            f"{band}_rel": (power / total if total > 0 else float("nan")) for band, power in powers.items()
        }
        rows.append({"channel": name, **powers, **shares})
    write_features(target, rows, list(bands))


def run(input_dir: Path, output_dir: Path) -> int:
    seconds = parse_window_seconds(os.environ.get("WINDOW_SECONDS") or DEFAULT_WINDOW_SECONDS)
    bands = parse_bands(os.environ.get("BANDS") or DEFAULT_BANDS)
    sources = sorted(input_dir.rglob("*.npz"))
    if not sources:
        raise ProcessorError(
            f"no .npz recordings found in INPUT_DIR ({input_dir}); run the convert processor first"
        )
    for source in sources:
        label = source.relative_to(input_dir).as_posix()
        target = output_dir / source.relative_to(input_dir).with_suffix(".bandpower.csv")
        process(source, label, target, bands, seconds)
        print(f"{label} -> {target.relative_to(output_dir).as_posix()}")
    return len(sources)


def required_dir(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise ProcessorError(f"environment variable {name} is not set")
    if not Path(value).is_dir():
        raise ProcessorError(f"{name} ({value}) is not a directory")
    return Path(value)


def main() -> int:
    try:
        count = run(required_dir("INPUT_DIR"), required_dir("OUTPUT_DIR"))
    except ProcessorError as error:
        print(f"{NAME}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{NAME}: error: {error.filename or ''}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"computed band powers for {count} recording(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
