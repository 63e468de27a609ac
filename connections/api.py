"""REST surface of the connection store, for gateways that speak HTTP and for tools.

Every view uses the process-wide `ConnectionService` (`get_service()`). In a web process that
service holds only the connections registered through this process, so lookups of other
handles read Redis and the list reads Redis (see `connections.service`). Callers: staff, or a
gateway presenting `Authorization: Bearer <CONNECTIONS_SERVICE_TOKEN>`; players get 403.
"""

import uuid

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.service import get_service
from connections.state import STATES, ConnectionNotFound
from nightstorm.api.permissions import service_token_or_staff
from nightstorm.errors import InvalidInput
from nightstorm.idempotency import idempotent

ServiceOrStaff = service_token_or_staff("CONNECTIONS_SERVICE_TOKEN")


class UnknownPlayer(InvalidInput):
    code = "unknown_player"
    detail = "No player has this id or name."


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


def resolve_player(value: str) -> tuple[str, str]:
    from game.models import Player

    players = Player.objects.all()
    try:
        row = players.filter(pk=uuid.UUID(value)).values_list("id", "name").first()
    except ValueError:
        row = players.filter(name=value).values_list("id", "name").first()
    if row is None:
        raise UnknownPlayer()
    return str(row[0]), row[1]


class ConnectionListView(APIView):
    """GET: who is online (every connection in the shared store). POST: register one."""

    permission_classes = [ServiceOrStaff]

    @extend_schema(responses=ConnectionOutput(many=True))
    def get(self, request):
        state = request.query_params.get("state")
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}", code="invalid_state")
        conns = get_service().online(shared=True)
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
        conn = get_service().register(**data.validated_data)
        return Response(conn.as_dict(), status=status.HTTP_201_CREATED)


class ConnectionDetailView(APIView):
    """GET one connection; DELETE disconnects it (a critical write)."""

    permission_classes = [ServiceOrStaff]

    @extend_schema(responses=ConnectionOutput)
    def get(self, request, handle: int):
        return Response(get_service().lookup(handle).as_dict())

    @extend_schema(responses={204: None})
    def delete(self, request, handle: int):
        if not get_service().disconnect(handle):
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
        conn = get_service().bind(handle, player_id=player_id, player_name=player_name)
        return Response(conn.as_dict())


class MetadataView(APIView):
    """Merge `{key: value}` into the connection's metadata (non-critical, written behind)."""

    permission_classes = [ServiceOrStaff]

    @extend_schema(request=OpenApiTypes.OBJECT, responses=ConnectionOutput)
    def patch(self, request, handle: int):
        conn = get_service().update_metadata(handle, request.data)
        return Response(conn.as_dict())
