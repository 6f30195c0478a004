"""Free loopback TCP ports."""

from __future__ import annotations

import contextlib
import socket

LOOPBACK = "127.0.0.1"


def pick_ports(names: list[str], previous: dict[str, int] | None = None) -> dict[str, int]:
    """One distinct free port per name.

    A port used by the previous run of the same run folder is kept when it is
    still free, so kubeconfigs and exported addresses stay valid across
    `down`/`up`. The others come from binding port 0; all sockets stay open
    until every port is chosen, so no two names get the same port.
    """
    previous = previous or {}
    chosen: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        for name in names:
            want = previous.get(name, 0)
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            # servers set SO_REUSEADDR too, so a port in TIME_WAIT is usable
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((LOOPBACK, want))
            except OSError:
                s.bind((LOOPBACK, 0))
            chosen[name] = s.getsockname()[1]
    return chosen
