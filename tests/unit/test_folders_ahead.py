"""Processors' folders laid out ahead: each once, by the threads or by the processor that needs them."""

from __future__ import annotations

import threading

from pennflow.engine.folders import FoldersAhead
from pennflow.workflow.definition import validate_definition


def processors(n: int):
    workflow = validate_definition(
        {"name": "w", "processors": [{"id": f"p{i}", "command": ["true"]} for i in range(n)]}
    )
    return list(workflow.processors)


class Recorder:
    def __init__(self, fail: str | None = None, block: str | None = None):
        self.laid_out: list[tuple[str, str]] = []
        self.fail = fail
        self.block = block
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, processor) -> None:
        if processor.id == self.block:
            self.entered.set()
            self.release.wait(10)
        with self._lock:
            self.laid_out.append((processor.id, threading.current_thread().name))
        if processor.id == self.fail:
            raise OSError("disk full")


def test_the_threads_lay_out_every_processor_once() -> None:
    procs = processors(50)
    recorder = Recorder()
    ahead = FoldersAhead(procs, recorder)
    ahead.start()
    assert all(ahead.ensure(p) for p in procs)
    ahead.stop()
    assert sorted(pid for pid, _ in recorder.laid_out) == sorted(p.id for p in procs)


def test_a_processor_the_threads_did_not_reach_lays_out_its_own() -> None:
    procs = processors(3)
    recorder = Recorder()
    ahead = FoldersAhead(procs, recorder)  # not started: no thread ahead
    assert ahead.ensure(procs[2]) is True
    assert recorder.laid_out == [("p2", threading.current_thread().name)]
    ahead.start()
    ahead.stop()
    assert sorted(pid for pid, _ in recorder.laid_out) == ["p0", "p1", "p2"]  # p2 not twice


def test_a_processor_waits_for_the_thread_laying_out_its_folders() -> None:
    procs = processors(1)
    recorder = Recorder(block="p0")
    ahead = FoldersAhead(procs, recorder)
    ahead.start()
    assert recorder.entered.wait(10)
    waited: list[bool] = []
    waiter = threading.Thread(target=lambda: waited.append(ahead.ensure(procs[0])))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # still laying out: the processor waits
    recorder.release.set()
    waiter.join(10)
    assert waited == [True]
    assert [pid for pid, _ in recorder.laid_out] == ["p0"]
    ahead.stop()


def test_a_failure_ahead_leaves_the_processor_to_do_it_itself() -> None:
    procs = processors(1)
    recorder = Recorder(fail="p0")
    ahead = FoldersAhead(procs, recorder)
    ahead.start()
    ahead.stop()
    assert ahead.ensure(procs[0]) is False  # the caller lays them out, and sees the error itself


def test_after_stop_nothing_more_is_laid_out_ahead() -> None:
    procs = processors(3)
    recorder = Recorder()
    ahead = FoldersAhead(procs, recorder)
    ahead.stop()
    ahead.start()
    for thread in ahead._threads:
        thread.join(10)
    assert recorder.laid_out == []


def test_a_processor_not_listed_is_not_laid_out_ahead() -> None:
    listed, other = processors(2)
    ahead = FoldersAhead([listed], Recorder())
    assert ahead.ensure(other) is False


def test_once_the_run_stopped_the_threads_lay_out_no_more() -> None:
    procs = processors(20)
    recorder = Recorder()
    halted = threading.Event()
    halted.set()
    ahead = FoldersAhead(procs, recorder, halted=halted.is_set)
    ahead.start()
    ahead.stop()
    assert recorder.laid_out == []
    assert ahead.ensure(procs[0]) is True  # a processor that still starts lays out its own
    assert [pid for pid, _ in recorder.laid_out] == ["p0"]
