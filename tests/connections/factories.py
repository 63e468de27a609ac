"""Users with players, fast: one MD5 hash shared by every account, bulk inserts."""

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password

from game.models import Player

PASSWORD = "storm-pass-1"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.LazyFunction(lambda: make_password(PASSWORD))


class PlayerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Player

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Hero{n}")


def make_players(count: int, *, prefix: str = "hero", password: str = PASSWORD) -> list[Player]:
    """`count` users (`<prefix><i>`, same password) each with a player named `<Prefix><i>`."""
    hashed = make_password(password)
    User = get_user_model()
    User.objects.bulk_create([User(username=f"{prefix}{i}", password=hashed) for i in range(count)])
    users = User.objects.filter(username__startswith=prefix).order_by("id")
    return Player.objects.bulk_create(
        [Player(user=user, name=user.username.capitalize()) for user in users]
    )
