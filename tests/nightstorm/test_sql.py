"""`nightstorm.sql`: `run` answers rows exactly when the statement returned a result set, and
`CompiledQuery` builds a queryset's SQL once, runs it again with other values and returns what
the queryset itself returns."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Exists, OuterRef, Value
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from nightstorm.sql import CompiledQuery, run, run_count
from tests.helpers import race

pytestmark = pytest.mark.django_db(transaction=True)


def test_run_answers_rows_only_for_a_result_set_even_an_empty_one():
    user = get_user_model().objects.create(username="run-rows")
    table, alias = get_user_model()._meta.db_table, connection.alias
    assert run(alias, f"SELECT id FROM {table} WHERE id = %s", [user.pk]) == [(user.pk,)]
    # A result set without rows, and a statement without a result set, both answer [].
    returning = f"UPDATE {table} SET first_name = %s WHERE id = %s RETURNING id"
    assert run(alias, returning, ["x", -1]) == []
    assert run(alias, returning, ["y", user.pk]) == [(user.pk,)]
    update = f"UPDATE {table} SET last_name = %s WHERE id = %s"
    assert run(alias, update, ["z", user.pk]) == []
    assert run_count(alias, update, ["w", user.pk]) == 1


def _tokens(n: int) -> list[Token]:
    User = get_user_model()
    users = [User.objects.create(username=f"compiled-{i}", is_staff=i % 2 == 0) for i in range(n)]
    return [Token.objects.create(user=user) for user in users]


def _queryset(key):
    others = get_user_model().objects.filter(pk=OuterRef("user_id"), is_staff=True)
    return (
        Token.objects.select_related("user")
        .annotate(staff=Exists(others), tag=Value("x"))
        .filter(key=key)
    )


def test_it_returns_what_the_queryset_returns_related_objects_and_annotations_included():
    tokens = _tokens(3)
    calls = []
    query = CompiledQuery(lambda key: calls.append(key) or _queryset(key), "key")
    for token in tokens * 2:
        (expected,) = _queryset(token.key)
        with CaptureQueriesContext(connection) as queries:
            (found,) = query.fetch(key=token.key)
            # The user came with the token: reading it costs no query.
            assert (found.user.username, found.user.is_staff) == (
                expected.user.username,
                expected.user.is_staff,
            )
        assert len(queries) == 1
        assert (found.pk, found.user_id, found.created) == (
            expected.pk,
            expected.user_id,
            expected.created,
        )
        assert (found.staff, found.tag) == (expected.staff, "x")
        assert found._state.db == "default" and not found._state.adding
    assert query.fetch(key="0" * 40) == []
    assert len(calls) <= 2  # built for its model and compiled once, not per call


def test_every_thread_runs_it_on_its_own_connection():
    # Compiled on the first thread to call it; every other thread's call must still run on
    # that thread's own connection (Django's connections are per thread).
    tokens = _tokens(8)
    query = CompiledQuery(lambda key: _queryset(key), "key")

    def fetch(token):
        with CaptureQueriesContext(connection) as mine:
            (found,) = query.fetch(key=token.key)
        return found.user.username, len(mine)

    found = race(fetch, [(t,) for t in tokens])
    assert [name for name, _ in found] == [t.user.username for t in tokens]
    assert all(n == 1 for _, n in found)  # each ran its query on its own thread's connection


def test_a_value_the_orm_rewrites_is_refused_when_compiled():
    query = CompiledQuery(
        lambda name: get_user_model().objects.filter(username__contains=name), "name"
    )
    with pytest.raises(ValueError, match="placeholder"):
        query.fetch(name="compiled")


def test_values_are_named_exactly():
    query = CompiledQuery(lambda key: _queryset(key), "key")
    with pytest.raises(TypeError):
        query.fetch(other="x")
