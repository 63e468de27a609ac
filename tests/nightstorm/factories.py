"""Rows the toolkit tests race on: accounts of the test-only app (tests.toolkit_app), so the
toolkit is tested without the game."""

import itertools

from django.contrib.auth import get_user_model

from tests.toolkit_app.models import Account

_seq = itertools.count()


def make_account(**fields) -> Account:
    n = next(_seq)
    user = get_user_model().objects.create_user(username=f"toolkit{n}", password="x")
    return Account.objects.create(user=user, name=f"toolkit{n}", **fields)
