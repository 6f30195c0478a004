"""`python -m nicotask.healthcheck URL [URL ...]`: GET each URL, exit 0 when all answer 200.

The chart's `helm test` pod runs it from the chart's own image (which has no
curl): the operator's, the workers' and the shim's /healthz and /metrics. A
URL ending in /metrics must also serve Prometheus text with a nicotask_ or
temporal_ metric, so a wrong port cannot pass for the right one.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request


def check(url: str, timeout: float = 5.0) -> str | None:
    """None when healthy, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read().decode("utf-8", "replace")
            status = resp.status
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
    if status != 200:
        return f"HTTP {status}"
    if url.rstrip("/").endswith("/metrics") and not any(
        line.startswith(("nicotask_", "temporal_")) for line in body.splitlines()
    ):
        return "no nicotask_ or temporal_ metric in the answer"
    return None


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m nicotask.healthcheck URL [URL ...]", file=sys.stderr)
        return 2
    failed = 0
    for url in argv:
        # Pods may be Ready a moment before their Service endpoints are: a few tries.
        for attempt in range(5):
            why = check(url)
            if why is None or attempt == 4:
                break
            time.sleep(2)
        print(f"{'ok  ' if why is None else 'FAIL'} {url}" + (f": {why}" if why else ""))
        failed += why is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
