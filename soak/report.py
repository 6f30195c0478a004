"""The soak's report: JSON, and a short text table."""

from __future__ import annotations

from typing import Any


def total_violations(report: dict[str, Any]) -> int:
    return sum(int(v["count"]) for v in report["invariants"].values())


def render(report: dict[str, Any]) -> str:
    lines = []
    p = report["params"]
    lines.append(
        f"soak: seed {p['seed']}, {p['tasks']} tasks, {p['seconds']} s of faults and cancels, "
        f"wall {report['wall_s']} s, commit {report.get('commit', '?')}"
    )
    lines.append("")
    lines.append(f"{'fault':<22}{'count':>6}{'errors':>8}")
    for kind, row in report["faults"]["by_kind"].items():
        lines.append(f"{kind:<22}{row['count']:>6}{row['errors']:>8}")
    tk = report["faults"].get("takeover_s") or {}
    if tk:
        lines.append(
            f"standby takeover (SIGSTOP -> resumed): p50 {tk.get('p50_s')} s, "
            f"max {tk.get('max_s')} s, n {tk.get('n')}; standby at the SIGSTOP: "
            f"{tk.get('standby')}"
        )
    lines.append("")
    lines.append(f"{'cancel path':<22}{'planned':>8}{'accepted':>9}{'live':>6}")
    for path, row in report["cancels"]["by_path"].items():
        lines.append(f"{path:<22}{row['planned']:>8}{row['accepted']:>9}{row['live']:>6}")
    lines.append("")
    lines.append("outcomes: " + ", ".join(f"{k} {v}" for k, v in report["outcomes"].items()))
    lines.append("")
    lines.append(f"{'invariant':<34}{'violations':>10}")
    for name, row in report["invariants"].items():
        lines.append(f"{name:<34}{row['count']:>10}")
    r = report["recovery"]
    lines.append("")
    lines.append(
        f"recovery (fault end -> every cancel made during it applied): p50 {r['p50_s']} s, "
        f"p99 {r['p99_s']} s, max {r['max_s']} s over {r['faults_with_cancels']} faults"
        f" ({r['unrecovered']} unrecovered)"
    )
    cl = r["cancel_latency"]
    lines.append(
        f"cancel accepted -> task terminal: p50 {cl['p50_s']} s, p99 {cl['p99_s']} s, "
        f"max {cl['max_s']} s (n {cl['n']})"
    )
    for kind, row in r["by_kind"].items():
        lines.append(f"  {kind:<20} n {row['n']:>3}  p50 {row['p50_s']}  max {row['max_s']}")
    lines.append("")
    lines.append(
        f"nicotask processes that died outside a fault: {len(report['crashes'])}; "
        f"restarts that failed and were retried: {report['start_failures']}"
    )
    lines.append(
        f"TOTAL VIOLATIONS: {total_violations(report)}"
        + (f"; errors: {len(report['errors'])}" if report["errors"] else "")
    )
    return "\n".join(lines)
