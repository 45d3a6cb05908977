"""The report as one HTML file: inline CSS, an SVG DAG laid out by the plan's levels, a timeline of
every attempt, the table, failures with their log tails, provenance and the cost breakdown.

Every value goes through ``html.escape``; the page loads nothing. Its script records its own errors
in ``#script-errors`` (a test opens the page in a headless browser and expects that empty).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from string import Template

from pennflow.report.data import RunReport, StepReport
from pennflow.workflow.cost import ITEM_NAMES, format_usd

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 150, 36, 60, 18, 12
COLOURS = {
    "SUCCEEDED": "#2e7d32",
    "FAILED": "#c62828",
    "CANCELED": "#6d4c41",
    "CANCELING": "#8d6e63",
    "STARTED": "#1565c0",
    "NOT_STARTED": "#9e9e9e",
}

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pennflow run $run_id</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#212121;max-width:1200px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #e0e0e0;padding-bottom:4px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
$badge_css
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{font-weight:600;background:#fafafa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#757575} pre{background:#263238;color:#eceff1;padding:8px;overflow:auto;font-size:12px;border-radius:4px}
.timeline{position:relative;border-left:1px solid #bdbdbd}
.lane{position:relative;height:22px;margin:3px 0}
.lane .label{position:absolute;left:-160px;width:150px;text-align:right;font-size:12px;white-space:nowrap;overflow:hidden}
.bar{position:absolute;top:3px;height:16px;border-radius:3px;min-width:2px;opacity:.9}
.bar.ok{background:#43a047} .bar.failed{background:#e53935}
.axis{font-size:11px;color:#757575;display:flex;justify-content:space-between}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px} dt{font-weight:600} dd{margin:0;word-break:break-all}
svg text{font:12px system-ui,sans-serif}
#script-errors:empty{display:none} #script-errors{color:#c62828}
</style></head>
<body data-run="$run_id">
<pre id="script-errors"></pre>
<h1>$workflow <span class="badge s-$status" id="run-status">$status</span></h1>
<div class="muted">run $run_id &middot; $origin &middot; started $started &middot; duration $duration &middot; cost $cost_total</div>
$reason_html
<div id="status-counts" class="muted"></div>

<h2>Workflow</h2>
$dag

<h2>Timeline</h2>
$timeline

<h2>Processors</h2>
<table id="steps"><thead><tr><th>processor</th><th>status</th><th>duration</th><th>attempts</th><th>exit</th>
<th>CPU</th><th>peak memory</th><th>cost</th></tr></thead><tbody>
$rows
</tbody></table>

<h2>Failures</h2>
$failures

<h2>Provenance</h2>
$provenance

<h2>Cost</h2>
$cost

<div class="muted" style="margin-top:32px">Written by pennflow at $generated.</div>
<script>
(function () {
  var errors = document.getElementById("script-errors");
  window.addEventListener("error", function (e) { errors.textContent += (e.message || "error") + "\\n"; });
  try {
    var counts = {};
    document.querySelectorAll("#steps tbody tr").forEach(function (row) {
      var s = row.getAttribute("data-status"); counts[s] = (counts[s] || 0) + 1;
    });
    document.getElementById("status-counts").textContent = Object.keys(counts).sort().map(function (s) {
      return counts[s] + " " + s;
    }).join(", ");
    document.querySelectorAll("svg .node").forEach(function (node) {
      node.addEventListener("click", function () {
        var row = document.getElementById("step-" + node.getAttribute("data-processor"));
        if (row) { row.scrollIntoView({block: "center"}); row.style.background = "#fff9c4"; }
      });
    });
    document.body.setAttribute("data-ready", "1");
  } catch (e) { errors.textContent += e.message + "\\n"; }
})();
</script>
</body></html>
""")


def render_html(report: RunReport, *, now: datetime | None = None) -> str:
    badge_css = "\n".join(f".s-{status}{{background:{colour}}}" for status, colour in COLOURS.items())
    return PAGE.substitute(
        run_id=_e(report.run_id),
        workflow=_e(report.workflow),
        status=_e(report.status),
        origin="local run" if report.origin == "local" else f"node run ({_e(report.origin)})",
        started=_time(report.started_at),
        duration=_seconds(report.duration_seconds),
        cost_total=_cost_total(report),
        reason_html=f'<p id="run-reason">{_e(report.reason)}</p>' if report.reason else "",
        badge_css=badge_css,
        dag=dag_svg(report.steps),
        timeline=timeline(report.steps),
        rows="\n".join(_row(step) for step in report.steps),
        failures=_failures(report),
        provenance=_provenance(report),
        cost=_cost(report),
        generated=_time(now or datetime.now(UTC)),
    )


# ------------------------------------------------------------------ DAG


def dag_svg(steps: list[StepReport]) -> str:
    """Columns are the plan's levels (the longest chain of dependencies above a processor)."""
    columns: dict[int, list[StepReport]] = {}
    for step in steps:
        columns.setdefault(step.level, []).append(step)
    where: dict[str, tuple[int, int]] = {}
    for level, members in columns.items():
        for row, step in enumerate(members):
            where[step.processor_id] = (PAD + level * (NODE_W + COL_GAP), PAD + row * (NODE_H + ROW_GAP))
    width = PAD * 2 + (max(columns, default=0) + 1) * (NODE_W + COL_GAP) - COL_GAP
    height = PAD * 2 + max((len(m) for m in columns.values()), default=1) * (NODE_H + ROW_GAP) - ROW_GAP
    edges = []
    for step in steps:
        for dep in step.depends_on:
            if dep in where and step.processor_id in where:
                x1, y1 = where[dep][0] + NODE_W, where[dep][1] + NODE_H // 2
                x2, y2 = where[step.processor_id][0], where[step.processor_id][1] + NODE_H // 2
                mid = (x1 + x2) // 2
                edges.append(
                    f'<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 4},{y2}" '
                    'fill="none" stroke="#90a4ae" stroke-width="1.5" marker-end="url(#arrow)"/>'
                )
    nodes = []
    for step in steps:
        x, y = where[step.processor_id]
        colour = COLOURS.get(step.status, "#9e9e9e")
        label = step.processor_id if len(step.processor_id) <= 20 else step.processor_id[:19] + "…"
        nodes.append(
            f'<g class="node" data-processor="{_e(step.processor_id)}" data-status="{_e(step.status)}" '
            f'style="cursor:pointer"><title>{_e(step.processor_id)}: {_e(step.status)}</title>'
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{colour}"/>'
            f'<text x="{x + NODE_W // 2}" y="{y + NODE_H // 2 + 4}" fill="#fff" text-anchor="middle">'
            f"{_e(label)}</text></g>"
        )
    return (
        f'<svg id="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="the workflow, coloured by status">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#90a4ae"/></marker></defs>'
        + "".join(edges)
        + "".join(nodes)
        + "</svg>"
    )


# ------------------------------------------------------------------ timeline


def timeline(steps: list[StepReport]) -> str:
    bars = [(step, bar) for step in steps for bar in step.bars if bar.start is not None]
    if not bars:
        return '<p class="muted">No processor has started.</p>'
    begin = min(bar.start.timestamp() for _, bar in bars)
    end = max(bar.start.timestamp() + (bar.seconds or 0) for _, bar in bars)
    span = max(end - begin, 1e-6)
    lanes = []
    for step in steps:
        cells = []
        for bar in step.bars:
            if bar.start is None:
                continue
            left = (bar.start.timestamp() - begin) / span * 100
            width = (bar.seconds or 0) / span * 100
            what = f"attempt {bar.attempt}" + (f", batch {bar.batch}" if bar.batch is not None else "")
            title = f"{step.processor_id} {what}: {_seconds(bar.seconds)}, exit {bar.exit_code}"
            cells.append(
                f'<div class="bar {"ok" if bar.ok else "failed"}" data-processor="{_e(step.processor_id)}" '
                f'data-attempt="{bar.attempt}" style="left:{left:.3f}%;width:{width:.3f}%" title="{_e(title)}"></div>'
            )
        lanes.append(
            f'<div class="lane"><span class="label">{_e(step.processor_id)}</span>{"".join(cells)}</div>'
        )
    return (
        '<div style="padding-left:160px"><div class="timeline" id="timeline">'
        + "".join(lanes)
        + f'</div><div class="axis"><span>0 s</span><span>{_seconds(span)}</span></div></div>'
    )


# ------------------------------------------------------------------ tables


def _row(step: StepReport) -> str:
    from pennflow.engine.resource_use import format_bytes

    return (
        f'<tr id="step-{_e(step.processor_id)}" data-status="{_e(step.status)}"><td>{_e(step.processor_id)}</td>'
        f'<td><span class="badge s-{_e(step.status)}">{_e(step.status)}</span></td>'
        f'<td class="num">{_seconds(step.duration_seconds)}</td><td class="num">{step.attempts}</td>'
        f'<td class="num">{"" if step.exit_code is None else step.exit_code}</td>'
        f'<td class="num">{_seconds(step.cpu_seconds)}</td>'
        f'<td class="num">{format_bytes(step.peak_rss_bytes)}</td>'
        f'<td class="num">{"-" if step.cost_usd is None else format_usd(step.cost_usd)}</td></tr>'
    )


def _failures(report: RunReport) -> str:
    failed = [
        s
        for s in report.steps
        if s.status in ("FAILED", "CANCELED") or (s.reason and s.status != "SUCCEEDED")
    ]
    if not failed:
        return '<p class="muted">None.</p>'
    parts = []
    for step in failed:
        tail = (
            f"<pre>{_e(chr(10).join(step.log_tail))}</pre>"
            if step.log_tail
            else f'<p class="muted">log: {_e(step.log_location or "not available")}</p>'
        )
        parts.append(
            f'<div class="failure" data-processor="{_e(step.processor_id)}"><h3>{_e(step.processor_id)} '
            f'<span class="badge s-{_e(step.status)}">{_e(step.status)}</span></h3>'
            f"<p>{_e(step.reason or 'no reason recorded')}</p>{tail}</div>"
        )
    return "\n".join(parts)


def _provenance(report: RunReport) -> str:
    images = "".join(
        f"<li>{_e(s.processor_id)}: <code>{_e(s.image)}</code>{_digest_note(s.image)}</li>"
        for s in report.steps
        if s.image
    )
    params = "".join(
        f"<li>{_e(pid)}: "
        + ", ".join(f"<code>{_e(k)}={_e(v)}</code>" for k, v in sorted(values.items()))
        + "</li>"
        for pid, values in sorted(report.params.items())
        if values
    )
    layers = "".join(
        "<li>" + ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(layer.items())) + "</li>"
        for layer in report.layers
    )
    known = (
        ""
        if report.definition_known
        else ' <span class="muted">(definition not found: DAG from steps)</span>'
    )
    rows = [
        ("definition hash", f"<code>{_e(report.definition_hash)}</code>{known}"),
        ("dataset", _e(report.dataset_id or "none (local input folder)")),
        ("content key", f"<code>{_e(report.content_key)}</code>" if report.content_key else "none"),
        ("images", f"<ul>{images}</ul>" if images else "none (commands run locally)"),
        ("parameters", f"<ul>{params}</ul>" if params else "defaults"),
        ("layers", f"<ul>{layers}</ul>" if layers else "none"),
    ]
    if report.console_url:
        rows.append(("execution", f'<a href="{_e(report.console_url)}">Step Functions console</a>'))
    return "<dl>" + "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows) + "</dl>"


def _digest_note(image: str | None) -> str:
    return "" if image and "@sha256:" in image else ' <span class="muted">(by tag: no digest recorded)</span>'


def _cost(report: RunReport) -> str:
    cost = report.cost
    if cost is None:
        return '<p class="muted">Not measured (the run has not ended on a node, or ran before costs were kept).</p>'
    label = "Estimated cost on a node" if cost.estimate else "Cost"
    overridden = f", {len(cost.overridden)} prices overridden" if cost.overridden else ""
    rows = "".join(
        f"<tr><td>{_e(ITEM_NAMES.get(line.item, line.item))}</td><td>{_e(line.processor_id or '')}</td>"
        f"<td>{_e(line.description)}</td><td class='num'>{line.quantity:.6g} {_e(line.unit)}</td>"
        f"<td class='num'>${line.unit_price:g}</td><td class='num'>{format_usd(line.usd)}</td></tr>"
        for line in cost.lines
    )
    notes = "".join(f"<li>{_e(note)}</li>" for note in cost.notes)
    return (
        f'<p id="cost-total">{label}: <b>{format_usd(cost.total_usd)}</b> ({_e(cost.region)} list prices of '
        f"{_e(cost.prices_as_of)}{overridden}).</p>"
        "<table id='cost-lines'><thead><tr><th>charge</th><th>processor</th><th>what</th><th>quantity</th>"
        f"<th>unit price</th><th>USD</th></tr></thead><tbody>{rows}</tbody></table>"
        + (f"<ul class='muted'>{notes}</ul>" if notes else "")
    )


def _cost_total(report: RunReport) -> str:
    if report.cost is None:
        return "not measured"
    return format_usd(report.cost.total_usd) + (" (estimate)" if report.cost.estimate else "")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
