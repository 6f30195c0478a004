"""Free loopback TCP ports."""

from __future__ import annotations

import contextlib
import random
import socket

LOOPBACK = "127.0.0.1"


# Below Linux's ephemeral range (32768-60999): for ports a program keeps in a signed
# 16-bit column (the Temporal server's cluster membership table).
LOW_RANGE = (20000, 32767)


def pick_ports(
    names: list[str], previous: dict[str, int] | None = None, low: frozenset[str] = frozenset()
) -> dict[str, int]:
    """One distinct free port per name.

    A port used by the previous run of the same run folder is kept when it is
    still free, so kubeconfigs and exported addresses stay valid across
    `down`/`up`. The others come from binding port 0, or for the names in `low`
    a random free port of LOW_RANGE; all sockets stay open until every port is
    chosen, so no two names get the same port.
    """
    previous = previous or {}
    chosen: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        for name in names:
            want = previous.get(name, 0)
            if name in low and not LOW_RANGE[0] <= want <= LOW_RANGE[1]:
                want = -1
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            # servers set SO_REUSEADDR too, so a port in TIME_WAIT is usable
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if want >= 0:
                with contextlib.suppress(OSError):
                    s.bind((LOOPBACK, want))
            if s.getsockname()[1] == 0 and name in low:
                for _ in range(200):
                    with contextlib.suppress(OSError):
                        s.bind((LOOPBACK, random.randint(*LOW_RANGE)))
                        break
            if s.getsockname()[1] == 0:
                s.bind((LOOPBACK, 0))
            chosen[name] = s.getsockname()[1]
    return chosen
