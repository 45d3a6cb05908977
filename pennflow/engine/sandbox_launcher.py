"""The program that runs inside a run's one sandbox and starts each of its processors on request.

It is started once per run inside bwrap (``engine.run_sandbox``) as ``python -I -S -c <this file>``:
the standard library only, nothing of pennflow (pennflow's own folders may not be in the sandbox's
view). It reads requests from the engine on the descriptor its one argument names, a Unix socket of packets, each one JSON
object, and answers on the same socket:

- ``{"op": "start", "id": n, "argv": [...], "env": {...}, "cwd": "..."}`` with the attempt's log
  descriptor attached: forks, and the child leads a new session (its own process group), reads
  /dev/null, writes the log, gets the default dispositions of the signals Python ignores, and execs.
  Answer: ``{"op": "started", "id": n, "pid": p}`` or ``{"op": "failed", "id": n, "errno": e}``.
- ``{"op": "signal", "pid": p, "signal": s}``: the signal to the process group ``p`` leads, as long
  as that group is one of this launcher's attempts (a reused pid is never signalled).
- once an attempt's process exits: ``{"op": "exited", "pid": p, "status": s, "cpu": seconds,
  "maxrss": kib, "own_maxrss": kib}``, its wait status and rusage (``wait4``: the processor and the
  children it waited for) and the launcher's own peak (what a fork inherits before exec).

When the socket closes (the engine ended, or died), every attempt's group is killed and the launcher
exits; when the launcher dies, bwrap's pid namespace ends and the kernel kills what is left in it.
"""

# The C modules themselves: ``socket`` and ``signal`` import ``enum`` (and ``json`` imports ``re``),
# together more than half of what the launcher's start costs; each run waits for it.
import _signal as signal
import _socket as socket
import errno
import marshal
import os
import resource
import select
import sys

MAX_REQUEST = 1 << 20
RESTORED = [getattr(signal, n) for n in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, n)]
SPAWN_DEFAULTS = [*RESTORED, signal.SIGCHLD]  # the launcher's handler is not the processor's
FD_SPACE = socket.CMSG_SPACE(4)  # one descriptor (an int) per request at most


def _receive(requests):
    """One request and the descriptor sent with it (None when none was), or (b"", None) at the end."""
    message, ancillary, _flags, _address = requests.recvmsg(MAX_REQUEST, FD_SPACE)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(data) >= 4:
            return message, int.from_bytes(data[:4], sys.byteorder)
    return message, None


def _program(argv, env):
    """The file exec runs: a path as given, else the first executable match on the child's PATH."""
    name = argv[0]
    if "/" in name:
        return name
    for folder in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def _child(request, log, report):
    """In the forked child: become the attempt's process (never returns)."""
    try:
        os.setsid()
        for number in RESTORED:
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.chdir(request["cwd"])
        os.closerange(3, report)  # the requests' socket, the wake-up pipe, the log's descriptor
        os.closerange(report + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
        env = request["env"]
        os.execve(_program(request["argv"], env), request["argv"], env)
    except OSError as exc:
        os.write(report, str(exc.errno or errno.EINVAL).encode())
    finally:
        os._exit(127)


def _start(request, log):
    """Start the attempt; its pid, or the errno that kept it from starting (as Popen reports).

    ``posix_spawn`` (vfork and exec: no copy of this process's pages) when the attempt runs in the
    launcher's own folder (every processor of a run runs in its definition's), else a fork."""
    if request["cwd"] == os.getcwd():
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log, 1),
            (os.POSIX_SPAWN_DUP2, log, 2),
        ]
        if log > 2:
            actions.append((os.POSIX_SPAWN_CLOSE, log))
        try:
            env = request["env"]
            program = _program(request["argv"], env)
            pid = os.posix_spawn(
                program, request["argv"], env, file_actions=actions, setsid=True, setsigdef=SPAWN_DEFAULTS
            )
        except OSError as exc:
            return None, exc.errno or errno.EINVAL
        return pid, None
    read_end, report = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(request, log, report)
    os.close(report)
    try:
        failure = os.read(read_end, 32)
    finally:
        os.close(read_end)
    if failure:
        os.waitpid(pid, 0)
        return None, int(failure)
    return pid, None


def _signal_group(pgid, number):
    """The signal to a group (gone already: nothing to do)."""
    try:
        os.killpg(pgid, number)
    except OSError:
        return


def main():
    requests = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(requests.fileno(), False)  # a spawned attempt gets only its log and /dev/null
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    groups = set()  # the process groups of attempts started and not yet reaped

    def send(message):
        requests.send(marshal.dumps(message))

    while True:
        try:
            readable = select.select([requests, wake_read], [], [])[0]
        except InterruptedError:
            continue
        if wake_read in readable:
            while True:
                try:
                    if not os.read(wake_read, 512):
                        break
                except BlockingIOError:
                    break
            while groups:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
                if pid == 0:
                    break
                groups.discard(pid)
                _signal_group(pid, signal.SIGKILL)  # as when a container's main process exits
                own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                cpu = usage.ru_utime + usage.ru_stime
                exited = {"op": "exited", "pid": pid, "status": status, "cpu": cpu}
                send({**exited, "maxrss": usage.ru_maxrss, "own_maxrss": own})
        if requests in readable:
            message, log = _receive(requests)
            if not message:  # the engine is gone: nothing of the run may outlive it
                for group in groups:
                    _signal_group(group, signal.SIGKILL)
                return
            request = marshal.loads(message)
            if request["op"] == "start":
                pid, failure = _start(request, log)
                os.close(log)
                if pid is None:
                    send({"op": "failed", "id": request["id"], "errno": failure})
                else:
                    groups.add(pid)
                    send({"op": "started", "id": request["id"], "pid": pid})
            elif request["op"] == "signal" and request["pid"] in groups:
                _signal_group(request["pid"], request["signal"])


if __name__ == "__main__":
    sys.exit(main())
