"""`python -m load` (`make load`): every process of the platform on PostgreSQL and Redis under a
mixed workload (locust, headless) as a step ramp, then the invariants. See `__main__.py` and
docs/operations.md, "Load"."""
