"""A psql session on the Temporal server's PostgreSQL (NICOTASK_TEMPORAL=server).

Tests hold a transaction open with it: a row lock on an execution's visibility
record keeps the server's visibility writes for that execution waiting while
everything else goes on, as a lagging visibility store would.

    async with PsqlSession(env, temporalserver.VISIBILITY_DB) as db:
        await db.run("BEGIN; SELECT 1 FROM executions_visibility WHERE ... FOR UPDATE;")
        ...
        await db.run("COMMIT;")
"""

from __future__ import annotations

import asyncio
import os
from types import TracebackType

from . import ports, temporalserver
from .env import DevEnv

DONE = "--nicotask-psql-done--"


class PsqlError(RuntimeError):
    pass


class PsqlSession:
    def __init__(self, env: DevEnv, database: str, timeout: float = 30.0) -> None:
        state = env.load_state()
        if state.get("temporal_mode") != "server":
            raise RuntimeError("no PostgreSQL here: the environment runs the Temporal dev server")
        self.port = int(state["ports"]["postgres"])
        self.database = database
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> PsqlSession:
        psql = temporalserver.ensure_postgres() / "psql"
        self._proc = await asyncio.create_subprocess_exec(
            str(psql),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            ports.LOOPBACK,
            "-p",
            str(self.port),
            "-U",
            temporalserver.DB_USER,
            "-d",
            self.database,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PGPASSWORD": temporalserver.DB_PASSWORD},
        )
        return self

    async def run(self, sql: str) -> list[str]:
        """Run `sql` in the session; its output lines, once every statement finished."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{sql}\n\\echo {DONE}\n".encode())
        await proc.stdin.drain()
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), self.timeout)
            if not raw:
                raise PsqlError(f"psql exited ({proc.returncode}): {' '.join(lines)[-2000:]}")
            line = raw.decode().rstrip("\n")
            if line == DONE:
                return lines
            lines.append(line)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # an open transaction is rolled back
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
