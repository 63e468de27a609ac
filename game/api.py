"""The game's REST endpoints: thin views that validate input, call one service and render.

Errors are raised as domain errors (game.errors) and rendered by the platform's exception
handler as `{"code", "detail"}`.
"""

import uuid

from django.db import connection
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from game import players, registration, selectors, travel
from game.auth import PLAYER_AUTHENTICATION, player_of
from game.errors import CombatNotFound
from game.models import Player
from game.world import zone_specs
from nightstorm.api import fields
from nightstorm.api.conditional import etag_for
from nightstorm.api.representation import represent
from nightstorm.api.schema import ETAG, IDEMPOTENT, NO_NUL, errors
from nightstorm.api.throttling import ScopedRateThrottle
from nightstorm.idempotency import idempotent

# --- serializers ----------------------------------------------------------------------------


# At least 8 characters: Django's length validator, whose refusal is 400 `weak_password`.
@extend_schema_field({"type": "string", "minLength": 8, "maxLength": 128, "pattern": NO_NUL})
class PasswordField(fields.CharField):
    pass


class RegisterInput(serializers.Serializer):
    username = fields.RegexField(r"^[\w.@+-]+\Z", min_length=1, max_length=150)
    password = PasswordField(
        max_length=128,
        trim_whitespace=False,
        help_text="At least 8 characters, not all digits, not a common password, not like "
        "the username (400 `weak_password` otherwise).",
    )


# The seeded world's codes; a zone the database lacks is still 400 `unknown_zone`.
@extend_schema_field({"type": "string", "enum": [z.code for z in zone_specs()]})
class ZoneCodeField(fields.CharField):
    pass


class TravelInput(serializers.Serializer):
    zone = ZoneCodeField(max_length=8, help_text="A zone code from `GET /zones/`.")


class JourneyOut(serializers.Serializer):
    origin = serializers.CharField(source="origin.code", allow_null=True, default=None)
    destination = serializers.CharField(source="destination.code")
    started_at = serializers.DateTimeField()
    arrives_at = serializers.DateTimeField()


class PlayerOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    zone = serializers.CharField(source="zone.code", allow_null=True, default=None)
    gold = serializers.IntegerField()
    hp = serializers.IntegerField()
    level = serializers.IntegerField()
    xp = serializers.IntegerField()
    version = serializers.IntegerField()
    travel = JourneyOut(allow_null=True, default=None, source="journey_in_flight")


class RegisterOut(serializers.Serializer):
    token = serializers.CharField()
    player = PlayerOut()


class ZoneOut(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    region = serializers.CharField()
    next_nightstorm_at = serializers.DateTimeField(allow_null=True)


class CombatSummaryOut(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    capacity = serializers.IntegerField()
    participant_count = serializers.IntegerField()


class CombatOut(CombatSummaryOut):
    turn = serializers.IntegerField()
    version = serializers.IntegerField()
    zone = serializers.CharField(source="zone.code")
    outcome = serializers.CharField()
    boss_hp = serializers.IntegerField()
    boss_max_hp = serializers.IntegerField()


class EventOut(serializers.Serializer):
    id = serializers.UUIDField()
    zone = serializers.CharField(source="zone.code")
    slot = serializers.DateTimeField()
    state = serializers.CharField()
    combats = CombatSummaryOut(many=True)


class RegistrationOut(serializers.Serializer):
    combat = serializers.UUIDField(source="combat_id")
    player = serializers.UUIDField(source="player_id")
    created_at = serializers.DateTimeField()


# --- helpers --------------------------------------------------------------------------------


def _render_player(player: Player, journey) -> dict:
    player.journey_in_flight = journey
    return represent(PlayerOut, player)


def _combat_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise CombatNotFound() from None


COMBAT_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)

# --- views ----------------------------------------------------------------------------------


class RegisterView(APIView):
    """Create an account and its player; answers with the API token."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "register"

    @extend_schema(
        request=RegisterInput,
        responses={201: RegisterOut, **errors(409, s409="`username_taken`.")},
    )
    def post(self, request):
        data = RegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        player, token = players.register_player(**data.validated_data)
        body = {"token": token, "player": _render_player(player, None)}
        return Response(body, status=status.HTTP_201_CREATED)


class PlayerMeView(APIView):
    """The caller's player, with the journey in flight; a journey that is due shows as landed
    (a read: the arrivals task or the next journey lands it)."""

    authentication_classes = PLAYER_AUTHENTICATION
    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={200: PlayerOut, **errors(404, s404="`no_player`: this account has no player.")},
        parameters=[ETAG],
    )
    def get(self, request):
        player = player_of(request)
        # The token's query said whether a journey is in flight: most players pay no more.
        journey = selectors.journey_as_of(player) if player.traveling else None
        return Response(_render_player(player, journey), headers={"ETag": etag_for(player.version)})


class TravelView(APIView):
    """Start a journey to another zone (202 with `arrives_at`)."""

    authentication_classes = PLAYER_AUTHENTICATION
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=TravelInput,
        responses={
            202: JourneyOut,
            **errors(
                404,
                422,
                409,
                s404="`no_player`: this account has no player.",
                s409="`already_there`, `already_traveling`, `in_combat`, or "
                "`idempotency_in_progress` (with `Retry-After`).",
            ),
        },
        parameters=IDEMPOTENT,
    )
    @idempotent
    def post(self, request):
        data = TravelInput(data=request.data)
        data.is_valid(raise_exception=True)
        player_id = player_of(request).pk
        journey = travel.start_travel(player_id=player_id, zone_code=data.validated_data["zone"])
        return Response(represent(JourneyOut, journey), status=status.HTTP_202_ACCEPTED)


class ZoneListView(APIView):
    """All 81 zones at once (not paginated), with the next Nightstorm's time when scheduled."""

    authentication_classes = []  # public: a token sent anyway is not looked up
    permission_classes = [AllowAny]

    @extend_schema(responses=ZoneOut(many=True))
    def get(self, request):
        # ZoneOut's shape, rendered by PostgreSQL (plain rows elsewhere): a serializer per zone
        # cost more than the query.
        if connection.vendor == "postgresql":
            return HttpResponse(selectors.zones_json(), content_type="application/json")
        return Response(selectors.zones_with_next_nightstorm())


class NightstormListView(ListAPIView):
    """Nightstorm events, newest first, each with its combats and their seat counts."""

    permission_classes = [IsAuthenticated]
    serializer_class = EventOut

    def get_queryset(self):
        return selectors.nightstorm_event_rows()

    def list(self, request, *args, **kwargs):
        # EventOut's shape: on PostgreSQL one query renders the page with its combats and counts
        # the list; elsewhere (and for ?page=last) 3: count, events, their combats.
        if connection.vendor == "postgresql":
            page = self.paginator.paginate_in_one_query(request, selectors.nightstorm_event_page)
            if page is not None:
                return self.paginator.get_rendered_paginated_response(page)
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(selectors.with_combats(page))


class CombatDetailView(APIView):
    """One combat: status, seats, turn and version (ETag)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={200: CombatOut, **errors(404, s404="`combat_not_found`.")},
        parameters=[COMBAT_ID, ETAG],
    )
    def get(self, request, pk):
        combat = (
            selectors.combats_with_counts().select_related("zone").filter(pk=_combat_id(pk)).first()
        )
        if combat is None:
            raise CombatNotFound()
        return Response(represent(CombatOut, combat), headers={"ETag": etag_for(combat.version)})


class CombatRegistrationView(APIView):
    """Take a seat in an open combat."""

    authentication_classes = PLAYER_AUTHENTICATION
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={
            201: RegistrationOut,
            **errors(
                404,
                422,
                409,
                s404="`combat_not_found`, or `no_player`: this account has no player.",
                s409="`combat_full`, `already_registered`, `registration_closed`, "
                "`in_other_combat`, or `idempotency_in_progress` (with `Retry-After`).",
            ),
        },
        parameters=[COMBAT_ID, *IDEMPOTENT],
    )
    @idempotent
    def post(self, request, pk):
        combat_id = _combat_id(pk)
        seat = registration.register(player_id=player_of(request).pk, combat_id=combat_id)
        return Response(represent(RegistrationOut, seat), status=status.HTTP_201_CREATED)
