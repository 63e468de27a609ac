"""Hand-compiled SQL: statements written (or compiled) once per shape, run with fresh values.

On a hot path the ORM's per-call query building costs as much as a round trip, and some
statements have no ORM form at all (`FOR UPDATE SKIP LOCKED` inside a LATERAL join, a
data-modifying CTE). The caller builds such a statement once, caches it per shape and database
alias, and runs it here with values the driver adapts (plain ints, strings, UUIDs, aware
datetimes; anything model-specific prepared with the field's `get_db_prep_save`). Keep the
statements beside the code that needs them; this module only runs them.
"""

from django.db import connections, transaction


def run(alias: str, sql: str, params) -> list[tuple]:
    """Execute `sql` with `params` on database `alias`, in the caller's transaction.

    Returns the rows of the statement (an empty list when it returns none). A database error
    marks the enclosing `atomic()` block for rollback, as the ORM's own queries do, so the
    caller's transaction cannot commit half of an attempt.
    """
    with transaction.mark_for_rollback_on_error(alias), connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []
