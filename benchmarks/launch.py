"""Run one command and print its wall time, CPU time and peak RSS as one JSON line.

Used by ``run.py``::

    python -I -S benchmarks/launch.py TIMEOUT STDOUT STDERR -- COMMAND [ARG...]

STDOUT and STDERR are files to send the command's output to (``/dev/null`` is fine); stdin is
``/dev/null``. After TIMEOUT seconds the command is killed (through a pidfd, so only that process).

Why a separate, small interpreter: at ``exec`` Linux carries the high-water resident set of the
memory the process had before into its ``ru_maxrss``. A command started with ``vfork``/
``posix_spawn`` (as ``subprocess`` does) from the benchmark runner would report at least the
runner's own peak; a plain ``fork`` from this small process keeps that floor to a few MiB.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time


def run(timeout: float, stdout: str, stderr: str, argv: list[str]) -> dict[str, object]:
    null_in = os.open(os.devnull, os.O_RDONLY)
    out_fd = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err_fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(null_in, 0)
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"cannot start {argv[0]}: {exc}\n".encode())
        os._exit(127)
    for fd in (null_in, out_fd, err_fd):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        timed_out = not poller.poll(max(1, int(timeout * 1000)))
        if timed_out:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
    finally:
        os.close(pidfd)
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
        "returncode": os.waitstatus_to_exitcode(status),
        "timed_out": timed_out,
    }


def main(args: list[str]) -> int:
    if len(args) < 5 or args[3] != "--":
        print("usage: launch.py TIMEOUT STDOUT STDERR -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    result = run(float(args[0]), args[1], args[2], args[4:])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
