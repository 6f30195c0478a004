"""Pure readers of the profiles `--profile` records (bench/profile.py): py-spy's raw
collapsed stacks of the Python processes and `go tool pprof -traces` of kube-apiserver,
boiled down to a short text: where each process's CPU goes, by package and by function.

py-spy samples only Python threads (a C extension's time, orjson's or pydantic-core's,
counts for the Python function that called it) and only while they run; the
per-thread CPU from /proc says how much of the process that is (the Temporal SDK's
Rust core runs on native threads py-spy does not see).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# A frame's package, from its file name (py-spy --full-filenames): first match wins.
PACKAGES: tuple[tuple[str, str], ...] = (
    ("/kopf/", "kopf"),
    ("/kubernetes_asyncio/", "kubernetes/aiohttp"),
    ("/aiohttp/", "kubernetes/aiohttp"),
    ("/yarl/", "kubernetes/aiohttp"),
    ("/multidict/", "kubernetes/aiohttp"),
    ("/temporalio/", "temporalio"),
    ("/google/protobuf/", "temporalio"),  # the SDK's messages
    ("/pydantic/", "pydantic"),
    ("/pydantic_core/", "pydantic"),
    ("/json/", "json"),
    ("/orjson", "json"),
    ("/nicotask/", "nicotask"),
    ("/fastapi/", "fastapi/uvicorn"),
    ("/starlette/", "fastapi/uvicorn"),
    ("/uvicorn/", "fastapi/uvicorn"),
    ("/anyio/", "fastapi/uvicorn"),
    ("/prometheus_client/", "prometheus_client"),
    ("/asyncio/", "asyncio"),
    ("/selectors.py", "asyncio"),  # the event loop's poll
    ("/concurrent/futures/", "threads"),
    ("/threading.py", "threads"),
    ("/logging/", "logging"),
    ("/ssl.py", "ssl"),
)
# Where a callback or a thread's work item starts: frames above it (the entry points,
# kopf.run, the event loop) are on every stack and say nothing.
LOOP_FRAMES = (
    ("Handle._run", "/asyncio/events.py"),
    ("_worker", "/concurrent/futures/thread.py"),
    ("Thread.run", "/threading.py"),
)
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


def package_of(filename: str) -> str:
    for marker, name in PACKAGES:
        if marker in filename:
            return name
    if "/lib/python3" in filename and "site-packages" not in filename:
        return "stdlib (other)"
    return "other"


@dataclass(frozen=True)
class Frame:
    func: str
    file: str

    @property
    def package(self) -> str:
        return package_of(self.file)

    def label(self) -> str:
        """`func (package/module.py)`: the file from its package directory on."""
        short = self.file
        for marker in ("/site-packages/", "/operator/", "/lib/python3.11/", "/bench/"):
            if marker in short:
                short = short.split(marker, 1)[1]
                break
        return f"{self.func} ({short})"


def parse_frame(text: str) -> Frame:
    m = FRAME.match(text)
    return Frame(m["func"], m["file"]) if m else Frame(text, "")


@dataclass
class Stacks:
    """Collapsed stacks (root first) with their sample counts, by thread id."""

    samples: list[tuple[int | None, tuple[Frame, ...], int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.samples)

    @property
    def threads(self) -> set[int]:
        return {tid for tid, _, _ in self.samples if tid is not None}


THREAD = re.compile(r"^thread \((?:0x)?(?P<tid>[0-9A-Fa-f]+)\)")


def parse_collapsed(text: str) -> Stacks:
    """py-spy's `--format raw` (with or without `--threads`): `frame;frame;... count`."""
    out = Stacks()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        tid = None
        m = THREAD.match(parts[0])
        if m:
            tid = int(m["tid"], 16 if parts[0].startswith("thread (0x") else 10)
            parts = parts[1:]
        out.samples.append((tid, tuple(parse_frame(p) for p in parts), int(count)))
    return out


INFRASTRUCTURE = ("asyncio", "threads", "stdlib (other)", "other", "logging", "ssl")


def _share(counter: Counter[str], total: int, top: int) -> list[tuple[str, float]]:
    return [(k, 100.0 * v / total) for k, v in counter.most_common(top)] if total else []


@dataclass
class PySummary:
    """Shares (percent of the samples) by package and by function."""

    samples: int
    self_by_package: list[tuple[str, float]]
    self_by_function: list[tuple[str, float]]
    total_by_function: list[tuple[str, float]]
    by_our_caller: list[tuple[str, float]]


def work(frames: tuple[Frame, ...]) -> tuple[Frame, ...]:
    """The frames below the innermost event-loop callback or thread work item (all of
    them when there is none)."""
    for i in range(len(frames) - 1, -1, -1):
        f = frames[i]
        if any(f.func == fn and f.file.endswith(file) for fn, file in LOOP_FRAMES):
            return frames[i + 1 :] or frames[i:]
    return frames


def summarize_stacks(stacks: Stacks, top: int = 15) -> PySummary:
    """Self (the leaf frame) by package and function; total (once per sample, among the
    frames below the event loop's callback) by function; and by our caller: the
    innermost nicotask frame below the callback, which counts what our function costs
    with the library work below it (samples with none go to the package of their
    outermost frame that is not asyncio or the standard library: the framework that
    drove them, kopf's watch processing say)."""
    self_pkg: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for _, frames, n in stacks.samples:
        if not frames:
            continue
        leaf = frames[-1]
        self_pkg[leaf.package] += n
        self_fn[leaf.label()] += n
        below = work(frames)
        for label in {f.label() for f in below}:
            total_fn[label] += n
        mine = [f for f in below if f.package == "nicotask"]
        if mine:
            ours[mine[-1].label()] += n
        else:
            drivers = [f.package for f in below if f.package not in INFRASTRUCTURE]
            ours[f"(no nicotask frame: {drivers[0] if drivers else leaf.package})"] += n
    total = stacks.total
    return PySummary(
        samples=total,
        self_by_package=_share(self_pkg, total, 20),
        self_by_function=_share(self_fn, total, top),
        total_by_function=_share(total_fn, total, top),
        by_our_caller=_share(ours, total, top),
    )


# ---- kube-apiserver: `go tool pprof -traces` --------------------------------------------

# What a sample of kube-apiserver was doing, by the frames on its stack: first rule wins.
APISERVER_ACTIVITIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/metrics (the bench's own scrapes; left out)", ("promhttp.", "(*kubeRegistry).Gather")),
    ("pprof (the profile itself; left out)", ("runtime/pprof.",)),
    ("GC (background)", ("runtime.gcBgMarkWorker",)),
    ("watch: encode and send to watchers", ("(*cacheWatcher)", "serveWatch", "(*WatchServer)")),
    (
        "watch cache: etcd's events in",
        ("(*watchCache)", "(*Cacher).processEvent", "(*Cacher).dispatch", "(*watchChan)"),
    ),
    ("create", ("createHandler", "CreateResource")),
    ("patch", ("PatchResource", "(*patcher)")),
    ("update (PUT)", ("UpdateResource",)),
    ("get", ("GetResource", "getResourceHandler")),
    ("list", ("ListResource",)),
    ("delete", ("DeleteResource",)),
    ("request filters (authn, authz, flow control, audit)", ("DefaultBuildHandlerChain",)),
    ("HTTP/2 and TLS", ("net/http.", "x/net/http2.", "crypto/tls.")),
)
LEFT_OUT = ("/metrics (", "pprof (")
# What the sampled code was, by its innermost frame of a known kind (leaf first).
APISERVER_FEATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("memory allocation", ("runtime.mallocgc", "runtime.newobject", "runtime.growslice")),
    ("GC", ("runtime.gcBgMarkWorker", "runtime.gcDrain", "runtime.gcAssist")),
    ("JSON encode/decode", ("encoding/json", "sigs.k8s.io/json", "json-iterator")),
    ("protobuf (etcd, gRPC)", ("protobuf", "mvccpb", "etcdserverpb")),
    ("CEL rules", ("cel-go", "/cel.", "pkg/cel")),
    ("OpenAPI schema: validation", ("kube-openapi/pkg/validation",)),
    ("structural schema: pruning, defaulting, coercion", ("apiserver/schema",)),
    ("managedFields", ("managedfields", "fieldmanager", "structured-merge-diff")),
    ("admission", ("pkg/admission",)),
    ("etcd client and gRPC", ("go.etcd.io/etcd/client", "google.golang.org/grpc")),
    ("TLS and crypto", ("crypto/",)),
    ("HTTP/2", ("x/net/http2", "net/http.")),
    (
        "authn/authz, audit, flow control",
        ("pkg/authentication", "pkg/authorization", "audit", "flowcontrol"),
    ),
    ("syscalls", ("syscall",)),
)  # fmt: skip
TRACE_SEP = re.compile(r"^-{5,}\+-{5,}")
VALUE = re.compile(r"^\s*(?P<v>[0-9.]+)(?P<unit>ns|us|µs|ms|s)\s+(?P<func>\S.*)$")
UNITS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_traces(text: str) -> list[tuple[float, list[str]]]:
    """`go tool pprof -traces`: each sample's value in ms and its functions, leaf first."""
    out: list[tuple[float, list[str]]] = []
    current: tuple[float, list[str]] | None = None
    for line in text.splitlines():
        if TRACE_SEP.match(line):
            if current is not None:
                out.append(current)
            current = None
            continue
        m = VALUE.match(line)
        if m:
            if current is not None:
                out.append(current)
            current = (float(m["v"]) * UNITS[m["unit"]], [m["func"].strip()])
        elif current is not None and line.strip():
            current[1].append(line.strip())
    if current is not None:
        out.append(current)
    return out


def _first_match(funcs: Iterable[str], rules: Iterable[tuple[str, tuple[str, ...]]]) -> str | None:
    """The first rule with a marker in any of `funcs` (rules in order)."""
    funcs = list(funcs)
    for name, markers in rules:
        if any(m in f for f in funcs for m in markers):
            return name
    return None


def _nearest(funcs: Sequence[str], rules: Iterable[tuple[str, tuple[str, ...]]]) -> str | None:
    """The rule of the innermost frame (leaf first) that matches one."""
    rules = list(rules)
    for f in funcs:
        for name, markers in rules:
            if any(m in f for m in markers):
                return name
    return None


def apiserver_shares(
    traces: list[tuple[float, list[str]]],
) -> tuple[float, float, list[tuple[str, float]], list[tuple[str, float]]]:
    """ms sampled and ms left out (the bench's own /metrics scrapes, the profiler); of the
    rest, percent by activity and percent by kind of code (the innermost known frame)."""
    act: dict[str, float] = {}
    feat: dict[str, float] = {}
    left_out = 0.0
    for value, funcs in traces:
        name = _first_match(funcs, APISERVER_ACTIVITIES) or "other"
        if name.startswith(LEFT_OUT):
            left_out += value
            continue
        act[name] = act.get(name, 0.0) + value
        kind = _nearest(funcs, APISERVER_FEATURES) or "other (runtime, maps, reflection, ...)"
        feat[kind] = feat.get(kind, 0.0) + value
    kept = sum(act.values())
    if not kept:
        return 0.0, left_out, [], []

    def ranked(d: dict[str, float]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / kept) for k, v in sorted(d.items(), key=lambda kv: -kv[1])]

    return kept + left_out, left_out, ranked(act), ranked(feat)
