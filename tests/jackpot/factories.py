"""Factories for the jackpot tests: accounts with players."""

import factory
from django.contrib.auth import get_user_model

from game.models import Player


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"jackpot-user-{n}")
    password = factory.django.Password("pw-123456")


class PlayerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Player

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"jackpot-player-{n}")
