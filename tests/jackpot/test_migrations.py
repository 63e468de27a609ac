"""Migration 0004 carries each pool's balance and ledger chain over into its stripes."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from jackpot.ledger import audit_pools
from jackpot.models import STRIPES_PER_POOL, JackpotPool, PoolStripe

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = ("jackpot", "0003_pool_config_version")


def _migrate(target=None):
    """Migrate the jackpot app to `target` (default: its latest migration)."""
    executor = MigrationExecutor(connection)
    target = target or executor.loader.graph.leaf_nodes("jackpot")[0]
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


def test_balances_and_chains_move_into_stripe_zero(pools):
    apps = _migrate(BEFORE)
    try:
        Pool = apps.get_model("jackpot", "JackpotPool")
        Ledger = apps.get_model("jackpot", "LedgerEntry")
        # The hot-row design's history: two bets on minor, each one ledger row and a version.
        minor = Pool.objects.get(group="minor")
        for n, part in enumerate((250, 125), start=1):
            minor.amount += part
            minor.version += 1
            minor.save()
            Ledger.objects.create(
                pool=minor,
                kind="contribution",
                amount=part,
                balance_after=minor.amount,
                pool_version=minor.version,
                operation_id=f"old-{n}",
            )
        held = dict(Pool.objects.values_list("group", "amount"))
        versions = dict(Pool.objects.values_list("group", "version"))
    finally:
        _migrate()
    assert dict(JackpotPool.objects.values_list("group", "amount")) == held
    for group, amount in held.items():
        stripes = list(PoolStripe.objects.filter(pool__group=group).order_by("slot"))
        assert len(stripes) == STRIPES_PER_POOL
        assert (stripes[0].amount, stripes[0].version) == (amount, versions[group])
        assert sum(s.amount for s in stripes[1:]) == 0
        cap = JackpotPool.objects.get(group=group).max_amount
        if cap is not None:
            assert sum(s.ceiling for s in stripes) == cap
    assert all(a.ok for a in audit_pools()), audit_pools()
