"""Pagination whose parameters are validated: a malformed one is a 400 with a code, never a 404.

- `PageNumberPagination` (the default): `?page=N`, N ≥ 1; `?page=abc` or `?page=0` is 400
  `invalid_page`; a page past the end is 404 `not_found`.
- `IdCursorPagination`: for append-only lists ordered by a unique, growing integer key (the
  jackpot ledger). A page is a keyset (`WHERE id < …`), so new rows never shift a page and
  reading deep costs no OFFSET. The cursor is `n<id>` (next) or `p<id>` (previous), a format
  a client can check; anything else is 400 `invalid_cursor`.
"""

import json
import re

from django.http import HttpResponse
from rest_framework import pagination
from rest_framework.exceptions import NotFound

from nightstorm.errors import InvalidInput

_PAGE = re.compile(r"^[1-9][0-9]{0,9}$")
_CURSOR = re.compile(r"^([np])([0-9]{1,18})$")


class PageNumberPagination(pagination.PageNumberPagination):
    def paginate_queryset(self, queryset, request, view=None):
        self._check_page(request)
        return super().paginate_queryset(queryset, request, view)

    def check_single_page(self, request) -> None:
        """For a list that always fits on one page and is served without a COUNT: the same
        answers as `paginate_queryset` for the `page` parameter (400 malformed, 404 past the
        end)."""
        raw = self._check_page(request)
        if raw is not None and raw not in self.last_page_strings and int(raw) != 1:
            raise NotFound("Invalid page.")

    def paginate_in_one_query(self, request, fetch) -> str | None:
        """A page rendered by the database and the list's length, from one query:
        `fetch(limit, offset)` returns the page's results as JSON text and the length (None
        for an empty page, as a window count gives it). Returns the text for
        `get_rendered_paginated_response`, with the same answers as `paginate_queryset`; None
        for `?page=last`, which needs the length first (use `paginate_queryset` then)."""
        raw = self._check_page(request)
        if raw in self.last_page_strings:
            return None
        number, size = int(raw or 1), self.get_page_size(request)
        results, total = fetch(size, (number - 1) * size)
        if total is None and number > 1:
            raise NotFound("Invalid page.")
        paginator = self.django_paginator_class([], size)
        paginator.count = total or 0  # a cached property: the query already answered it
        self.page, self.request = paginator.page(number), request
        return results

    def get_rendered_paginated_response(self, results: str) -> HttpResponse:
        """`get_paginated_response` for results that are JSON text already."""
        links = json.dumps(
            {
                "count": self.page.paginator.count,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
            },
            separators=(",", ":"),
        )
        return HttpResponse(f'{links[:-1]},"results":{results}}}', content_type="application/json")

    def _check_page(self, request) -> str | None:
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and raw not in self.last_page_strings and not _PAGE.match(raw):
            raise InvalidInput("page must be a whole number from 1.", code="invalid_page")
        return raw

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": 9_999_999_999}
        return parameters


class IdCursorPagination(pagination.CursorPagination):
    """Keyset pagination on `-id`. Ids are unique, so a position alone names a place: the
    offset DRF's cursor carries for repeated positions is always 0 and is not encoded."""

    ordering = "-id"
    cursor_query_description = "The `next` or `previous` link's cursor: `n<id>` or `p<id>`."

    def decode_cursor(self, request):
        raw = request.query_params.get(self.cursor_query_param)
        if raw is None:
            return None
        match = _CURSOR.match(raw)
        if not match:
            raise InvalidInput(
                "cursor must be a next or previous link's cursor.", code="invalid_cursor"
            )
        return pagination.Cursor(offset=0, reverse=match[1] == "p", position=match[2])

    def encode_cursor(self, cursor):
        if cursor.position is None:  # the first page
            return pagination.remove_query_param(self.base_url, self.cursor_query_param)
        token = ("p" if cursor.reverse else "n") + str(cursor.position)
        return pagination.replace_query_param(self.base_url, self.cursor_query_param, token)

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": self.cursor_query_description,
                "schema": {"type": "string", "pattern": _CURSOR.pattern},
            }
        ]
