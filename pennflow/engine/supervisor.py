"""The supervisor of one local run: ``python -m pennflow.engine.supervisor DB_PATH RUN_ID``.

Started by the engine in its own session, it blocks reading the pipe only the engine holds. The
engine writes ``done`` when its run ended; when the pipe closes without it, the engine died
(``kill -9``, a crash) and the supervisor ends the run at once: its process groups killed, FAILED
"engine stopped (...)", its layer pins released. It imports pennflow's store only then, so it
costs the run nothing but a sleeping process.
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGHUP):  # a closed terminal stops the engine, not its supervisor
        signal.signal(sig, signal.SIG_IGN)
    db_path, run_id = argv
    said = sys.stdin.buffer.read()  # until the engine closes the pipe, or dies
    if said:  # the engine writes only once its run ended as it should
        return 0
    import site

    site.main()  # started with -S: the store needs the installed packages now
    from pennflow.engine.orphans import end_orphaned
    from pennflow.stores.sqlite import SqliteRunStore

    with SqliteRunStore(db_path) as store:
        lease = store.leases.get(run_id)
        if lease is not None:
            end_orphaned(store, store.leases, lease)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
