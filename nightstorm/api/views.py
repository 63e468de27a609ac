"""Toolkit endpoints: token login."""

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from nightstorm.api import fields
from nightstorm.api.throttling import ScopedRateThrottle
from nightstorm.errors import DomainError


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    status = 400
    detail = "Unable to log in with the given username and password."


class CredentialsSerializer(serializers.Serializer):
    username = fields.CharField(min_length=1, max_length=150)
    password = fields.CharField(min_length=1, max_length=128, trim_whitespace=False)


class TokenView(APIView):
    """Exchange a username and password for the account's API token."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(
        request=CredentialsSerializer,
        responses=inline_serializer("TokenResponse", {"token": serializers.CharField()}),
    )
    def post(self, request):
        data = CredentialsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, **data.validated_data)
        if user is None or not user.is_active:
            raise InvalidCredentials()
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class DocsView(SpectacularSwaggerView):
    """Swagger UI, served from the sidecar package (no CDN). GET only: its template has no
    answer for OPTIONS."""

    http_method_names = ["get", "head"]
