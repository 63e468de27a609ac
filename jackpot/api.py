"""Jackpot REST endpoints: thin views over `jackpot.services`.

Money moves only with a key: contributions and wins are `@idempotent(required=True)` (400
`idempotency_key_required` without one), and the service's operation id is derived from the
key and the caller, so both layers of once-only (see `jackpot.services`) name the same
operation. A pool's ETag and If-Match name its configuration version (`config_version`).
"""

import hashlib
import uuid

from django.conf import settings
from django.db.models import Case, IntegerField, Value, When
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from game.auth import PLAYER_AUTHENTICATION, player_of
from game.errors import NoPlayer
from jackpot import services
from jackpot.inputs import MAX_STORABLE
from jackpot.models import BP_SCALE, GROUPS, JackpotPool, LedgerEntry, LedgerKind
from nightstorm.api.conditional import etag_for, expected_version
from nightstorm.api.pagination import IdCursorPagination
from nightstorm.api.permissions import IsStaff, service_token_or_staff
from nightstorm.api.schema import ETAG, IDEMPOTENT_REQUIRED, IF_MATCH, errors
from nightstorm.errors import DomainError, InvalidInput
from nightstorm.idempotency import HEADER as IDEMPOTENCY_HEADER
from nightstorm.idempotency import idempotent
from nightstorm.sql import CompiledQuery


class PlayerRequired(DomainError):
    code = "player_required"
    status = 403
    detail = "Only an account with a player can contribute."


class PoolSerializer(serializers.ModelSerializer):
    # The sum of the pool's stripes, annotated by the pools' default manager.
    amount = serializers.IntegerField(read_only=True)

    class Meta:
        model = JackpotPool
        fields = [
            "group",
            "amount",
            "seed_amount",
            "contribution_rate_bp",
            "max_amount",
            "version",
            "config_version",
            "last_modified_at",
        ]


class ContributionOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    bet = serializers.IntegerField()
    amounts = serializers.DictField(child=serializers.IntegerField())


class LedgerEntrySerializer(serializers.ModelSerializer):
    group = serializers.CharField(source="pool.group")

    class Meta:
        model = LedgerEntry
        fields = [
            "id",
            "group",
            "kind",
            "slot",
            "amount",
            "balance_after",
            "pool_version",
            "operation_id",
            "player",
            "note",
            "created_at",
        ]


GROUP = OpenApiParameter("group", str, OpenApiParameter.PATH, enum=list(GROUPS))
_MINOR_UNITS = {"type": "integer", "minimum": 0, "maximum": MAX_STORABLE}
POOL_CONFIG_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "seed_amount": _MINOR_UNITS,
        "contribution_rate_bp": {"type": "integer", "minimum": 0, "maximum": BP_SCALE},
        "max_amount": {**_MINOR_UNITS, "nullable": True},
    },
    "description": "Any of the three; `max_amount` ≥ `seed_amount`, and the rates of all "
    "pools add up to at most 10000 bp (400 `max_below_seed`, `rates_exceed_bet`).",
}


def _whole_number(value):
    """A JSON number with an integral value as an int (`538.0` is the number 538 in JSON and in
    JSON Schema); anything else unchanged, for the service to refuse. Floats past 2**53 are not
    exact, so they stay floats (and are refused)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def _config_changes(request) -> dict:
    """The PATCH body after the checks that need no stored state (a field, its type, its range:
    the same codes as `services.validate_config`), so a malformed edit is a 400 whatever its
    If-Match; the service checks the rest (cap over seed, rates of all pools) under its lock."""
    changes = {name: _whole_number(value) for name, value in _body(request).items()}
    for name, value in changes.items():
        if name not in services.CONFIG_FIELDS:
            raise InvalidInput(
                f"Only {', '.join(services.CONFIG_FIELDS)} can be changed.", code="unknown_field"
            )
        if name == "max_amount" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(
                f"{name} must be an integer number of minor units.", code=f"{name}_not_integer"
            )
        if abs(value) > MAX_STORABLE:
            raise InvalidInput(f"{name} is out of range.", code=f"{name}_out_of_range")
        if name == "contribution_rate_bp" and not 0 <= value <= BP_SCALE:
            raise InvalidInput("contribution_rate_bp must be 0-10000.", code="rate_out_of_range")
        if name == "seed_amount" and value < 0:
            raise InvalidInput("seed_amount cannot be negative.", code="seed_negative")
        if name == "max_amount" and value < 0:
            raise InvalidInput("max_amount cannot be below seed_amount.", code="max_below_seed")
    return changes


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise InvalidInput("The body must be a JSON object.", code="invalid_body")
    return request.data


def _operation_id(prefix: str, request) -> str:
    """The service's operation id, derived from the Idempotency-Key and the caller.

    Only called from views behind `@idempotent(required=True)`, so the key is there. The same
    key from the same caller always names the same operation, so a retry reaches the stored
    contribution or win even after the idempotency record has expired (see the module
    docstring of `jackpot.services` for who guarantees what).
    """
    key = request.headers[IDEMPOTENCY_HEADER]
    caller = request.user.pk if request.user.is_authenticated else "service"
    return f"{prefix}:" + hashlib.sha256(f"{caller}\0{key}".encode()).hexdigest()[:48]


def _pools():
    order = Case(
        *(When(group=g, then=Value(i)) for i, g in enumerate(GROUPS)), output_field=IntegerField()
    )
    return JackpotPool.objects.annotate(position=order).order_by("position")


class PoolListView(ListAPIView):
    """The pools with their current amounts (anyone)."""

    authentication_classes = []  # public: a token sent anyway is not looked up
    permission_classes = [AllowAny]
    serializer_class = PoolSerializer

    def get_queryset(self):
        return _pools()

    def list(self, request, *args, **kwargs):
        # A handful of pools: one query, compiled once, in the paginated shape of every list
        # (no COUNT); plain rows in PoolSerializer's shape (a serializer cost more than the query).
        self.paginator.check_single_page(request)
        fields = PoolSerializer.Meta.fields
        pools = [{name: getattr(pool, name) for name in fields} for pool in _POOL_LIST.fetch()]
        body = {"count": len(pools), "next": None, "previous": None, "results": pools}
        return Response(body)


_POOL_LIST = CompiledQuery(
    lambda: _pools().only(*(f for f in PoolSerializer.Meta.fields if f != "amount"))
)


class PoolDetailView(APIView):
    """One pool (anyone, with its ETag); PATCH its configuration (staff, If-Match).

    The ETag is the pool's configuration version (`config_version`), not its balance
    `version`: If-Match on a PATCH guards the configuration the game master saw, which bets
    and wins do not change. So the ETag does not change when the amount does; GET answers
    with `Cache-Control: no-cache` and never with 304, so no cache serves a stale amount.
    """

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsStaff()]

    @extend_schema(
        parameters=[GROUP, ETAG],
        responses={200: PoolSerializer, **errors(404, s404="`unknown_group`.")},
    )
    def get(self, request, group):
        pool = services.get_pool(group)
        return Response(PoolSerializer(pool).data, headers=_pool_headers(pool))

    @extend_schema(
        parameters=[GROUP, IF_MATCH, ETAG],
        request={"application/json": POOL_CONFIG_PATCH},
        responses={200: PoolSerializer, **errors(404, 412, 428, s404="`unknown_group`.")},
    )
    def patch(self, request, group):
        services.get_pool(group)
        changes = _config_changes(request)
        version = expected_version(request)
        pool = services.update_config(
            group=group,
            changes=changes,
            expected_version=version,
            actor=f"config:{request.user.get_username()}",
        )
        return Response(PoolSerializer(pool).data, headers=_pool_headers(pool))


def _pool_headers(pool: JackpotPool) -> dict[str, str]:
    return {"ETag": etag_for(pool.config_version), "Cache-Control": "no-cache"}


class ContributionView(APIView):
    """A player's bet feeds the pools; the Idempotency-Key makes it apply once."""

    authentication_classes = PLAYER_AUTHENTICATION  # the player comes with the token
    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=IDEMPOTENT_REQUIRED,
        request=inline_serializer(
            "ContributionIn",
            {
                "bet": serializers.IntegerField(
                    min_value=1,
                    max_value=settings.JACKPOT_MAX_BET,
                    help_text="Minor units, at most `JACKPOT_MAX_BET`.",
                )
            },
        ),
        responses={
            201: ContributionOutSerializer,
            **errors(
                403,
                409,
                422,
                s403="`player_required`: only an account with a player bets.",
                s409="`idempotency_in_progress` (with `Retry-After`), `operation_id_reused`.",
            ),
        },
    )
    @idempotent(required=True)
    def post(self, request):
        bet = services.validate_bet(_whole_number(_body(request).get("bet")))
        try:
            player_id = player_of(request).pk
        except NoPlayer:
            raise PlayerRequired() from None
        result = services.contribute(
            player=player_id, bet=bet, operation_id=_operation_id("contribution", request)
        )
        contribution = result.contribution
        # ContributionOutSerializer's shape, built directly: every bet pays for this line, and
        # the serializer only copied these ints.
        body = {"id": contribution.pk, "bet": contribution.bet, "amounts": contribution.amounts}
        return Response(body, status=status.HTTP_201_CREATED)


class WinView(APIView):
    """The game server (or staff) awards a pool to a player: it pays what the pool holds.

    Money moves, so the Idempotency-Key is required (400 `idempotency_key_required` without
    one, nothing paid): a retry after a lost response replays the first payout instead of
    paying the pool again.
    """

    permission_classes = [service_token_or_staff("JACKPOT_SERVICE_TOKEN")]

    @extend_schema(
        parameters=[GROUP, *IDEMPOTENT_REQUIRED],
        request=inline_serializer("WinIn", {"player": serializers.UUIDField()}),
        responses={
            201: inline_serializer(
                "WinOut",
                {
                    "amount": serializers.IntegerField(),
                    "group": serializers.CharField(),
                    "player": serializers.UUIDField(),
                },
            ),
            **errors(
                404,
                409,
                422,
                s404="`unknown_group`, `player_not_found`.",
                s409="`idempotency_in_progress` (with `Retry-After`), `operation_id_reused`.",
            ),
        },
    )
    @idempotent(required=True)
    def post(self, request, group):
        services.get_pool(group)
        raw = _body(request).get("player")
        try:
            player_id = uuid.UUID(str(raw)) if isinstance(raw, str) else None
        except ValueError:
            player_id = None
        if player_id is None:
            raise InvalidInput("player must be a player id.", code="invalid_player")
        result = services.process_win(
            group=group, player=player_id, operation_id=_operation_id("win", request)
        )
        win = result.win
        return Response(
            {"amount": win.amount, "group": group, "player": str(win.player_id)},
            status=status.HTTP_201_CREATED,
        )


@extend_schema(
    parameters=[
        OpenApiParameter("group", str, enum=list(GROUPS), description="Only this pool."),
        OpenApiParameter("kind", str, enum=list(LedgerKind.values), description="Only this kind."),
        OpenApiParameter(
            "operation_id",
            # No NUL: the platform refuses it in any URL (400 `bad_request`).
            {"type": "string", "maxLength": 100, "pattern": "^[^\\x00]*$"},
            description="One operation.",
        ),
    ]
)
class LedgerListView(ListAPIView):
    """The append-only ledger, newest first (staff); filter with ?group=, ?kind=, ?operation_id=.

    Cursor-paginated (`IdCursorPagination`): rows are only ever added, so pages are keysets
    on the id and a new entry never shifts the page a reader is on.
    """

    permission_classes = [IsStaff]
    serializer_class = LedgerEntrySerializer
    pagination_class = IdCursorPagination

    def get_queryset(self):
        queryset = LedgerEntry.objects.select_related("pool").order_by("-id")
        params = self.request.query_params
        if "group" in params:
            if params["group"] not in GROUPS:
                raise InvalidInput("Unknown group.", code="unknown_group")
            queryset = queryset.filter(pool__group=params["group"])
        if "kind" in params:
            if params["kind"] not in LedgerKind.values:
                raise InvalidInput("Unknown ledger entry kind.", code="unknown_kind")
            queryset = queryset.filter(kind=params["kind"])
        if "operation_id" in params:
            if len(params["operation_id"]) > 100:
                raise InvalidInput("operation_id is 1-100 characters.", code="invalid_operation_id")
            queryset = queryset.filter(operation_id=params["operation_id"])
        return queryset
