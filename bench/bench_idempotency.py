"""What an Idempotency-Key costs: the same DRF request with a key and without one.

The view credits one gold to a player (one conditional UPDATE), the smallest state change a
keyed request guards. With a key the request also claims the key (one INSERT, autocommitted),
runs the work in a durable transaction and stores the response in it (one UPDATE); a replay
reads the stored response instead of doing the work. All three run in the same process
through the same view, so the ratio is the decorator's overhead and nothing else.
"""

import itertools

from django.contrib.auth import get_user_model
from django.db.models import F
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from bench.common import Row, listed, rate
from nightstorm.idempotency import idempotent

GOAL = 0.5
ROUNDS = 3  # each side's best of its rounds: one 2-second run moves with the machine


class CreditOne(APIView):
    @idempotent(required=False)
    def post(self, request):
        from game.models import Player

        Player.objects.filter(user=request.user).update(
            gold=F("gold") + 1, version=F("version") + 1
        )
        return Response({"credited": 1}, status=201)


def run() -> list[Row]:
    from game.models import Player
    from nightstorm.models import IdempotencyRecord

    user, _ = get_user_model().objects.get_or_create(username="bench-idempotency")
    Player.all_objects.filter(user=user).hard_delete()
    Player.objects.create(user=user, name="bench-idempotency")
    IdempotencyRecord.objects.filter(scope=f"user:{user.pk}").delete()
    factory, view, keys = APIRequestFactory(), CreditOne.as_view(), itertools.count()

    def send(key=None):
        headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
        request = factory.post("/bench/", {"n": 1}, format="json", **headers)
        force_authenticate(request, user=user)
        response = view(request)
        assert response.status_code == 201, response.status_code

    # Best of ROUNDS for each, interleaved, so a burst of other work on the machine (the
    # benchmark before this one winding down) handicaps neither side.
    send("bench-replayed")
    plains, keyeds, replays = [], [], []
    for _ in range(ROUNDS):
        plains.append(rate(send))
        keyeds.append(rate(lambda: send(f"bench-{next(keys)}")))
        replays.append(rate(lambda: send("bench-replayed")))
    plain, keyed, replayed = max(plains), max(keyeds), max(replays)
    IdempotencyRecord.objects.filter(scope=f"user:{user.pk}").delete()
    Player.all_objects.filter(user=user).hard_delete()
    user.delete()
    return [
        Row(
            "keyed request (claim + durable work + stored outcome)",
            "req/s",
            keyed,
            plain,
            GOAL,
            note="baseline: the same DRF request without Idempotency-Key; best of "
            f"{ROUNDS} interleaved rounds each: keyed {listed(keyeds)}, plain {listed(plains)}",
        ),
        Row(
            "keyed request replayed",
            "req/s",
            replayed,
            plain,
            GOAL,
            note=f"a repeat reads the stored outcome; baseline as above; rounds {listed(replays)}",
        ),
    ]
