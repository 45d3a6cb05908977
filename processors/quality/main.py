"""Signal-quality scores per channel and per recording.

Processor contract: reads every `*.npz` under INPUT_DIR (as written by the convert processor) and
writes `<stem>.quality.json` into the same relative sub-folder of OUTPUT_DIR.

Per channel it measures four faults, turns each into a penalty between 0 and 1 (the measure
divided by the level at which the channel counts as unusable, capped at 1) and scores the channel
as the product of (1 - penalty). The recording's score is the mean channel score.
- flat_fraction: share of samples inside runs of at least FLAT_MIN_SECONDS where consecutive
  samples differ by at most FLAT_THRESHOLD (a disconnected or saturated amplifier);
- clip_fraction: share of samples sitting at the channel's own minimum or maximum (clipping);
- line_noise_ratio: share of the power above 1 Hz within +-1 Hz of LINE_FREQ (mains pickup);
- outlier_fraction: share of samples further than OUTLIER_SDS robust standard deviations from the
  median (movement and electrode-pop artefacts).

Params (environment variables): LINE_FREQ (mains frequency in Hz, default "60"), FLAT_THRESHOLD
(in the signal's units, default "0.01", i.e. 0.01 uV for data in microvolts).
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

NAME = "quality"
DEFAULT_LINE_FREQ = "60"
DEFAULT_FLAT_THRESHOLD = "0.01"
FLAT_MIN_SECONDS = 0.1
OUTLIER_SDS = 6.0
LINE_HALF_WIDTH_HZ = 1.0
WELCH_SECONDS = 2.0
# The level of each measure at which a channel is considered unusable (penalty 1).
UNUSABLE_AT = {"flat_fraction": 0.5, "clip_fraction": 0.05, "line_noise_ratio": 0.5, "outlier_fraction": 0.05}


class ProcessorError(Exception):
    """A problem with the input or the parameters; reported as one line on stderr."""


def welch_psd(signal: np.ndarray, sfreq: float, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """One-sided PSD with a Hann window and 50% overlap (same method as the bandpower processor,
    repeated here so that each processor's image builds from its own folder)."""
    nperseg = min(nperseg, signal.size)
    segments = np.lib.stride_tricks.sliding_window_view(signal, nperseg)[:: max(nperseg // 2, 1)]
    segments = segments - segments.mean(axis=1, keepdims=True)
    window = np.hanning(nperseg + 1)[:-1]
    psd = (np.abs(np.fft.rfft(segments * window, axis=1)) ** 2).mean(axis=0) / (sfreq * np.sum(window**2))
    psd[1 : None if nperseg % 2 else -1] *= 2
    return np.fft.rfftfreq(nperseg, d=1.0 / sfreq), psd


def flat_fraction(signal: np.ndarray, threshold: float, min_run: int) -> float:
    """Share of samples inside runs of at least `min_run` near-identical consecutive samples."""
    still = np.abs(np.diff(signal)) <= threshold
    edges = np.flatnonzero(np.diff(np.concatenate(([0], still.astype(np.int8), [0]))))
    starts, ends = edges[::2], edges[1::2]
    lengths = ends - starts + 1  # a run of k flat steps covers k + 1 samples
    return float(lengths[lengths >= min_run].sum() / signal.size)


def clip_fraction(signal: np.ndarray) -> float:
    low, high = float(signal.min()), float(signal.max())
    if high == low:  # a constant channel is flat, not clipped
        return 0.0
    tolerance = 1e-6 * (high - low)
    at_rails = np.count_nonzero(signal >= high - tolerance) + np.count_nonzero(signal <= low + tolerance)
    return max(at_rails - 2, 0) / signal.size  # one sample at each extreme is normal


def line_noise_ratio(signal: np.ndarray, sfreq: float, line_freq: float) -> float:
    freqs, psd = welch_psd(signal, sfreq, int(round(WELCH_SECONDS * sfreq)))
    total = psd[freqs >= 1.0].sum()
    if total <= 0:
        return 0.0
    return float(psd[np.abs(freqs - line_freq) <= LINE_HALF_WIDTH_HZ].sum() / total)


def outlier_fraction(signal: np.ndarray) -> float:
    median = np.median(signal)
    robust_sd = 1.4826 * np.median(np.abs(signal - median))
    if robust_sd == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(signal - median) > OUTLIER_SDS * robust_sd) / signal.size)


def channel_quality(signal: np.ndarray, sfreq: float, line_freq: float, flat_threshold: float) -> dict:
    signal = signal.astype(np.float64)
    measures = {
        "flat_fraction": flat_fraction(signal, flat_threshold, max(int(FLAT_MIN_SECONDS * sfreq), 1)),
        "clip_fraction": clip_fraction(signal),
        "line_noise_ratio": line_noise_ratio(signal, sfreq, line_freq),
        "outlier_fraction": outlier_fraction(signal),
    }
    score = 1.0
    for name, value in measures.items():
        score *= 1.0 - min(value / UNUSABLE_AT[name], 1.0)
    return {"score": round(score, 4), **{name: round(value, 6) for name, value in measures.items()}}


def positive_number(name: str, default: str) -> float:
    text = os.environ.get(name) or default
    try:
        value = float(text)
    except ValueError:
        raise ProcessorError(f"{name} must be a positive number, got '{text}'") from None
    if not value > 0:
        raise ProcessorError(f"{name} must be a positive number, got '{text}'")
    return value


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
    if data.ndim != 2 or data.shape[0] != len(channels) or sfreq <= 0 or data.shape[1] < 2:
        raise ProcessorError(
            f"{label}: data must be channels x samples with one name per channel and sfreq > 0"
        )
    return data, channels, sfreq


def assess(source: Path, label: str, line_freq: float, flat_threshold: float) -> dict:
    data, channels, sfreq = load_recording(source, label)
    if line_freq + LINE_HALF_WIDTH_HZ > sfreq / 2:
        raise ProcessorError(
            f"{label}: LINE_FREQ {line_freq:g} Hz is above the Nyquist frequency {sfreq / 2:g} Hz"
        )
    scores = [
        {"name": name, **channel_quality(signal, sfreq, line_freq, flat_threshold)}
        for name, signal in zip(channels, data, strict=True)
    ]
    return {
        "recording": label.removesuffix(".npz"),
        "sfreq": sfreq,
        "seconds": round(data.shape[1] / sfreq, 3),
        "line_freq": line_freq,
        "score": round(float(np.mean([channel["score"] for channel in scores])), 4),
        "channels": scores,
    }


def run(input_dir: Path, output_dir: Path) -> int:
    line_freq = positive_number("LINE_FREQ", DEFAULT_LINE_FREQ)
    flat_threshold = positive_number("FLAT_THRESHOLD", DEFAULT_FLAT_THRESHOLD)
    sources = sorted(input_dir.rglob("*.npz"))
    if not sources:
        raise ProcessorError(
            f"no .npz recordings found in INPUT_DIR ({input_dir}); run the convert processor first"
        )
    for source in sources:
        label = source.relative_to(input_dir).as_posix()
        report = assess(source, label, line_freq, flat_threshold)
        target = output_dir / source.relative_to(input_dir).with_suffix(".quality.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{label} -> {target.relative_to(output_dir).as_posix()}: score {report['score']:.2f}")
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
    print(f"scored {count} recording(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
