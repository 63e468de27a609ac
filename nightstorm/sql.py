"""Hand-compiled SQL: statements written (or compiled) once per shape, run with fresh values.

On a hot path the ORM's per-call query building costs as much as a round trip, and some
statements have no ORM form at all (`FOR UPDATE SKIP LOCKED` inside a LATERAL join, a
data-modifying CTE). The caller builds such a statement once, caches it per shape and database
alias, and runs it here with values the driver adapts (plain ints, strings, UUIDs, aware
datetimes; anything model-specific prepared with the field's `get_db_prep_save`). Keep the
statements beside the code that needs them; this module only runs them.

`CompiledQuery` is the same for a queryset: the ORM builds its SQL once per database, and each
call runs that SQL with new values and returns the objects the queryset itself would.
"""

import contextlib
import threading

from django.db import connections, router, transaction
from django.db.models.query import get_related_populators


def json_datetime(column: str) -> str:
    """PostgreSQL: the `timestamptz` expression `column` as text the way the API's JSON writes
    a datetime (UTC, ISO 8601, `Z`, microseconds only when there are some), for responses the
    database renders itself. Use it inside a statement (its `%%` is a parameter-style escape)."""
    utc = f"({column}) AT TIME ZONE 'UTC'"
    return (
        f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
        f"date_part('microseconds', {column})::int %% 1000000 <> 0 "
        f"THEN to_char({utc}, '.US') ELSE '' END || 'Z'"
    )


def run(alias: str, sql: str, params) -> list[tuple]:
    """Execute `sql` with `params` on database `alias`, in the caller's transaction.

    Returns the rows of the statement (an empty list when it returns none). A database error
    marks the enclosing `atomic()` block for rollback, as the ORM's own queries do, so the
    caller's transaction cannot commit half of an attempt.
    """
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if _has_rows(cursor.cursor) else []
    except Exception as exc:
        _mark_for_rollback(connection, exc)
        raise


def run_count(alias: str, sql: str, params) -> int:
    """`run` for a statement that returns no rows: how many rows it changed."""
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount
    except Exception as exc:
        _mark_for_rollback(connection, exc)
        raise


# These run on every hot path, so they do by hand what a generator-based context manager
# (`transaction.mark_for_rollback_on_error`) and a cursor's `description` (a column object
# per column) would cost more for: a few percent of a request's CPU in profiles.


def _mark_for_rollback(connection, exc: Exception) -> None:
    """What `transaction.mark_for_rollback_on_error` does when the block raises."""
    if connection.in_atomic_block:
        connection.needs_rollback = True
        connection.rollback_exc = exc


def _has_rows(driver_cursor) -> bool:
    """Whether the statement just run returned a result set (even an empty one)."""
    rownumber = getattr(driver_cursor, "rownumber", _NO_ROWNUMBER)  # psycopg
    if rownumber is _NO_ROWNUMBER:
        return driver_cursor.description is not None  # the DB-API way (sqlite3)
    return rownumber is not None


_NO_ROWNUMBER = object()


def run_together(alias: str, statements: list, *, commit: bool = False) -> list[list[tuple]]:
    """Run `statements` (pairs of SQL and parameters) in order in one round trip, in the
    caller's transaction; the rows of each.

    They stay separate statements (PostgreSQL pipelines them), so under READ COMMITTED each
    reads what was committed before it started: a statement that follows one that waited for
    a row lock sees what the lock's holder committed, which a single statement would not.

    `commit=True` sends the transaction's COMMIT in the same round trip, so a row lock taken by
    the last statement is released without waiting for this process to come back. Only in the
    outermost `atomic()` block, and as its last work: the block's own commit then finds
    nothing to commit. Inside a savepoint (a caller's transaction) nothing is committed here.

    On a database without pipelining the statements run one by one (and the block commits).
    An error marks the block for rollback and leaves nothing committed.
    """
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return [run(alias, sql, params) for sql, params in statements]
    commit = commit and len(connection.atomic_blocks) == 1 and not connection.savepoint_ids
    with (
        transaction.mark_for_rollback_on_error(alias),
        connection.wrap_database_errors,
        contextlib.ExitStack() as cursors,
    ):
        connection.ensure_connection()
        sent = []
        with connection.connection.pipeline():
            for sql, params in statements:
                sent.append(cursors.enter_context(connection.cursor()))
                sent[-1].execute(sql, params)
            if commit:
                connection.connection.commit()
        return [cursor.fetchall() if _has_rows(cursor.cursor) else [] for cursor in sent]


class CompiledQuery:
    """A queryset whose SQL the ORM builds once per database, run again with other values.

    `build(**values)` returns the queryset. It is called once per database alias, with a
    placeholder string for each name in `names`; each call of `fetch(**values)` runs the
    compiled SQL with the real values in the placeholders' places and returns the model
    instances, with what `select_related` and `annotate` put on them, exactly as iterating the
    queryset would. A placeholder must reach the SQL parameters unchanged, so compare names
    only to text columns (a key, a code). The database is the router's read database at each
    call (or `using=`), so replica routing works as for the queryset itself.
    """

    def __init__(self, build, *names: str):
        self.build, self.names = build, names
        self._model_cls = None  # the queryset's model, known after the first build
        self._plans: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def fetch(self, using: str | None = None, **values) -> list:
        if set(values) != set(self.names):
            raise TypeError(f"expected values for {sorted(self.names)}, got {sorted(values)}")
        alias = using or router.db_for_read(self._model())
        sql, slots, build_objects = self._plans.get(alias) or self._compile(alias)
        params = [values[name] if name else value for name, value in slots]
        return build_objects(run(alias, sql, params))

    def _model(self):
        model = self._model_cls
        if model is None:
            model = self._model_cls = self.build(**self._placeholders()).model
        return model

    def _placeholders(self) -> dict[str, str]:
        return {name: f"\x1fcompiled-query-value:{name}\x1f" for name in self.names}

    def _compile(self, alias: str) -> tuple:
        with self._lock:
            if alias in self._plans:
                return self._plans[alias]
            placeholders = self._placeholders()
            names = {text: name for name, text in placeholders.items()}
            queryset = self.build(**placeholders).using(alias)
            compiler = queryset.query.get_compiler(using=alias)
            sql, params = compiler.as_sql()
            slots = [(names.get(p) if isinstance(p, str) else None, p) for p in params]
            if sorted(name for name, _ in slots if name) != sorted(self.names):
                raise ValueError("a placeholder did not reach the SQL parameters unchanged")
            plan = (sql, slots, self._builder(compiler, alias))
            self._plans[alias] = plan
            return plan

    @staticmethod
    def _builder(compiler, alias: str):
        # What ModelIterable does with a compiled query's rows (Django 5.2).
        select, klass_info = compiler.select, compiler.klass_info
        annotations = list(compiler.annotation_col_map.items())
        model = klass_info["model"]
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        init_list = [column[0].target.attname for column in select[start:end]]
        populators = get_related_populators(klass_info, select, alias)
        columns = [column[0] for column in select[: compiler.col_count]]
        converters = list(compiler.get_converters(columns).items())

        def build_objects(rows: list[tuple]) -> list:
            connection = connections[alias]  # this thread's: the compiler's was another's
            objects = []
            for row in rows:
                if converters:
                    row = list(row)
                    for position, (functions, expression) in converters:
                        for function in functions:
                            row[position] = function(row[position], expression, connection)
                obj = model.from_db(alias, init_list, row[start:end])
                for populator in populators:
                    populator.populate(row, obj)
                for name, position in annotations:
                    setattr(obj, name, row[position])
                objects.append(obj)
            return objects

        return build_objects
