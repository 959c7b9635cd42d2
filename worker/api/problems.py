"""The API's errors, as RFC 9457 problem details (`application/problem+json`).

Every problem carries `reason`, the same word the Redis contract uses (docs/protocol.md):
`rate_limited`, `max_attempts`, `not_found`, ... Its `type` is `urn:flashcall:problem:<reason>`,
its `title` the reason's fixed sentence, `detail` what was wrong with this request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

__all__ = ["MEDIA_TYPE", "REASONS", "Problem", "problem"]

MEDIA_TYPE = "application/problem+json"

#: Every reason a problem may carry: its HTTP status and title (docs/api.md lists them).
REASONS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "The request is not a valid request of the API"),
    "unauthorized": (401, "No valid API key was given"),
    "blocked": (403, "The number is on routing.yaml's block list"),
    "not_found": (404, "No verification has this id"),
    "no_such_path": (404, "The API has no such path"),
    "method_not_allowed": (405, "This path takes another method"),
    "id_conflict": (409, "The id is already used by a verification of another phone"),
    "max_attempts": (409, "The verification takes no more checks"),
    "canceled": (409, "The verification was canceled"),
    "refused_id": (409, "This id's start was refused: the id takes no new start"),
    "expired": (410, "The verification expired"),
    "too_large": (413, "The request body is too large"),
    "unsupported_media_type": (415, "The request body must be application/json"),
    "rate_limited": (429, "A limit of routing.yaml refuses this start for now"),
    "fraud_suspected": (429, "The conversion guard holds this number range for now"),
    "internal": (500, "The API failed to answer"),
    "unavailable": (503, "Redis cannot serve the API now"),
    "check_timeout": (504, "No worker answered the check in time"),
}


class Problem(Exception):
    """A request the API answers with a problem; `fields` are the problem's extension members."""

    def __init__(
        self, reason: str, detail: str, *, headers: dict[str, str] | None = None, **fields: Any
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}
        self.fields = fields


def problem(reason: str, detail: str, *, headers: Mapping[str, str] | None = None, **fields: Any) -> Response:
    status, title = REASONS[reason]
    body = {
        "type": f"urn:flashcall:problem:{reason}",
        "title": title,
        "status": status,
        "detail": detail,
        "reason": reason,
        **{name: value for name, value in fields.items() if value is not None},
    }
    return Response(
        json.dumps(body, separators=(",", ":")), status_code=status, headers=headers, media_type=MEDIA_TYPE
    )
