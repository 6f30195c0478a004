"""The shim's cancel load, sent from a process of its own (`python -m bench.shimload`).

The bench's own process follows every task's watch events; a load generator
sharing its event loop would time that loop as much as the shim (as wrk or
hey, the load runs apart). It reads one JSON job on stdin:
  {"base_url", "token", "site_id", "org", "concurrency", "tasks": [[name, uid], ...]}
(a task may be listed more than once: each entry is one request)
opens its connections with one GET of each of the first `concurrency`
tasks, posts `POST /v2/org/<org>/nico/task/<uid>/cancel` for each task with
`concurrency` in flight (aiohttp), and prints one JSON result on stdout:
  {"wall_s", "latencies_s": [...], "sent": {name: time.monotonic()},
   "status_codes": {...}, "response_status": {...}, "failures": [...]}
time.monotonic() is the system's CLOCK_MONOTONIC, so the bench can compare
`sent` with its own watch times.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson


async def run(job: dict[str, Any]) -> dict[str, Any]:
    concurrency = int(job["concurrency"])
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for name, uid in job["tasks"]:
        queue.put_nowait((name, uid))
    latencies: list[float] = []
    sent: dict[str, float] = {}
    codes: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    body = orjson.dumps({"siteId": job["site_id"]})
    async with aiohttp.ClientSession(
        job["base_url"],
        headers={"Authorization": f"Bearer {job['token']}", "Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=30.0),
        connector=aiohttp.TCPConnector(limit=concurrency),
    ) as http:

        async def sender() -> None:
            while not queue.empty():
                name, uid = queue.get_nowait()
                t = time.monotonic()
                sent.setdefault(name, t)
                try:
                    async with http.post(
                        f"/v2/org/{job['org']}/nico/task/{uid}/cancel", data=body
                    ) as resp:
                        raw = await resp.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    codes["error"] += 1
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.monotonic() - t)
                codes[str(resp.status)] += 1
                if resp.status == 202:
                    statuses[str(orjson.loads(raw).get("status"))] += 1
                elif len(failures) < 3:
                    failures.append(f"{resp.status}: {raw[:200]!r}")

        async def warm(uid: str) -> None:  # open the connections (and the shim's caches)
            async with http.get(
                f"/v2/org/{job['org']}/nico/task/{uid}", params={"siteId": job["site_id"]}
            ) as resp:
                await resp.read()

        await asyncio.gather(*(warm(uid) for _, uid in job["tasks"][:concurrency]))
        t0 = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        wall = time.monotonic() - t0
    return {
        "wall_s": wall,
        "latencies_s": latencies,
        "sent": sent,
        "status_codes": dict(codes),
        "response_status": dict(statuses),
        "failures": failures,
    }


def main() -> None:
    job = orjson.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(orjson.dumps(asyncio.run(run(job))))


if __name__ == "__main__":
    main()
