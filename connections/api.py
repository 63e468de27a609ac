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

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.players import resolve_player
from connections.state import STATES, ConnectionNotFound
from connections.web import get_connections
from nightstorm.api.permissions import service_token_or_staff
from nightstorm.errors import InvalidInput
from nightstorm.idempotency import HEADER, idempotent, scope_of

ServiceOrStaff = service_token_or_staff("CONNECTIONS_SERVICE_TOKEN")


class ConnectionRegisterInput(serializers.Serializer):
    protocol = serializers.RegexField(r"^[a-z][a-z0-9_-]{0,31}$", default="telnet")
    remote_addr = serializers.IPAddressField(protocol="both")


class ConnectionBindInput(serializers.Serializer):
    player = serializers.CharField(max_length=150, help_text="Player id (UUID) or name.")


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

    @extend_schema(responses=ConnectionOutput(many=True))
    def get(self, request):
        state = request.query_params.get("state")
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}", code="invalid_state")
        conns = get_connections().online()
        if state:
            conns = [c for c in conns if c.state == state]
        conns.sort(key=lambda c: ((c.player_name or "").lower(), c.handle))
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(conns, request, view=self)
        return paginator.get_paginated_response([c.as_dict() for c in page])

    @extend_schema(request=ConnectionRegisterInput, responses={201: ConnectionOutput})
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

    @extend_schema(responses=ConnectionOutput)
    def get(self, request, handle: int):
        return Response(get_connections().lookup(handle).as_dict())

    @extend_schema(responses={204: None})
    def delete(self, request, handle: int):
        if not get_connections().disconnect(handle):
            raise ConnectionNotFound()
        return Response(status=status.HTTP_204_NO_CONTENT)


class BindView(APIView):
    """Bind a connection to a player (critical write; idempotent for the same player)."""

    permission_classes = [ServiceOrStaff]

    @extend_schema(request=ConnectionBindInput, responses=ConnectionOutput)
    def post(self, request, handle: int):
        data = ConnectionBindInput(data=request.data)
        data.is_valid(raise_exception=True)
        player_id, player_name = resolve_player(data.validated_data["player"])
        conn = get_connections().bind(handle, player_id=player_id, player_name=player_name)
        return Response(conn.as_dict())


class MetadataView(APIView):
    """Merge `{key: value}` into the connection's metadata; the answer is what is stored now."""

    permission_classes = [ServiceOrStaff]

    @extend_schema(request=OpenApiTypes.OBJECT, responses=ConnectionOutput)
    def patch(self, request, handle: int):
        conn = get_connections().update_metadata(handle, request.data)
        return Response(conn.as_dict())
