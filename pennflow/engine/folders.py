"""Each processor's folders, laid out ahead of its start while earlier processors run.

A processor's first attempt needs its processor folder, an empty OUTPUT_DIR and its layers view
(LAYERS_DIR). Creating a folder is a file system journal entry, which on virtual and network disks
takes a millisecond or more: done when the processor starts, that is most of what the engine costs a
short processor. A few threads lay the folders out in the order the processors are likely to start;
a processor about to start waits only for its own, or lays them out itself when the threads have not
reached it yet. Nothing else is done ahead: fan-in unions need the dependencies' outputs, and the log
appears when the processor starts (``pennflow logs`` tells a processor that never started by it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from pennflow.workflow.definition import Processor

AHEAD_THREADS = 2  # folder creation waits on the disk, not the CPU: two keep ahead of a serial run


class _Layout:
    """One processor's folders: claimed by whoever lays them out first, done when they exist."""

    __slots__ = ("claimed", "done", "failed")

    def __init__(self) -> None:
        self.claimed = False
        self.done = threading.Event()
        self.failed = False


class FoldersAhead:
    """Lays out ``lay_out(processor)`` once per processor: ahead in threads, or on demand."""

    def __init__(
        self,
        processors: Iterable[Processor],
        lay_out: Callable[[Processor], None],
        halted: Callable[[], bool] = lambda: False,
    ):
        self._lay_out = lay_out
        self._halted = halted  # the run stopped: the processors not started yet never will
        self._queue = deque(processors)
        self._layouts = {processor.id: _Layout() for processor in self._queue}
        self._lock = threading.Lock()
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def start(self, threads: int = AHEAD_THREADS) -> None:
        for index in range(min(threads, len(self._queue))):
            thread = threading.Thread(target=self._ahead, name=f"pennflow-folders-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """No more folders ahead (the run ended or stopped); the ones being laid out finish."""
        with self._lock:
            self._stopped = True
            self._queue.clear()
        for thread in self._threads:
            thread.join()

    def ensure(self, processor: Processor) -> bool:
        """Block until the processor's folders exist; True when they were laid out ahead (or now,
        here), False when laying them out ahead failed (the caller does it itself, so the error
        shows where it always did)."""
        layout = self._layouts.get(processor.id)
        if layout is None:
            return False
        with self._lock:
            mine = not layout.claimed
            layout.claimed = True
        if mine:
            try:
                self._lay_out(processor)  # an error here is the processor's, as before
            finally:
                layout.done.set()
            return True
        layout.done.wait()
        return not layout.failed

    def _ahead(self) -> None:
        while True:
            with self._lock:
                if self._stopped or not self._queue or self._halted():
                    return
                processor = self._queue.popleft()
                layout = self._layouts[processor.id]
                if layout.claimed:
                    continue
                layout.claimed = True
            try:
                self._lay_out(processor)
            except Exception:  # e.g. a full disk: the processor tries again itself and fails visibly
                layout.failed = True
            finally:
                layout.done.set()
