"""Rows the toolkit tests race on: players are the simplest versioned rows in the project."""

import itertools

from django.contrib.auth import get_user_model

from game.models import Player

_seq = itertools.count()


def make_player(**fields) -> Player:
    n = next(_seq)
    user = get_user_model().objects.create_user(username=f"toolkit{n}", password="x")
    return Player.objects.create(user=user, name=f"toolkit{n}", **fields)
