"""REST surface of the connection store, for gateways that speak HTTP and for tools.

The views hold no connection state: every read and write goes to Redis through
`connections.web` (or, without Redis, to the one in-process service), so whichever web worker
answers sees the latest write. Callers: staff, or a gateway presenting
`Authorization: Bearer <CONNECTIONS_SERVICE_TOKEN>`; players get 403.

Registration takes an optional `Idempotency-Key`. `@idempotent` stores the response in the
database, but the connection is written to Redis before that commit; so the handle is derived
from the key too (`registration_idempotency`): a retry after a failure between the two lands
on the same handle instead of registering a second connection.
"""

import hashlib
import json

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.players import resolve_player
from connections.state import STATES, ConnectionNotFound
from connections.web import get_connections
from nightstorm.api import fields
from nightstorm.api.pagination import PageNumberPagination
from nightstorm.api.permissions import service_token_or_staff
from nightstorm.api.schema import IDEMPOTENT, errors
from nightstorm.errors import InvalidInput
from nightstorm.idempotency import HEADER, idempotent, scope_of

ServiceOrStaff = service_token_or_staff("CONNECTIONS_SERVICE_TOKEN")


@extend_schema_field(
    {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}], "maxLength": 45}
)
class IPAddressField(fields.IPAddressField):
    pass


class ConnectionRegisterInput(serializers.Serializer):
    protocol = fields.RegexField(r"^[a-z][a-z0-9_-]{0,31}$", default="telnet")
    remote_addr = IPAddressField(protocol="both", help_text="The client's IPv4 or IPv6 address.")


class ConnectionBindInput(serializers.Serializer):
    # Looked up as given: trimming would turn a whitespace-only name into a blank one.
    player = fields.CharField(
        min_length=1, max_length=150, trim_whitespace=False, help_text="Player id (UUID) or name."
    )


class ConnectionOutput(serializers.Serializer):
    handle = serializers.IntegerField()
    state = serializers.ChoiceField(choices=STATES)
    player = serializers.CharField(allow_null=True)
    player_name = serializers.CharField(allow_null=True)
    protocol = serializers.CharField()
    remote_addr = serializers.CharField()
    connected_at = serializers.FloatField(help_text="Epoch seconds.")
    last_signal = serializers.FloatField(help_text="Epoch seconds.")
    idle_seconds = serializers.FloatField()
    metadata = serializers.DictField(child=serializers.CharField())


HANDLE = OpenApiParameter(
    "handle",
    {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    OpenApiParameter.PATH,
    description="The connection's handle.",
)
NOT_FOUND = errors(404, s404="`connection_not_found`.")


def _metadata_schema() -> dict:
    return {
        "type": "object",
        "minProperties": 1,
        "maxProperties": settings.CONNECTIONS_MAX_METADATA_KEYS,
        "propertyNames": {"pattern": r"^[A-Za-z0-9_.:-]{1,64}$"},
        "additionalProperties": {
            "oneOf": [
                {"type": "string", "maxLength": settings.CONNECTIONS_MAX_METADATA_VALUE_CHARS},
                {"type": "number"},
            ]
        },
        "description": "Keys of A-Z a-z 0-9 _ . : - (1-64), string or number values; a "
        "connection holds at most CONNECTIONS_MAX_METADATA_KEYS keys (400 `metadata_too_large`).",
    }


def _sha256(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def registration_idempotency(request, body: dict) -> tuple[str, str] | None:
    """(token, request digest) of a registration sent with an Idempotency-Key, else None.

    The token names the caller's key (scoped like the database record, so two callers' keys
    never meet); the digest names the request, so the same key on another body is refused
    even when the database record was rolled back.
    """
    key = request.headers.get(HEADER)
    if key is None:
        return None
    return _sha256(scope_of(request), key), _sha256(json.dumps(body, sort_keys=True))


class ConnectionListView(APIView):
    """GET: who is online (every connection in the shared store). POST: register one."""

    permission_classes = [ServiceOrStaff]
    pagination_class = PageNumberPagination  # for the schema: the list is paginated

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=list(STATES), description="Only this state."),
        ],
        responses=ConnectionOutput(many=True),
    )
    def get(self, request):
        state = request.query_params.get("state")
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}", code="invalid_state")
        conns = get_connections().online()
        if state:
            conns = [c for c in conns if c.state == state]
        conns.sort(key=lambda c: ((c.player_name or "").lower(), c.handle))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(conns, request, view=self)
        return paginator.get_paginated_response([c.as_dict() for c in page])

    @extend_schema(
        parameters=IDEMPOTENT,
        request=ConnectionRegisterInput,
        responses={
            201: ConnectionOutput,
            **errors(409, 422, s409="`idempotency_in_progress` (with `Retry-After`)."),
        },
    )
    @idempotent(required=False)
    def post(self, request):
        data = ConnectionRegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        body = data.validated_data
        conn = get_connections().register(
            **body, idempotency=registration_idempotency(request, body)
        )
        return Response(conn.as_dict(), status=status.HTTP_201_CREATED)


class ConnectionDetailView(APIView):
    """GET one connection; DELETE disconnects it (a critical write)."""

    permission_classes = [ServiceOrStaff]

    @extend_schema(parameters=[HANDLE], responses={200: ConnectionOutput, **NOT_FOUND})
    def get(self, request, handle: int):
        return Response(get_connections().lookup(handle).as_dict())

    @extend_schema(parameters=[HANDLE], responses={204: None, **NOT_FOUND})
    def delete(self, request, handle: int):
        if not get_connections().disconnect(handle):
            raise ConnectionNotFound()
        return Response(status=status.HTTP_204_NO_CONTENT)


class BindView(APIView):
    """Bind a connection to a player (critical write; idempotent for the same player)."""

    permission_classes = [ServiceOrStaff]

    @extend_schema(
        parameters=[HANDLE],
        request=ConnectionBindInput,
        responses={
            200: ConnectionOutput,
            **errors(
                404,
                409,
                s404="`connection_not_found`, `unknown_player`.",
                s409="`already_bound`: bound to another player.",
            ),
        },
    )
    def post(self, request, handle: int):
        data = ConnectionBindInput(data=request.data)
        data.is_valid(raise_exception=True)
        player_id, player_name = resolve_player(data.validated_data["player"])
        conn = get_connections().bind(handle, player_id=player_id, player_name=player_name)
        return Response(conn.as_dict())


class MetadataView(APIView):
    """Merge `{key: value}` into the connection's metadata; the answer is what is stored now."""

    permission_classes = [ServiceOrStaff]

    @extend_schema(
        parameters=[HANDLE],
        request={"application/json": _metadata_schema()},
        responses={200: ConnectionOutput, **NOT_FOUND},
    )
    def patch(self, request, handle: int):
        conn = get_connections().update_metadata(handle, request.data)
        return Response(conn.as_dict())
