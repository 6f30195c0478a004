"""A BMC fault proxy: a small aiohttp reverse proxy in front of the Redfish emulator.

The soak's Redfish racks point their BMC endpoints here. Every request is
logged with its arrival time (time.time(), the clock Temporal's close times
use on this machine): that log is the witness of what reached the BMCs. A
fault mode makes the BMC slow, answer 5xx, reset connections, or report the
wrong power state, for as long as it is set.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

MODES = ("normal", "slow", "5xx", "reset", "wrong_power")
RESET_ACTION = "ComputerSystem.Reset"
_POWER = re.compile(rb'"PowerState":\s*"(On|Off)"')


def _flip(m: re.Match[bytes]) -> bytes:
    return b'"PowerState": "Off"' if m.group(1) == b"On" else b'"PowerState": "On"'


@dataclass
class BmcRequest:
    t: float  # arrival, time.time()
    method: str
    path: str
    system: str  # Redfish System id, "" when none
    power_change: bool
    reset_type: str
    mode: str
    status: int  # what the worker got (0: connection reset)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _system_of(path: str) -> str:
    parts = path.strip("/").split("/")
    if len(parts) >= 4 and parts[:3] == ["redfish", "v1", "Systems"]:
        return parts[3]
    return ""


@dataclass
class FaultProxy:
    upstream: str
    rng: random.Random
    mode: str = "normal"
    log: list[BmcRequest] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), auto_decompress=False
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        t = time.time()
        body = await request.read()
        path = request.path
        power_change = request.method == "POST" and path.endswith(RESET_ACTION)
        reset_type = ""
        if power_change:
            try:
                reset_type = str(json.loads(body or b"{}").get("ResetType", ""))
            except ValueError:
                reset_type = "?"
        mode = self.mode
        rec = BmcRequest(
            t, request.method, path, _system_of(path), power_change, reset_type, mode, 0
        )
        self.log.append(rec)
        if mode == "reset":
            # The connection dies before any answer (the BMC never saw the request).
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if mode == "5xx":
            rec.status = self.rng.choice([500, 502, 503])
            return web.Response(status=rec.status, text="injected BMC fault")
        if mode == "slow":
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))
        assert self._session is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as resp:
                raw = await resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "application/json")
        except (aiohttp.ClientError, TimeoutError):
            rec.status = 502
            return web.Response(status=502, text="emulator unreachable")
        if mode == "wrong_power" and request.method == "GET" and rec.system and status == 200:
            raw = _POWER.sub(_flip, raw)
        rec.status = status
        return web.Response(status=status, body=raw, headers={"Content-Type": ctype})
