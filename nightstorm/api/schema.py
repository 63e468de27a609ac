"""The OpenAPI contract's shared parts: the error component, headers and error responses.

`AutoSchema` (the project's DEFAULT_SCHEMA_CLASS) adds to every operation the errors the
platform itself can answer, derived from the view: 400 for a body or query parameters, 401 and
403 from its authentication and permissions, 404 for a path parameter, 415 for a body, 429
(throttling is on for every view) and 503 (a busy row or store), each with `Error` as its body
and `Retry-After` where the client should wait. Views add what only they know with the
constants below: their domain refusals (`errors(409, 412)`), `IDEMPOTENCY_KEY` or
`IF_MATCH`, and the response headers (`ETAG`, `IDEMPOTENT_REPLAYED`).
"""

from drf_spectacular import openapi
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

SERVICE_TOKEN = "serviceToken"
NO_NUL = r"^[^\x00]*$"

# --- the error body -------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """Every error: a stable snake_case `code`, a sentence, and field errors when input failed."""

    code = serializers.CharField(help_text="Stable, snake_case: what a client branches on.")
    detail = serializers.CharField(help_text="A sentence for people.")
    fields = serializers.DictField(
        required=False,
        help_text="Field errors by field name (present on `invalid`).",
    )

    class Meta:
        ref_name = "Error"


_DESCRIPTIONS = {
    400: "Bad input (`invalid` with `fields`, or a specific code); nothing changed.",
    401: "Missing or invalid credentials (`not_authenticated`, `authentication_failed`).",
    403: "Not allowed for this caller (`permission_denied`, or a specific code).",
    404: "No such resource (`not_found`, or a specific code such as `combat_not_found`).",
    409: "The current state refuses the request (see the operation's codes).",
    412: "`If-Match` names a stale version (`version_conflict`): reload and retry.",
    415: "The body is not `application/json` (`unsupported_media_type`).",
    422: "This `Idempotency-Key` was used with another request (`idempotency_key_reused`).",
    428: "`If-Match` is required (`precondition_required`).",
    429: "Throttled (`throttled`): retry after `Retry-After` seconds.",
    503: "Busy or a store is unavailable (`busy`, `lock_unavailable`, `store_unavailable`, "
    "`jackpot_contended`, `database_unavailable`, `redis_unavailable`); nothing changed, retry "
    "after `Retry-After` seconds.",
}

# --- headers --------------------------------------------------------------------------------

ETAG = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200],
    description='The version a later `If-Match` names, e.g. `"3"`.',
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    response=[409, 429, 503],
    description="Seconds to wait before retrying (sent when waiting helps).",
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    str,
    OpenApiParameter.HEADER,
    response=[200, 201, 202],
    enum=["true"],
    description="Present on a replay of the stored answer to an earlier request with this key.",
)
_KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-~]+$"}
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    _KEY_SCHEMA,
    OpenApiParameter.HEADER,
    description="Makes a retry of this request apply once: the first answer is replayed.",
)
IDEMPOTENCY_KEY_REQUIRED = OpenApiParameter(
    "Idempotency-Key",
    _KEY_SCHEMA,
    OpenApiParameter.HEADER,
    required=True,
    description="Required: money moves once per key (400 `idempotency_key_required` without).",
)
IF_MATCH = OpenApiParameter(
    "If-Match",
    # What `nightstorm.api.conditional.expected_version` accepts (quotes and W/ optional).
    {"type": "string", "pattern": r'^\s*(W/)?"?[0-9]{1,10}"?\s*$'},
    OpenApiParameter.HEADER,
    required=True,
    description='The ETag of the version the change is based on, e.g. `"3"`.',
)

# Parameters and errors of a view behind `@idempotent`.
IDEMPOTENT = [IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, RETRY_AFTER]
IDEMPOTENT_REQUIRED = [IDEMPOTENCY_KEY_REQUIRED, IDEMPOTENT_REPLAYED, RETRY_AFTER]


def error_response(status: int, description: str | None = None) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description or _DESCRIPTIONS[status])


def errors(*statuses: int, **descriptions: str) -> dict[int, OpenApiResponse]:
    """`responses` entries for these error statuses; `s409="..."` overrides a description."""
    return {s: error_response(s, descriptions.get(f"s{s}")) for s in statuses}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, plus the errors every operation can answer (module docstring)."""

    def _generic_error_statuses(self) -> list[int]:
        statuses = [429, 503]
        has_body = self.method in ("POST", "PUT", "PATCH")
        queries = [
            p
            for p in self.get_override_parameters()
            if isinstance(p, OpenApiParameter) and p.location != OpenApiParameter.PATH
        ]
        if has_body or queries or self._get_pagination_parameters():
            statuses.append(400)
        if has_body:
            statuses.append(415)
        if self.view.get_authenticators():
            statuses.append(401)  # a bad token is refused even where anyone may call
            statuses.append(403)
        elif not any(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            statuses.append(403)
        if "{" in self.path or self._get_pagination_parameters():
            statuses.append(404)  # no such resource, or a page past the end
        return statuses

    def get_auth(self):
        auths = super().get_auth()
        if any(hasattr(p, "service_token_setting") for p in self.view.get_permissions()):
            self.registry.register_on_missing(
                ResolvedComponent(
                    name=SERVICE_TOKEN,
                    type=ResolvedComponent.SECURITY_SCHEMA,
                    object=SERVICE_TOKEN,
                    schema={
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A service's shared secret (`Authorization: Bearer …`): "
                        "`CONNECTIONS_SERVICE_TOKEN` for gateways, `JACKPOT_SERVICE_TOKEN` for "
                        "game servers awarding wins.",
                    },
                )
            )
            auths.insert(0, {SERVICE_TOKEN: []})
        return auths

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status in sorted(self._generic_error_statuses()):
            responses.setdefault(
                str(status), self._get_response_for_code(error_response(status), str(status))
            )
        return dict(sorted(responses.items()))

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        free_text = not any(k in schema for k in ("pattern", "enum", "format", "anyOf", "oneOf"))
        if (
            isinstance(field, serializers.CharField)
            and not isinstance(field, serializers.RegexField)  # its own pattern excludes NUL
            and schema.get("type") == "string"
            and free_text
        ):
            schema["pattern"] = NO_NUL  # DRF refuses NUL in text (400 `invalid`)
        return schema

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        if isinstance(serializer, dict) and (serializer.get("minProperties") or 0) > 0:
            required = True  # a raw schema that needs a property needs a body
        return schema, required

    def _get_response_headers_for_code(self, status_code, direction="response"):
        headers = super()._get_response_headers_for_code(status_code, direction)
        if status_code in ("429", "503") and "Retry-After" not in headers:
            headers["Retry-After"] = {
                "schema": {"type": "integer"},
                "description": RETRY_AFTER.description,
            }
        return headers
