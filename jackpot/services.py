"""Every change of a jackpot pool, in one import: contribute, pay a win, adjust, reconfigure.

The operations live in modules named for what they do; this module gathers their public
functions for callers (the API, the admin, scripts, tests):

- `jackpot.contributions`: a bet's share into the pools' stripes (no hot row);
- `jackpot.wins`: paying a pool to a winner;
- `jackpot.pools`: configuration, adjustments, the default pools;
- `jackpot.stripes`: locking pools and stripes, writing stripes back;
- `jackpot.statements`: the contribution's hand-written PostgreSQL statements;
- `jackpot.errors`, `jackpot.inputs`: domain errors and strict input checks.

Each operation owns its transaction with a plain `transaction.atomic()` (not durable): the
API's idempotency decorator runs the view as the outermost (durable) transaction, which also
stores the response, so here a block is then a savepoint. Every change of money writes its
ledger rows in the same transaction, which keeps the invariant of `jackpot.models` at every
commit.

Once only: two layers, on purpose.
- HTTP (`nightstorm.idempotency`, `@idempotent(required=True)` on contributions and wins): an
  Idempotency-Key is required; the decorator stores the response with the work, replays it,
  refuses the key with another body (422) and tells a concurrent duplicate to retry (409).
- Here, `operation_id` (unique on `Contribution`, `Win`, and per stripe and kind on the
  ledger): a second call with an operation id returns the first result (`replayed`) and never
  moves money again, whoever calls (the admin, scripts, jobs, a late retry after the
  idempotency record expired). A locking read's probe sees the snapshot from before its lock
  wait, so a duplicate that committed during the wait is caught by the unique index; the
  attempt then rolls back and returns the stored result.

Reads of rows that are then locked or written conditionally go to the primary
(`router.db_for_write`), never to a read replica.
"""

from jackpot.contributions import ContributionResult, contribute
from jackpot.errors import (
    JackpotContended,
    OperationReused,
    PlayerNotFound,
    PoolsMissing,
    UnknownGroup,
)
from jackpot.inputs import validate_bet
from jackpot.pools import (
    CONFIG_FIELDS,
    DEFAULT_POOLS,
    adjust_pool,
    ensure_default_pools,
    get_pool,
    update_config,
    validate_config,
)
from jackpot.wins import WinResult, process_win

__all__ = [
    "CONFIG_FIELDS",
    "DEFAULT_POOLS",
    "ContributionResult",
    "JackpotContended",
    "OperationReused",
    "PlayerNotFound",
    "PoolsMissing",
    "UnknownGroup",
    "WinResult",
    "adjust_pool",
    "contribute",
    "ensure_default_pools",
    "get_pool",
    "process_win",
    "update_config",
    "validate_bet",
    "validate_config",
]
