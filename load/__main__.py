"""`python -m load` (`make load`): the platform under a mixed workload, as a step ramp.

    python -m load [--seconds 180] [--stages 16,32,64,96,128,160]
                   [--database-url URL] [--redis-url URL] [--out .load] [--keep-going]

1. Migrates and seeds the database (`seed_world`, the jackpot pools, the schedules) and makes
   sure the load players exist (`loadplayer00000` …, each with a token).
2. Starts every process of a deployment on PostgreSQL and Redis: gunicorn with
   `deploy/gunicorn.conf.py` (`--web-workers` x `--web-threads`), `manage.py qcluster`,
   `run_orchestrator` and `run_gateway`, sharing one metrics directory; waits for
   `/health/ready/` and the gateway's port.
3. Opens a Nightstorm in each load zone every `--storm-every` seconds and runs the workload of
   `load/locustfile.py` with locust, headless, once per stage: each stage more users, measured
   from the end of spawning to its end (the `--seconds` budget split evenly). A stage passes
   with no failed request (no 5xx, no socket error, no undocumented answer) and a p99 of all
   requests within `--p99-ms`; the ramp stops after the first stage that does not.
4. Lets the last storms end and their rewards be paid (at most `--settle` seconds), stops every
   process with SIGTERM, and checks the invariants (`load/invariants.py`).

Prints one row per stage, then req/s and p50/p95/p99 per endpoint of each stage, the errors and
the invariants, and names the highest passing stage's rate. Writes everything (locust's HTML
report and CSV per stage, the processes' logs, `results.json`) under `--out`/<time>/.

Exit status: 1 when an invariant breaks or any request of the lowest stage failed (a 5xx
included), 2 when the platform did not start, else 0.
"""

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE_TOKEN = "load-service-token-0123456789abcdef"

# The platform's settings for a run, unless the environment says otherwise (`make load` sets
# DEBUG, SECRET_KEY and the throttles itself). Password hashing: see docs/operations.md, "Load".
DEFAULTS = {
    "DEBUG": "0",
    "SECRET_KEY": "load-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "SECURE_SSL_REDIRECT": "0",
    "STATIC_MANIFEST": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "NIGHTSTORM_ENV_FILE": "",
    "THROTTLE_ANON": "100000000/min",
    "THROTTLE_USER": "100000000/min",
    "THROTTLE_AUTH": "100000000/min",
    "THROTTLE_REGISTER": "100000000/min",
    "PASSWORD_HASHERS": "django.contrib.auth.hashers.MD5PasswordHasher",
    "DB_CONN_MAX_AGE": "60",
    "Q_WORKERS": "2",
    # Storms that open, fill, fight and pay out within a stage: one 10-seat combat per
    # Nightstorm, so the players of a zone crowd the same seats.
    "NIGHTSTORM_COMBATS_PER_EVENT": "1",
    "NIGHTSTORM_REGISTRATION_WINDOW_SECONDS": "20",
    "NIGHTSTORM_COMBAT_TICK_SECONDS": "1",
    "NIGHTSTORM_COMBAT_MAX_TURNS": "8",
}


def parse_args(argv=None):
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m load", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=float(env("LOAD_SECONDS", "180")))
    parser.add_argument("--stages", default=env("LOAD_STAGES", "16,32,64,96,128,160"))
    parser.add_argument("--database-url", default=env("DATABASE_URL", ""))
    parser.add_argument("--redis-url", default=env("REDIS_URL", ""))
    parser.add_argument("--out", default=env("LOAD_OUT", str(ROOT / ".load")))
    parser.add_argument("--players", type=int, default=int(env("LOAD_PLAYERS", "1000")))
    parser.add_argument("--web-workers", type=int, default=int(env("LOAD_WEB_WORKERS", "4")))
    parser.add_argument("--web-threads", type=int, default=int(env("LOAD_WEB_THREADS", "4")))
    parser.add_argument("--storm-every", type=float, default=float(env("LOAD_STORM_EVERY", "15")))
    parser.add_argument("--settle", type=float, default=float(env("LOAD_SETTLE_SECONDS", "45")))
    parser.add_argument("--p99-ms", type=float, default=float(env("LOAD_P99_MS", "500")))
    parser.add_argument(
        "--keep-going", action="store_true", help="run every stage, even after one fails"
    )
    args = parser.parse_args(argv)
    args.stages = [int(s) for s in str(args.stages).split(",") if s.strip()]
    if not args.stages or min(args.stages) < 1:
        parser.error("--stages: a comma-separated list of user counts")
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("a PostgreSQL --database-url (or DATABASE_URL) is required")
    if not args.redis_url.startswith(("redis://", "rediss://")):
        parser.error("a --redis-url (or REDIS_URL) is required")
    return args


def configure(args, run_dir: Path) -> dict[str, str]:
    """Settle this process's settings and return the environment of the platform's processes."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.update(
        {
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "DJANGO_SETTINGS_MODULE": "nightstorm.settings",
            "JACKPOT_SERVICE_TOKEN": SERVICE_TOKEN,
            "CONNECTIONS_SERVICE_TOKEN": SERVICE_TOKEN,
        }
    )
    metrics = run_dir / "metrics"
    metrics.mkdir()
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    run_dir = Path(args.out) / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    (run_dir / "logs").mkdir()
    child_env = configure(args, run_dir)

    import django

    django.setup()
    # This process's own lines (the storms it opens) would drown the progress lines; the
    # platform's processes log as configured, to their files.
    logging.disable(logging.INFO)
    from django.db import connections

    from load import report, world
    from load.invariants import check_all
    from load.platform import Processes
    from load.stages import Stage, run_stage

    started = time.time()
    log(f"load: preparing {args.database_url.rsplit('/', 1)[-1]} ...")
    players = world.prepare(players=args.players, out=sys.stderr)
    connections.close_all()

    procs = Processes(
        child_env, run_dir / "logs", web_workers=args.web_workers, web_threads=args.web_threads
    )
    log(
        f"load: starting gunicorn ({args.web_workers} workers x {args.web_threads} threads), "
        "qcluster, run_orchestrator, run_gateway ..."
    )
    try:
        procs.start()
    except RuntimeError as exc:
        procs.stop()
        log(f"load: the platform did not start: {exc}")
        return 2
    plan = {
        "players": players,
        "zones": list(world.ZONES),
        "password": world.PASSWORD,
        "service_token": SERVICE_TOKEN,
        "gateway": ["127.0.0.1", procs.gateway_port],
    }
    plan_path = run_dir / "plan.json"
    plan_path.write_text(json.dumps(plan))

    stage_seconds = max(8.0, args.seconds / len(args.stages))
    stages: list[Stage] = []
    opener = world.StormOpener(args.storm_every)
    opener.start()
    left: dict[str, int] = {}
    try:
        report.warm_up(procs.web_url, players[0][0])
        for index, users in enumerate(args.stages, start=1):
            log(f"load: stage {index}/{len(args.stages)}: {users} users for {stage_seconds:.0f} s")
            stage = run_stage(
                index=index,
                users=users,
                seconds=stage_seconds,
                host=procs.web_url,
                plan=plan_path,
                out=run_dir,
                p99_ms=args.p99_ms,
                cpu_seconds=procs.cpu_seconds,
            )
            stages.append(stage)
            log(f"load:   {report.stage_line(stage)}")
            dead = [name for name, up in procs.alive().items() if not up]
            if dead:
                log(f"load: {', '.join(dead)} exited during the stage")
                break
            if not stage.passed and not args.keep_going:
                break
    finally:
        opener.stop()
        if stages:
            log(f"load: letting the last storms end and pay out (at most {args.settle:.0f} s) ...")
            left = world.settle(args.settle)
        connections.close_all()
        alive_at_end = procs.alive()
        codes = procs.stop()
    tracebacks = procs.tracebacks()

    checks = check_all(
        contribution_keys=[k for s in stages for k in s.summary.get("contribution_keys", [])],
        win_keys=[k for s in stages for k in s.summary.get("win_keys", [])],
        since=started,
    )
    if opener.error is not None:
        checks.append(("storms opened", False, repr(opener.error)))
    stopped_badly = {
        name: code for name, code in codes.items() if code != 0 or not alive_at_end.get(name)
    }
    checks.append(
        (
            "processes",
            not stopped_badly,
            f"not up to the end or not stopped cleanly by SIGTERM: {stopped_badly}"
            if stopped_badly
            else "every process up to the end and stopped cleanly by SIGTERM (exit 0)",
        )
    )
    result = report.Result(
        args=args,
        run_dir=run_dir,
        stages=stages,
        checks=checks,
        storms=opener.opened,
        settle_left=left,
        alive=alive_at_end,
        exit_codes=codes,
        tracebacks=tracebacks,
        elapsed=time.time() - started,
    )
    print(report.render(result))
    (run_dir / "results.json").write_text(json.dumps(report.as_json(result), indent=2))
    return report.exit_status(result)


if __name__ == "__main__":
    sys.exit(main())
