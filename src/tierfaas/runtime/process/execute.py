"""The instance process of an exec function: it becomes the function's program.

Everything before the exec is the same as for a Python instance (forked by the zygote, in the
function's sandbox, cgroup and process group, its stderr a pipe to the node's log); then the
process replaces itself with ``spec["exec"]["argv"]``, run in the release directory:

- ``stdio``: the program's stdin and stdout are the socket to the node (frames of
  docs/exec-protocol.md); its stdout is therefore not a log.
- ``http``: stdin reads nothing, stdout and stderr go to the log, and the socket stays open
  in the program under a descriptor it never uses: the node sees it close when the program
  (and, sandboxed, its whole pid namespace) ends. The node tells it where to listen in PORT.

An exec that fails (no such program, not executable) is reported on the socket as a
START_FAILED frame, which the node turns into the start's error.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any, NoReturn

import msgpack

from tierfaas.runtime import protocol as p

# Signals Python ignores for itself, which a program would otherwise inherit ignored.
_RESTORED = ("SIGPIPE", "SIGXFSZ", "SIGXFZ")


def exec_program(sock: socket.socket, spec: dict[str, Any]) -> NoReturn:
    """Never returns: becomes the program, or exits after saying why it could not."""
    command = spec["exec"]
    argv: list[str] = list(command["argv"])
    env = dict(os.environ)
    env.update(spec.get("env", {}))
    fd = sock.detach()
    report = fd
    try:
        os.chdir(spec["root"])
        for name in _RESTORED:
            number = getattr(signal, name, None)
            if number is not None:
                signal.signal(number, signal.SIG_DFL)
        if command["protocol"] == "stdio":
            os.dup2(fd, 0)
            os.dup2(fd, 1)
            report = os.dup(fd)  # a copy for the exec's error, closed by a successful exec
            os.set_inheritable(report, False)
            os.close(fd)
        else:
            os.set_inheritable(fd, True)
            report = fd
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        message = f"cannot run {argv[0]!r} in {spec['root']}: {reason}"
    except BaseException as exc:  # pragma: no cover - a bug, still reported to the node
        message = f"cannot run {argv[0]!r}: {type(exc).__name__}: {exc}"
    try:
        os.write(report, msgpack.packb([p.START_FAILED, "ExecFailed", message]))
    except OSError:
        pass
    os._exit(127)
