"""Fan-in report: joins band powers and quality scores into one summary per run.

Processor contract: with several dependencies the engine sets INPUT_DIR (the union of their
outputs) and INPUT_DIR_<DEP_ID> per dependency. Band powers (`*.bandpower.csv`) are read from
INPUT_DIR_BANDPOWER and quality scores (`*.quality.json`) from INPUT_DIR_QUALITY; either falls back
to INPUT_DIR, so the processor also works under other dependency ids. Writes `summary.csv` (one
row per recording) and `summary.md` to OUTPUT_DIR.

A channel is "good" when its quality score is at least MIN_QUALITY (default "0.5"); the alpha/beta
ratio is the mean over good channels, and a recording passes when its overall score reaches
MIN_QUALITY.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

NAME = "report"
DEFAULT_MIN_QUALITY = "0.5"
BANDPOWER_SUFFIX = ".bandpower.csv"
QUALITY_SUFFIX = ".quality.json"
COLUMNS = ["recording", "channels", "good_channels", "alpha_beta_ratio", "quality_score", "status"]


class ProcessorError(Exception):
    """A problem with the input or the parameters; reported as one line on stderr."""


def input_dir(name: str) -> tuple[str, Path]:
    """The dependency's own folder when the engine gave one, else the fan-in union."""
    for variable in (name, "INPUT_DIR"):
        value = os.environ.get(variable)
        if value:
            if not Path(value).is_dir():
                raise ProcessorError(f"{variable} ({value}) is not a directory")
            return variable, Path(value)
    raise ProcessorError(f"environment variable INPUT_DIR is not set (nor {name})")


def find(folder: Path, suffix: str) -> dict[str, Path]:
    return {
        path.relative_to(folder).as_posix().removesuffix(suffix): path
        for path in sorted(folder.rglob(f"*{suffix}"))
    }


def read_quality(path: Path, label: str) -> tuple[float, dict[str, float]]:
    try:
        report = json.loads(path.read_text())
        return float(report["score"]), {str(ch["name"]): float(ch["score"]) for ch in report["channels"]}
    except json.JSONDecodeError as error:
        raise ProcessorError(f"{label}: not valid JSON (line {error.lineno})") from None
    except (KeyError, TypeError, ValueError):
        raise ProcessorError(f"{label}: expected 'score' and 'channels' [{{name, score}}]") from None


def read_alpha_beta(path: Path, label: str) -> dict[str, float]:
    """alpha/beta power ratio per channel (NaN where beta power is zero)."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"channel", "alpha", "beta"} - set(reader.fieldnames or [])
        if missing:
            raise ProcessorError(f"{label}: missing column(s) {', '.join(sorted(missing))}")
        ratios = {}
        for line, row in enumerate(reader, start=2):
            try:
                alpha, beta = float(row["alpha"]), float(row["beta"])
            except (TypeError, ValueError):
                raise ProcessorError(f"{label}: line {line}: alpha and beta must be numbers") from None
            ratios[row["channel"]] = alpha / beta if beta > 0 else math.nan
    return ratios


def parse_min_quality() -> float:
    text = os.environ.get("MIN_QUALITY") or DEFAULT_MIN_QUALITY
    try:
        value = float(text)
    except ValueError:
        raise ProcessorError(f"MIN_QUALITY must be a number between 0 and 1, got '{text}'") from None
    if not 0 <= value <= 1:
        raise ProcessorError(f"MIN_QUALITY must be a number between 0 and 1, got '{text}'")
    return value


def summarize(
    bandpower_files: dict[str, Path], quality_files: dict[str, Path], min_quality: float
) -> list[dict]:
    rows = []
    for recording in sorted(bandpower_files):
        score, channel_scores = read_quality(quality_files[recording], recording + QUALITY_SUFFIX)
        ratios = read_alpha_beta(bandpower_files[recording], recording + BANDPOWER_SUFFIX)
        good = [name for name, channel_score in channel_scores.items() if channel_score >= min_quality]
        usable = [ratios[name] for name in good if not math.isnan(ratios.get(name, math.nan))]
        rows.append(
            {
                "recording": recording,
                "channels": len(channel_scores),
                "good_channels": len(good),
                "alpha_beta_ratio": round(sum(usable) / len(usable), 4) if usable else "",
                "quality_score": round(score, 4),
                "status": "pass" if score >= min_quality else "fail",
            }
        )
    return rows


def write_markdown(path: Path, rows: list[dict], min_quality: float) -> None:
    passed = sum(row["status"] == "pass" for row in rows)
    run = os.environ.get("RUN_ID", "")
    lines = [
        f"# EEG quality summary{': ' + os.environ['WORKFLOW_NAME'] if os.environ.get('WORKFLOW_NAME') else ''}",
        "",
        f"{len(rows)} recording(s), {passed} pass and {len(rows) - passed} fail at minimum quality {min_quality:g}"
        + (f" (run {run})." if run else "."),
        "",
        "| recording | quality | status | good channels | alpha/beta |",
        "|---|---:|---|---:|---:|",
    ]
    for row in rows:
        ratio = row["alpha_beta_ratio"]
        lines.append(
            f"| {row['recording']} | {row['quality_score']:.2f} | {row['status']} | "
            f"{row['good_channels']}/{row['channels']} | {ratio if ratio == '' else f'{ratio:.2f}'} |"
        )
    path.write_text("\n".join(lines) + "\n")


def run(output_dir: Path) -> int:
    min_quality = parse_min_quality()
    bandpower_variable, bandpower_dir = input_dir("INPUT_DIR_BANDPOWER")
    quality_variable, quality_dir = input_dir("INPUT_DIR_QUALITY")
    bandpower_files = find(bandpower_dir, BANDPOWER_SUFFIX)
    quality_files = find(quality_dir, QUALITY_SUFFIX)
    if not bandpower_files:
        raise ProcessorError(f"no *{BANDPOWER_SUFFIX} files in {bandpower_variable} ({bandpower_dir})")
    if not quality_files:
        raise ProcessorError(f"no *{QUALITY_SUFFIX} files in {quality_variable} ({quality_dir})")
    unmatched = sorted(set(bandpower_files) ^ set(quality_files))
    if unmatched:
        side = "quality scores" if unmatched[0] in bandpower_files else "band powers"
        raise ProcessorError(
            f"recording {unmatched[0]} has no {side} ({len(unmatched)} unmatched recording(s))"
        )
    rows = summarize(bandpower_files, quality_files, min_quality)
    with (output_dir / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_markdown(output_dir / "summary.md", rows, min_quality)
    for row in rows:
        print(f"{row['recording']}: quality {row['quality_score']:.2f} {row['status']}")
    return len(rows)


def main() -> int:
    try:
        output = os.environ.get("OUTPUT_DIR")
        if not output or not Path(output).is_dir():
            raise ProcessorError(f"OUTPUT_DIR ({output or 'not set'}) is not a directory")
        count = run(Path(output))
    except ProcessorError as error:
        print(f"{NAME}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{NAME}: error: {error.filename or ''}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"summarized {count} recording(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
