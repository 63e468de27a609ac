"""Send plain reads of read-only requests to a PostgreSQL streaming replica, all else to the
primary.

`DATABASE_REPLICA_URL` adds the `replica` alias. A read goes there only when every one of these
holds; anything else reads the primary (`default`):

* the request is a GET/HEAD/OPTIONS (`ReplicaReadsMiddleware` opens the window; management
  commands, the task cluster, the orchestrator and every write request never read the replica);
* the client has not written in the last `NIGHTSTORM_READ_YOUR_WRITES_SECONDS` (read-your-writes,
  tracked in the shared cache so that every web process and host honours it);
* nothing in this request has written yet (a GET that writes then reads sees its own write);
* no transaction is open on the primary: `select_for_update` and every read a service makes
  inside its transaction (a row it is about to lock or change) read the primary, whatever the
  caller asked the router for.

A replica lags. The rules above keep its rows out of every decision that writes: optimistic
updates compare versions on the primary, and a stale version a client read from the replica
just fails its `If-Match` (412) like any other stale copy.
"""

import contextlib
import contextvars

from django.db import DEFAULT_DB_ALIAS, connections

REPLICA = "replica"

# True only while a read-only request that may use the replica is being served.
_replica_reads = contextvars.ContextVar("nightstorm_replica_reads", default=False)


def replica_configured() -> bool:
    return REPLICA in connections.settings


@contextlib.contextmanager
def replica_reads(allowed: bool = True):
    """Let plain reads in the block go to the replica (if one is configured)."""
    token = _replica_reads.set(allowed and replica_configured())
    try:
        yield
    finally:
        _replica_reads.reset(token)


class PrimaryReplicaRouter:
    """Writes, migrations and every read not explicitly allowed go to `default`."""

    def db_for_read(self, model, **hints):
        if not _replica_reads.get():
            return DEFAULT_DB_ALIAS
        if connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return DEFAULT_DB_ALIAS
        return REPLICA

    def db_for_write(self, model, **hints):
        # From the first write on, this request reads its own writes from the primary.
        _replica_reads.set(False)
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # one database, two copies of it

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS
