"""The run's figures as printed, as `results.json`, and its exit status."""

import contextlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from load.stages import Stage

CPU_ORDER = ["web", "postgres", "qcluster", "orchestrator", "gateway", "locust", "others"]


def warm_up(url: str, token: str, rounds: int = 10) -> None:
    """A few requests per path, so the first stage does not pay the workers' first imports."""
    paths = ("/api/v1/zones/", "/api/v1/jackpots/", "/api/v1/players/me/", "/api/v1/nightstorms/")
    for _ in range(rounds):
        for path in paths:
            headers = {"Authorization": f"Token {token}"}
            request = urllib.request.Request(url + path, headers=headers)
            with contextlib.suppress(OSError):
                urllib.request.urlopen(request, timeout=10).read()


def _ms(value) -> str:
    return f"{value:.0f}"


def stage_line(stage: Stage) -> str:
    t = stage.total
    if not stage.measured:
        return f"no measurement (locust exit {stage.exit_code}):\n{stage.log}"
    return (
        f"{t['rps']:.1f} req/s, p50 {_ms(t['p50'])} ms, p95 {_ms(t['p95'])} ms, p99 "
        f"{_ms(t['p99'])} ms, 5xx {stage.server_errors}, failures {stage.failures}: "
        f"{'pass' if stage.passed else 'FAIL'}"
    )


@dataclass
class Result:
    args: object
    run_dir: Path
    stages: list[Stage]
    checks: list[tuple[str, bool, str]]
    storms: int
    settle_left: dict
    alive: dict
    exit_codes: dict
    tracebacks: dict
    elapsed: float

    @property
    def best(self) -> Stage | None:
        passing = [s for s in self.stages if s.passed]
        return max(passing, key=lambda s: s.total["rps"]) if passing else None


def _label(entry: dict) -> str:
    """`GET /players/me/`, `TCP gateway login`: the method once."""
    name, method = entry["name"], entry["method"]
    return name if name.startswith(f"{method} ") else f"{method} {name}"


def _endpoint_table(stage: Stage) -> list[str]:
    rows = sorted(stage.summary.get("endpoints", []), key=lambda e: (e["method"], e["name"]))
    width = max([len(f"{e['method']} {e['name']}") for e in rows] + [8])
    lines = [
        f"  {'endpoint':<{width}}  {'req/s':>7} {'p50':>5} {'p95':>5} {'p99':>5} {'max':>6} "
        f"{'fail':>5}  statuses / outcomes"
    ]
    statuses = stage.summary.get("statuses", {})
    outcomes = stage.summary.get("outcomes", {})
    for e in rows:
        label = _label(e)
        seen = outcomes.get(e["name"]) or statuses.get(e["name"]) or {}
        shown = ", ".join(f"{k} {v}" for k, v in sorted(seen.items(), key=lambda kv: -kv[1]))
        lines.append(
            f"  {label:<{width}}  {e['rps']:>7.1f} {_ms(e['p50']):>5} {_ms(e['p95']):>5} "
            f"{_ms(e['p99']):>5} {_ms(e['max']):>6} {e['failures']:>5}  {shown}"
        )
    t = stage.total
    lines.append(
        f"  {'all':<{width}}  {t['rps']:>7.1f} {_ms(t['p50']):>5} {_ms(t['p95']):>5} "
        f"{_ms(t['p99']):>5} {_ms(t['max']):>6} {t['failures']:>5}"
    )
    for err in stage.summary.get("errors", [])[:10]:
        lines.append(f"  error x{err['count']}: {_label(err)}: {err['error'][:160]}")
    return lines


def render(result: Result) -> str:
    args = result.args
    seconds = result.stages[0].seconds if result.stages else 0
    lines = [
        "",
        f"make load: {os.cpu_count()} cores; gunicorn -c deploy/gunicorn.conf.py "
        f"({args.web_workers} workers x {args.web_threads} threads), qcluster, run_orchestrator, "
        f"run_gateway on PostgreSQL {args.database_url.rsplit('/', 1)[-1]} and Redis "
        f"{args.redis_url.rsplit('/', 1)[-1] or '0'}",
        f"step ramp: stages of {seconds:.0f} s (measured from the end of spawning); a stage "
        f"passes with no failed request and p99 <= {args.p99_ms:.0f} ms; times in ms; load: "
        "the machine's 1-minute load average at the stage's end",
        "",
        f"{'stage':>5} {'users':>6} {'req/s':>8} {'p50':>5} {'p95':>5} {'p99':>5} {'5xx':>5} "
        f"{'errors':>7}  {'load':>5}  result",
    ]
    for s in result.stages:
        t = s.total
        if not s.measured:
            lines.append(f"{s.index:>5} {s.users:>6}  no measurement (locust exit {s.exit_code})")
            continue
        lines.append(
            f"{s.index:>5} {s.users:>6} {t['rps']:>8.1f} {_ms(t['p50']):>5} {_ms(t['p95']):>5} "
            f"{_ms(t['p99']):>5} {s.server_errors:>5} {s.failures:>7}  {s.loadavg:>5.1f}  "
            f"{'pass' if s.passed else 'FAIL'}"
            + ("  (locust above 90 % CPU)" if s.summary.get("locust_cpu_warning") else "")
        )
    not_run = result.args.stages[len(result.stages) :]
    if not_run:
        lines.append(f"  (not run after the failing stage: {', '.join(map(str, not_run))} users)")
    best = result.best
    lines.append("")
    if best:
        lines.append(
            f"highest passing stage: {best.index} ({best.users} users): "
            f"{best.total['rps']:.1f} req/s, p99 {_ms(best.total['p99'])} ms, 0 5xx"
        )
    else:
        lines.append("highest passing stage: none")
    for s in result.stages:
        if not s.measured:
            continue
        kinds = sorted(s.cpu, key=lambda k: (CPU_ORDER.index(k) if k in CPU_ORDER else 99, k))
        cpu = ", ".join(f"{name} {s.cpu[name]:.2f}" for name in kinds)
        lines += [
            "",
            f"stage {s.index}, {s.users} users, measured {s.summary['seconds']:.0f} s "
            f"(times in ms); cores busy: {cpu}:",
            *_endpoint_table(s),
        ]
    lines += ["", "invariants:"]
    for name, ok, detail in result.checks:
        lines.append(f"  {'ok  ' if ok else 'FAIL'}  {name}: {detail}")
    left = result.settle_left
    lines += [
        "",
        f"storms opened: {result.storms}; still in flight after settling: "
        f"{left.get('combats', 0)} combats, {left.get('rewards', 0)} rewards unpaid",
        "tracebacks in the processes' logs: "
        + ", ".join(f"{name} {n}" for name, n in result.tracebacks.items()),
        f"reports: {result.run_dir}/stage-*.html (locust), logs in {result.run_dir}/logs, "
        f"figures in {result.run_dir}/results.json; {result.elapsed:.0f} s in all",
    ]
    return "\n".join(lines)


def as_json(result: Result) -> dict:
    best = result.best
    return {
        "stages": [
            {
                "index": s.index,
                "users": s.users,
                "passed": s.passed,
                "server_errors": s.server_errors,
                "loadavg": s.loadavg,
                "cpu_cores": s.cpu,
                "html": str(s.html),
                **{k: v for k, v in s.summary.items() if not k.endswith("_keys")},
            }
            for s in result.stages
        ],
        "highest_passing": (
            {"stage": best.index, "users": best.users, "rps": best.total["rps"]} if best else None
        ),
        "invariants": [{"name": n, "ok": ok, "detail": d} for n, ok, d in result.checks],
        "settle_left": result.settle_left,
        "exit_codes": result.exit_codes,
        "tracebacks": result.tracebacks,
    }


def exit_status(result: Result) -> int:
    if not all(ok for _, ok, _ in result.checks):
        return 1
    if not result.stages or not result.stages[0].measured:
        return 1
    lowest = result.stages[0]
    if lowest.server_errors or lowest.failures:
        return 1
    return 0
