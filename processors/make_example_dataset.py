"""Write a small, deterministic EEG-like dataset as CSV files for the example workflow.

    python processors/make_example_dataset.py DIR [--subjects N] [--sessions N] [--seconds S] [--seed K]

Layout: DIR/sub-01/ses-01/sub-01_ses-01_task-rest_eeg.csv, ... with a header row
`time,Fp1,Fp2,C3,C4,P3,P4,O1,O2` and one row per sample (time in seconds, values in microvolts).

Every recording is pink (1/f) background noise plus a 10 Hz alpha rhythm that is strong on the
parietal and occipital channels and weak on the frontal and central ones, with artefacts a
quality check should catch:
- Fp2 is flat (a disconnected electrode);
- C3 carries strong 60 Hz line noise;
- C4 is clipped by the amplifier;
- the last session of the last subject also has movement artefacts on Fp1 and P3, so that its
  overall quality is clearly worse than the others'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SFREQ = 256
CHANNELS = ["Fp1", "Fp2", "C3", "C4", "P3", "P4", "O1", "O2"]
ALPHA_CHANNELS = ["P3", "P4", "O1", "O2"]
FLAT_CHANNEL, LINE_NOISE_CHANNEL, CLIPPED_CHANNEL = "Fp2", "C3", "C4"
MOVEMENT_CHANNELS = ["Fp1", "P3"]
BACKGROUND_UV = 10.0  # RMS of the pink background
ALPHA_UV, WEAK_ALPHA_UV = 12.0, 3.0  # sinusoid amplitudes
LINE_UV, LINE_HZ = 30.0, 60.0
CLIP_UV = 12.0


def pink_noise(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, d=1.0 / SFREQ)
    spectrum[0] = 0
    spectrum[1:] /= np.sqrt(freqs[1:])
    noise = np.fft.irfft(spectrum, n=samples)
    return noise / noise.std()


def movement_bursts(rng: np.random.Generator, times: np.ndarray) -> np.ndarray:
    """Large half-sine deflections, one every few seconds."""
    bursts = np.zeros_like(times)
    width = 0.5
    for onset in np.arange(1.0, times[-1] - width, 3.0):
        inside = (times >= onset) & (times < onset + width)
        bursts[inside] = rng.choice([-1, 1]) * 150.0 * np.sin(np.pi * (times[inside] - onset) / width)
    return bursts


def recording(rng: np.random.Generator, seconds: float, with_movement: bool) -> tuple[np.ndarray, np.ndarray]:
    samples = int(round(seconds * SFREQ))
    times = np.arange(samples) / SFREQ
    data = np.empty((len(CHANNELS), samples))
    # Per-recording alpha frequency and phase, so recordings differ like people do.
    alpha_hz = 9.5 + rng.random()
    for row, name in enumerate(CHANNELS):
        amplitude = ALPHA_UV if name in ALPHA_CHANNELS else WEAK_ALPHA_UV
        alpha = amplitude * np.sin(2 * np.pi * alpha_hz * times + rng.uniform(0, 2 * np.pi))
        data[row] = BACKGROUND_UV * pink_noise(rng, samples) + alpha
    data[CHANNELS.index(FLAT_CHANNEL)] = 0.0
    data[CHANNELS.index(LINE_NOISE_CHANNEL)] += LINE_UV * np.sin(2 * np.pi * LINE_HZ * times)
    clipped = CHANNELS.index(CLIPPED_CHANNEL)
    data[clipped] = np.clip(data[clipped], -CLIP_UV, CLIP_UV)
    if with_movement:
        for name in MOVEMENT_CHANNELS:
            data[CHANNELS.index(name)] += movement_bursts(rng, times)
    return times, data


def write_csv(path: Path, times: np.ndarray, data: np.ndarray) -> None:
    # Formatting whole columns at once is much faster than np.savetxt's row loop.
    columns = [np.char.mod("%.6f", times)] + [np.char.mod("%.3f", channel) for channel in data]
    rows = [",".join(values) for values in zip(*columns, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(["time", *CHANNELS]), *rows]) + "\n")


def make_dataset(root: Path, subjects: int, sessions: int, seconds: float, seed: int) -> list[Path]:
    written = []
    for subject in range(1, subjects + 1):
        for session in range(1, sessions + 1):
            rng = np.random.default_rng([seed, subject, session])
            with_movement = subject == subjects and session == sessions
            times, data = recording(rng, seconds, with_movement)
            name = f"sub-{subject:02d}_ses-{session:02d}_task-rest_eeg.csv"
            path = root / f"sub-{subject:02d}" / f"ses-{session:02d}" / name
            write_csv(path, times, data)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a small deterministic EEG-like CSV dataset.")
    parser.add_argument("dir", type=Path, help="folder to write the recordings into")
    parser.add_argument("--subjects", type=int, default=3, help="number of subjects (default 3)")
    parser.add_argument("--sessions", type=int, default=2, help="sessions per subject (default 2)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each recording (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.subjects < 1 or args.sessions < 1:
        parser.error("--subjects and --sessions must be at least 1")
    if args.seconds < 4:
        parser.error("--seconds must be at least 4 (band powers need a few 2 s windows)")
    if args.seed < 0:
        parser.error("--seed must not be negative")
    written = make_dataset(args.dir, args.subjects, args.sessions, args.seconds, args.seed)
    samples = int(round(args.seconds * SFREQ))
    for path in written:
        print(f"wrote {path} ({len(CHANNELS)} channels x {samples} samples at {SFREQ} Hz)")
    print(f"{len(written)} recording(s) in {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
