"""`python -m bench [topic ...]`: run the benchmarks, print one table, write results.json."""

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

from bench.common import print_table, setup_django, vacuum

HERE = Path(__file__).parent


def prepare_database() -> None:
    """Create and migrate the benchmark database (it is separate from any real one)."""
    from django.conf import settings
    from django.core.management import call_command

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        import psycopg

        admin = psycopg.connect(
            host=db["HOST"] or "127.0.0.1",
            port=db["PORT"] or 5432,
            user=db["USER"] or "postgres",
            password=db["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
        )
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]
        ).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{db["NAME"]}"')
        admin.close()
    call_command("migrate", verbosity=0, interactive=False)


def main(argv: list[str]) -> int:
    setup_django()
    prepare_database()
    wanted = set(argv)
    names = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    rows, failures = [], []
    for name in names:
        topic = name.removeprefix("bench_")
        if wanted and topic not in wanted and name not in wanted:
            continue
        started = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            vacuum()
            module = importlib.import_module(f"bench.{name}")
            rows.extend(module.run())
        except Exception as exc:  # one broken benchmark must not hide the others
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"  {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    print()
    print_table(rows)
    results = HERE / "results.json"
    results.write_text(json.dumps([r.as_json() for r in rows], indent=2) + "\n")
    print(f"\nwrote {len(rows)} rows to {results}")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
