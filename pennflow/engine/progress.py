"""How runs look in the terminal: a live table while a run goes (plain lines when not a terminal),
and the tables of ``pennflow runs`` and ``pennflow status``."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from pennflow.workflow.definition import Workflow
from pennflow.workflow.runs import RunRecord, Status, StepRecord, utcnow

STATUS_STYLE = {
    Status.NOT_STARTED: "dim",
    Status.STARTED: "cyan",
    Status.SUCCEEDED: "green",
    Status.FAILED: "bold red",
    Status.CANCELING: "yellow",
    Status.CANCELED: "yellow",
}


def status_text(status: Status) -> Text:
    return Text(status.value, style=STATUS_STYLE[status])


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_time(moment: datetime | None, clock_only: bool = False, short: bool = False) -> str:
    """Local time: full, ``MM-DD HH:MM`` (short) or ``HH:MM:SS`` (clock only)."""
    if moment is None:
        return "-"
    pattern = "%H:%M:%S" if clock_only else "%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S"
    return moment.astimezone().strftime(pattern)


def elapsed(started: datetime | None, finished: datetime | None, now: datetime | None = None) -> float | None:
    """Duration when finished, time so far when still going."""
    if started is None:
        return None
    return ((finished or now or utcnow()) - started).total_seconds()


def max_attempts(workflow: Workflow) -> dict[str, int]:
    return {p.id: 1 + (p.retry.max_attempts if p.retry else 0) for p in workflow.processors}


LIVE_CHROME_ROWS = 6  # the title, the header, the rule, the caption and a line to spare
MIN_LIVE_ROWS = 5
# A redraw costs rich about half a millisecond a row, holding the GIL the workers need: the live
# table shows at most this many rows, twice a second (about 2% of one core).
MAX_LIVE_ROWS = 15
LIVE_REFRESH_PER_SECOND = 2
# The table that ends `pennflow run`: a large run's processors are counted, not all listed (rich
# renders a row in about half a millisecond; the JSON and `pennflow status` have them all).
RUN_SUMMARY_ROWS = 20
# Which processors a screen too small for all of them shows first.
_RELEVANCE = (
    Status.STARTED,
    Status.CANCELING,
    Status.FAILED,
    Status.NOT_STARTED,
    Status.CANCELED,
    Status.SUCCEEDED,
)


def most_relevant(steps: Sequence[StepRecord], rows: int) -> list[StepRecord]:
    """Up to ``rows`` steps, running ones first, then failed, waiting, ended; in definition order."""
    by_status: dict[Status, list[int]] = {status: [] for status in _RELEVANCE}
    for index, step in enumerate(steps):
        by_status[step.status].append(index)
    chosen: list[int] = []
    for status in _RELEVANCE:
        chosen += by_status[status][: rows - len(chosen)]
        if len(chosen) >= rows:
            break
    return [steps[index] for index in sorted(chosen)]


def status_counts(steps: Sequence[StepRecord]) -> str:
    counts = Counter(step.status for step in steps)
    return ", ".join(f"{counts[status]} {status.value}" for status in Status if counts[status])


# A reason column narrower than this reads badly: the reasons go under the table instead.
MIN_REASON_WIDTH = 30


def steps_table(
    steps: Sequence[StepRecord],
    *,
    attempts_of: dict[str, int] | None = None,
    title: str | None = None,
    rows: int | None = None,
    reasons: bool = True,
    resource_use: bool = False,
) -> Table:
    """One row per processor: status, attempts, exit code, start, duration and (unless ``reasons`` is
    False) reason; at most ``rows`` (the running and failed first) and a caption counting the rest by
    status. Only the processor and reason columns wrap: the others are never cut."""
    everything, steps = steps, _shown(steps, rows)
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    if len(steps) < len(everything):
        table.caption = f"{len(everything) - len(steps)} more; all: {status_counts(everything)}"
        table.caption_justify = "left"
    now = utcnow()
    rows_cells = [
        [
            step.processor_id,
            status_text(step.status),
            attempts_cell(step, attempts_of),
            "-" if step.exit_code is None else str(step.exit_code),
            format_time(step.started_at, clock_only=True),
            format_seconds(elapsed(step.started_at, step.finished_at, now)),
            *(_use_cells(step) if resource_use else []),
        ]
        for step in steps
    ]
    table.add_column("processor", overflow="fold")
    fixed = [
        ("status", "left"),
        ("tries", "right"),
        ("exit", "right"),
        ("started", "left"),
        ("time", "right"),
    ]
    if resource_use:  # CPU time (user + system) and peak memory of the attempts' processes
        fixed += [("cpu", "right"), ("peak mem", "right")]
    for index, (header, justify) in enumerate(fixed, start=1):
        # Never cut: as wide as its widest cell, given here so that rich need not measure every cell
        # (measuring is most of what rendering the table costs).
        width = max([cell_len(header), *(_cell_width(cells[index]) for cells in rows_cells)])
        table.add_column(header, justify=justify, no_wrap=True, width=width)  # type: ignore[arg-type]
    if reasons:
        table.add_column("reason", overflow="fold")
    for step, cells in zip(steps, rows_cells, strict=True):
        table.add_row(*cells, *([Text(step.reason or "")] if reasons else []))
    return table


def _cell_width(cell: str | Text) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


def attempts_cell(step: StepRecord, attempts_of: dict[str, int] | None = None) -> str:
    """``-`` before the first attempt; then the attempt count (``n/total`` while running)."""
    if step.attempts < 1:
        return "-"
    attempts = str(step.attempts)
    if attempts_of and step.processor_id in attempts_of and step.status is Status.STARTED:
        attempts += f"/{attempts_of[step.processor_id]}"
    return attempts


def fitted_steps_table(
    console: Console, steps: Sequence[StepRecord], **options: Any
) -> tuple[Table, list[str]]:
    """The steps table for ``console``'s width, and the reasons that did not go in it.

    The reasons stay in the table while its reason column has room for them (at least
    ``MIN_REASON_WIDTH``, and for the longest word: a path is never cut); otherwise the table has no
    reason column and each reason is a line ``processor: reason`` for the caller to print under it.
    """
    table = steps_table(steps, reasons=False, **options)
    with_reason = [step for step in _shown(steps, options.get("rows")) if step.reason]
    if not with_reason:
        return table, []
    room = console.width - Measurement.get(console, console.options, table).maximum - 1
    longest_word = max(len(word) for step in with_reason for word in (step.reason or "").split())
    if room >= max(MIN_REASON_WIDTH, longest_word):
        return steps_table(steps, **options), []
    return table, [f"{step.processor_id}: {step.reason}" for step in with_reason]


def _shown(steps: Sequence[StepRecord], rows: int | None) -> Sequence[StepRecord]:
    """The steps a table of at most ``rows`` rows lists (one row is left for the count of the rest)."""
    return steps if rows is None or len(steps) <= rows else most_relevant(steps, max(rows - 1, 1))


def runs_table(runs: Sequence[RunRecord], kinds: Mapping[str, str] | None = None) -> Table:
    """One row per run; ``kinds`` names the runs that are not plain workflow runs (``notebook``): a
    kind column is shown only when some are."""
    kinds = kinds or {}
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    names = ("run", *(("kind",) if kinds else ()), "workflow", "status", "created", "duration", "failed")
    for name in names:
        wraps = name in ("workflow", "failed")  # names may be long; ids, statuses and times are not cut
        table.add_column(name, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    now = utcnow()
    for run in runs:
        table.add_row(
            run.run_id,
            *((kinds.get(run.run_id, "workflow"),) if kinds else ()),
            run.workflow,
            status_text(run.status),
            format_time(run.created_at, short=True),
            format_seconds(elapsed(run.started_at, run.finished_at, now)),
            run.failed_processor or "",
        )
    return table


class LiveProgress:
    """A table of processors refreshed in place while the run goes (for a terminal)."""

    def __init__(self, console: Console, workflow: Workflow):
        self._console = console
        self._attempts = max_attempts(workflow)
        self._steps: dict[str, StepRecord] = {}
        self._lock = threading.Lock()
        self._title = workflow.name
        self._live = Live(
            console=console,
            get_renderable=self._render,
            refresh_per_second=LIVE_REFRESH_PER_SECOND,
            transient=True,
        )

    def run_started(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        with self._lock:
            self._steps = {step.processor_id: step for step in steps}
            self._title = f"{run.workflow}  {run.run_id}"
        self._console.print(f"run [bold]{run.run_id}[/] started: {run.workflow}", highlight=False)
        self._live.start()

    def step_updated(self, step: StepRecord) -> None:
        with self._lock:
            self._steps[step.processor_id] = step

    def run_finished(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        self.close()

    def close(self) -> None:
        """Give the terminal back (idempotent; also after a run that ended in an error)."""
        self._live.stop()

    def _render(self) -> Table | Group:
        with self._lock:
            steps = list(self._steps.values())
        # Only what fits (a 5,000-processor table redrawn twice a second would cost the run more
        # than its processes do): the running and failed first, the rest counted.
        room = min(max(self._console.size.height - LIVE_CHROME_ROWS, MIN_LIVE_ROWS), MAX_LIVE_ROWS)
        table, reasons = fitted_steps_table(
            self._console, steps, attempts_of=self._attempts, title=self._title, rows=room
        )
        # Under a live table a reason is cut at the edge (the final table prints it whole).
        reasons = reasons[: max(room - table.row_count, 1)]
        return Group(table, *(Text(line, no_wrap=True, overflow="ellipsis") for line in reasons))


class PlainProgress:
    """One line per change of a processor's status or attempt (logs, pipes, CI)."""

    def __init__(self, console: Console, workflow: Workflow):
        self._console = console
        self._attempts = max_attempts(workflow)
        self._seen: dict[str, tuple[Status, int, str | None]] = {}
        self._lock = threading.Lock()

    def run_started(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        self._console.print(
            f"run {run.run_id} started: {run.workflow}, {len(steps)} processors", highlight=False
        )

    def step_updated(self, step: StepRecord) -> None:
        with self._lock:
            key = (step.status, step.attempts, step.reason)
            if self._seen.get(step.processor_id) == key:
                return
            self._seen[step.processor_id] = key
            # Plain text needs none of rich's rendering, which would cost a large run dearly.
            self._console.file.write(self._line(step) + "\n")
            self._console.file.flush()

    def run_finished(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        pass

    def close(self) -> None:
        pass

    def _line(self, step: StepRecord) -> str:
        stamp = utcnow().astimezone().strftime("%H:%M:%S")
        line = f"{stamp} {step.processor_id} {step.status.value}"
        if step.status is Status.STARTED:
            line += f" (attempt {step.attempts}/{self._attempts.get(step.processor_id, 1)})"
        elif step.duration_seconds is not None:
            line += f" in {format_seconds(step.duration_seconds)}"
        if step.reason:  # while STARTED, why the attempt before this retry failed
            line += f": {step.reason}"
        return line


def make_progress(console: Console, workflow: Workflow) -> LiveProgress | PlainProgress:
    return LiveProgress(console, workflow) if console.is_terminal else PlainProgress(console, workflow)


def _use_cells(step: StepRecord) -> list[str]:
    from pennflow.engine.resource_use import format_bytes, step_use

    cpu, peak = step_use(step)
    return ["-" if cpu is None else format_seconds(cpu), format_bytes(peak)]
