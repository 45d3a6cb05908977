"""Notebook sessions in ``pennflow run``, ``runs`` and ``status`` (``pennflow.notebooks.runs``, imported
when a command needs it): a workflow's session checked and announced, and which runs are sessions."""

from __future__ import annotations

import typer

from pennflow.cli.output import EXIT_INVALID, echo


def with_session(workflow, home, reporter, run_layers, out):
    """A workflow with an interactive processor: its layers' Python checked first (exit 2), and its
    URL said once its server answers, on ``out`` (the console of the run's progress; stderr with --json)."""
    from pennflow.notebooks.runs import SessionAnnouncer, session_problems, session_processor

    session = session_processor(workflow)
    if session is None:
        return reporter
    problems = session_problems(home, workflow, run_layers)
    if problems:
        echo("error:", style="bold red", rest=" the run cannot start:", err=True)
        for problem in problems:
            echo(f"  - {problem}", err=True)
        raise typer.Exit(EXIT_INVALID)
    if reporter is None:
        from pennflow.engine.records import SilentReporter

        return SessionAnnouncer(SilentReporter(), home, session.id, lambda text: echo(text, err=True))
    say = lambda text: out.print(text, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    return SessionAnnouncer(reporter, home, session.id, say)


def sessions_of_runs(home, runs, steps=None) -> dict[str, dict]:
    """The runs that are notebook sessions: their kind, and their URL while the server runs."""
    from pennflow.notebooks.runs import KIND_NOTEBOOK, live_url, sessions_of

    found = {}
    for run_id, state in sessions_of(home, runs).items():
        run = next(r for r in runs if r.run_id == run_id)
        url = live_url(state, run, steps)
        found[run_id] = {"kind": KIND_NOTEBOOK, **({"sessionUrl": url} if url else {})}
    return found
