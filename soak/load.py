"""The load: tasks created over the soak's first part, a random share of them cancelled at
random moments through every path, every call retried (bounded) through the faults."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from bench.env import progress

from nicotask import api
from nicotask.kube import Conflict, Kube, KubeError, NotFound, Refused
from nicotask_dev.devenv import system as devsystem
from nicotask_dev.shim.devissuer import issue_token

from . import objects as o
from .env import SoakEnv
from .watch import SoakWatch

PATHS = ("merge_patch", "server_side_apply", "rest_shim", "kubectl_nico", "graceful", "delete")
HARD_PATHS = ("merge_patch", "server_side_apply", "rest_shim", "kubectl_nico")
KUBECTL_NICO = str(Path(sys.executable).parent / "kubectl-nico")
RETRY_FOR_S = 90.0


@dataclass
class Cancel:
    task: str
    path: str
    planned: float  # time.monotonic()
    sent: float = 0.0
    accepted: float | None = None  # the API server (or the shim) took it
    accepted_wall: float | None = None
    status_at_accept: str = ""
    attempts: int = 0
    codes: list[str] = field(default_factory=list)  # every answer, in order
    error: str = ""

    def to_json(self, t0: float) -> dict[str, Any]:
        return {
            "task": self.task,
            "path": self.path,
            "sent_s": round(self.sent - t0, 3) if self.sent else None,
            "accepted_s": None if self.accepted is None else round(self.accepted - t0, 3),
            "status_at_accept": self.status_at_accept,
            "attempts": self.attempts,
            "codes": self.codes[-10:],
            "error": self.error,
        }


@dataclass
class ShimAnswer:
    t: float
    status: int
    task: str


class Load:
    def __init__(
        self, senv: SoakEnv, kube: Kube, watch: SoakWatch, rng: random.Random, proxy_url: str
    ) -> None:
        self.senv, self.kube, self.watch, self.rng = senv, kube, watch, rng
        self.proxy_url = proxy_url
        self.sleep_rules: list[o.Rule] = []
        self.redfish_rules: list[o.Rule] = []
        self.sleep_racks: list[str] = []
        self.redfish_racks: dict[str, str] = {}  # rack -> Redfish System id
        self.task_rack: dict[str, str] = {}
        self.task_rule: dict[str, str] = {}
        self.created: dict[str, float] = {}
        self.create_errors: list[str] = []
        self.cancels: list[Cancel] = []
        self.shim_answers: list[ShimAnswer] = []
        self._token = ""
        self._inflight: set[asyncio.Task[None]] = set()

    # ---- setup -----------------------------------------------------------------

    async def setup(self, tasks: int, scale: float, redfish_racks: int) -> None:
        await self.senv.seed_namespace(self.kube.core, o.NAMESPACE, o.SECRET)
        from bench import objects as bo

        for plural, body in ((api.PROVIDERS, bo.provider()), (api.SITES, bo.site())):
            with contextlib.suppress(Conflict):
                await self.kube.create(plural, body)
        self.sleep_rules = o.sleep_rules(scale)
        self.redfish_rules = o.redfish_rules()
        for rule in [*self.sleep_rules, *self.redfish_rules, o.probe_rule()]:
            with contextlib.suppress(Conflict):
                await self.kube.create(api.RULES, rule.body, o.NAMESPACE)
        systems = [s for s in self.senv.state["redfish_systems"] if s["type"] == "compute"]
        n_sleep = max(4, tasks // 3)
        self.sleep_racks = [f"r-{i:04d}" for i in range(n_sleep)]
        bodies = [o.rack(r, self.senv.redfish_url, systems[-1]) for r in self.sleep_racks]
        for i, s in enumerate(systems[: max(0, min(redfish_racks, len(systems) - 1))]):
            name = f"bmc-{i}"
            self.redfish_racks[name] = s["id"]
            bodies.append(o.rack(name, self.proxy_url, s))
        sem = asyncio.Semaphore(20)

        async def make(body: dict[str, Any]) -> None:
            async with sem:
                with contextlib.suppress(Conflict):
                    await self.kube.create(api.RACKS, body, o.NAMESPACE)

        await asyncio.gather(*(make(b) for b in bodies))
        self._token = issue_token(
            key_dir=self.senv.run_dir,
            org=o.ORG,
            roles=["PROVIDER_ADMIN"],
            subject="soak",
            ttl=6 * 3600,
        )
        progress(
            f"setup: {len(self.sleep_racks)} sleep racks, {len(self.redfish_racks)}"
            f" Redfish racks behind the fault proxy, {len(self.sleep_rules)} + "
            f"{len(self.redfish_rules)} rules"
        )

    # ---- creating ----------------------------------------------------------------

    async def run(
        self, tasks: int, create_for: float, cancel_share: float, cancel_until: float
    ) -> None:
        """Create `tasks` tasks evenly over `create_for` seconds; plan the cancels."""
        t_start = time.monotonic()
        redfish_share = 0.06 if self.redfish_racks else 0.0
        for i in range(tasks):
            due = t_start + create_for * i / max(1, tasks)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            name = f"t-{i:05d}"
            if self.rng.random() < redfish_share:
                rack = self.rng.choice(sorted(self.redfish_racks))
                rule = self.rng.choice(self.redfish_rules)
            else:
                rack = self.rng.choice(self.sleep_racks)
                rule = self.rng.choice(self.sleep_rules)
            self.task_rack[name], self.task_rule[name] = rack, rule.name
            self._spawn(self._create(name, rack, rule))
            if self.rng.random() < cancel_share:
                at = time.monotonic() + self.rng.uniform(0.0, 35.0)
                if at < cancel_until:
                    c = Cancel(name, self.rng.choice(PATHS), at)
                    self.cancels.append(c)
                    self._spawn(self._cancel_at(c))
        progress(f"load: {tasks} creates issued, {len(self.cancels)} cancels planned")

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._inflight.add(t)
        t.add_done_callback(self._inflight.discard)

    async def drain(self, timeout: float) -> None:
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=timeout)

    async def _create(self, name: str, rack: str, rule: o.Rule) -> None:
        body = o.task(name, rack, rule)
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            try:
                await self.kube.create(api.TASKS, body, o.NAMESPACE)
                self.created[name] = time.monotonic()
                return
            except Conflict:  # an earlier attempt got through before its answer was lost
                self.created[name] = time.monotonic()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    self.create_errors.append(f"{name}: {type(exc).__name__}: {exc}"[:200])
                    return
                await asyncio.sleep(1.0)

    # ---- cancelling ------------------------------------------------------------------

    async def _cancel_at(self, c: Cancel) -> None:
        await asyncio.sleep(max(0.0, c.planned - time.monotonic()))
        if c.task not in self.created:
            for _ in range(100):
                if c.task in self.created:
                    break
                await asyncio.sleep(0.5)
            else:
                c.error = "never created"
                return
        c.sent = time.monotonic()
        deadline = c.sent + RETRY_FOR_S
        delay = 1.0
        while time.monotonic() < deadline:
            c.attempts += 1
            try:
                code = await getattr(self, f"_via_{c.path}")(c)
            except Exception as exc:
                code = f"error:{type(exc).__name__}"
                c.error = f"{type(exc).__name__}: {exc}"[:200]
            c.codes.append(code)
            if code == "ok":
                c.accepted, c.accepted_wall = time.monotonic(), time.time()
                # The status the API server's witness holds when the cancel is taken; a
                # task already seen finished is not a cancel "while running".
                h = self.watch.history.get(c.task)
                c.status_at_accept = (
                    h.terminal
                    if h is not None and h.terminal
                    else self.watch.current.get(c.task, "") or "Pending"
                )
                c.error = ""
                return
            if code in ("refused", "gone"):  # a final answer: no cancel to apply
                return
            # As a user would: back off (each `kubectl nico` try is a process start).
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    async def _via_merge_patch(self, c: Cancel) -> str:
        return await self._patch(c.task, {"spec": {"cancel": True}})

    async def _via_graceful(self, c: Cancel) -> str:
        return await self._patch(
            c.task,
            {
                "spec": {
                    "cancel": True,
                    "cancelMode": "Graceful",
                    "cancelReason": "soak graceful stop",
                }
            },
        )

    async def _patch(self, name: str, body: dict[str, Any]) -> str:
        try:
            await self.kube.patch(api.TASKS, name, body, o.NAMESPACE)
        except NotFound:
            return "gone"
        except Refused:
            return "refused"
        except KubeError:
            return "retry"
        return "ok"

    async def _via_server_side_apply(self, c: Cancel) -> str:
        from kubernetes_asyncio.client import ApiException

        body = {
            "apiVersion": f"{api.GROUP}/{api.VERSION}",
            "kind": "NicoTask",
            "metadata": {"name": c.task, "namespace": o.NAMESPACE},
            "spec": {"cancel": True},
        }
        custom: Any = self.kube.custom
        try:
            await custom.patch_namespaced_custom_object(
                api.GROUP,
                api.VERSION,
                o.NAMESPACE,
                api.TASKS,
                c.task,
                body,
                field_manager="soak-gitops",
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        except ApiException as exc:
            if exc.status == 404:
                return "gone"
            return "refused" if exc.status == 422 else "retry"
        return "ok"

    async def _via_delete(self, c: Cancel) -> str:
        try:
            await self.kube.delete(api.TASKS, c.task, o.NAMESPACE)
        except NotFound:
            return "gone"
        except KubeError:
            return "retry"
        return "ok"

    async def _via_kubectl_nico(self, c: Cancel) -> str:
        kubeconfig = self.senv.kubeconfig
        proc = await asyncio.create_subprocess_exec(
            KUBECTL_NICO,
            "cancel",
            c.task,
            "-n",
            o.NAMESPACE,
            "--kubeconfig",
            kubeconfig,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return "retry"
        if proc.returncode == 0:
            return "ok"
        text = (out + err).decode(errors="replace")
        if "not found" in text.lower() or "NotFound" in text:
            return "gone"
        return "retry"

    async def _via_rest_shim(self, c: Cancel) -> str:
        uid = self.watch.uids.get(c.task)
        if not uid:
            return "retry"
        url = f"{self.senv.shim_url}/v2/org/{o.ORG}/nico/task/{uid}/cancel"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.post(
                url,
                data=orjson.dumps({"siteId": o.SITE_ID}),
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Content-Type": "application/json",
                },
            ) as resp,
        ):
            raw = await resp.read()
            self.shim_answers.append(ShimAnswer(time.monotonic(), resp.status, c.task))
            if resp.status != 202:
                c.error = raw[:160].decode(errors="replace")
            if resp.status == 202:
                return "ok"
            if resp.status in (400, 404, 409):
                return "refused"  # finished already (400) or unknown: a final answer
            return f"http:{resp.status}"

    # ---- probes --------------------------------------------------------------------------

    async def probe_racks(self, racks: list[str], timeout: float) -> dict[str, str]:
        """A one-second task on each rack: a rack left locked never runs it."""
        rule = o.probe_rule()
        names = {}
        for rack in racks:
            name = f"probe-{rack}"
            names[name] = rack
            with contextlib.suppress(Conflict):
                await self.kube.create(api.TASKS, o.task(name, rack, rule), o.NAMESPACE)
        await self.watch.wait_for(
            list(names), ["Succeeded", "Failed", "Terminated"], timeout, "probes"
        )
        return {rack: self.watch.current.get(name, "") for name, rack in names.items()}


def kubectl(senv: SoakEnv, *args: str) -> str:
    return devsystem.kubectl(senv.env, *args)
