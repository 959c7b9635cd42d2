"""The API's OpenAPI 3.1 document, served at /openapi.json and committed as docs/openapi.json.

Written out rather than derived: the request's rules are the library's (docs/protocol.md),
and the schemas below restate them for clients and generators. A request valid by this
document may still be refused by the library (a policy routing.yaml does not have, an id
of another phone), with a problem the document names; tests/integration/test_api_schema.py
runs schemathesis against a running API to hold the two together.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from worker.api.problems import MEDIA_TYPE, REASONS

__all__ = ["document"]

_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]*$",
    "description": "The verification's id, chosen by the client: its idempotency key.",
    "examples": ["order-42"],
}

_START_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["phone"],
    "description": "The start request of docs/protocol.md. `id` may be left out when the "
    "Idempotency-Key header gives it.",
    "properties": {
        "id": _ID,
        "phone": {
            "type": "string",
            # The library's rule (normalise_phone in flashcall.lua) once the ignored characters
            # are dropped: +7, 7 or 8, then exactly 10 ASCII digits.
            "pattern": "^[ ()-]*(\\+[ ()-]*7|[78])([ ()-]*[0-9]){10}[ ()-]*$",
            "description": "A Russian number: +7, 7 or 8 and 10 digits; "
            "spaces, '-', '(' and ')' are ignored.",
            "examples": ["+79991234567"],
        },
        "policy": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "default": "default"},
        "channels": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "uniqueItems": True,
            "items": {"enum": ["flashcall", "voice", "sms"]},
        },
        "code_length": {"type": "integer", "minimum": 4, "maximum": 6, "default": 4},
        "ttl": {"type": "integer", "minimum": 30, "maximum": 86400, "default": 600},
        "client_ip": {
            "type": "string",
            "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
            "maxLength": 45,
            "description": "The end user's IPv4 or IPv6 address (no zone id).",
        },
        "limit_key": {"type": "string", "pattern": "^[A-Za-z0-9._:@/-]{1,128}$"},
        "metadata": {
            "type": "object",
            "description": "At most 1024 bytes encoded; `api_key` is set to the key's name.",
        },
    },
}

#: A verification's status (docs/protocol.md, statuses).
_STATUS_WORD = {
    "enum": ["pending", "sending", "sent", "approved", "failed", "expired", "canceled", "max_attempts"]
}

# A start the library took creates a pending verification; a repeat of its id answers the
# verification as it is now. A refused start is a problem, never one of these.
_STARTED = {
    "type": "object",
    "required": ["id", "status", "created"],
    "properties": {"id": _ID, "status": {"const": "pending"}, "created": {"const": True}},
}

_REPEATED = {
    "type": "object",
    "required": ["id", "status", "created"],
    "properties": {"id": _ID, "status": _STATUS_WORD, "created": {"const": False}},
}

_CHECK_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["code"],
    "properties": {
        "code": {"type": "string", "pattern": "^[0-9]{4,8}$", "examples": ["4567"]},
        "id": {**_ID, "description": "If given, the id of the URL."},
    },
}

_CHECK_ANSWER = {
    "type": "object",
    "required": ["id", "result", "status"],
    "properties": {
        "id": _ID,
        "result": {"enum": ["approved", "rejected"]},
        "status": {**_STATUS_WORD, "description": "The verification's status after the check."},
        "attempts_left": {"type": "integer", "minimum": 0},
    },
}

_STATUS = {
    "type": "object",
    "required": [
        "id",
        "status",
        "phone",
        "policy",
        "attempts",
        "checks_left",
        "cost",
        "created_at",
        "updated_at",
        "expires_at",
    ],
    "properties": {
        "id": _ID,
        "status": _STATUS_WORD,
        "phone": {
            "type": "string",
            "pattern": "^\\+[0-9]{4}\\*{5}[0-9]{2}$",
            "description": "Masked: +7999*****67.",
        },
        "policy": {"type": "string"},
        "attempts": {"type": "integer", "minimum": 0},
        "checks_left": {"type": "integer", "minimum": 0},
        "cost": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2,4}$"},
        "created_at": {"type": "integer"},
        "updated_at": {"type": "integer"},
        "expires_at": {"type": "integer"},
        "reason": {"type": "string"},
        "step": {"type": "integer", "minimum": 0},
        "channel": {"enum": ["flashcall", "voice", "sms"]},
        "provider": {"type": "string"},
        "metadata": {"type": "object"},
    },
}

_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; `reason` is the contract's word for what happened.",
    "required": ["type", "title", "status", "detail", "reason"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "reason": {"enum": sorted(REASONS)},
        "id": {"type": "string"},
        "limit": {"type": "string"},
        "retry_after": {"type": "integer"},
        "created": {"type": "boolean"},
        "refusal": {"enum": ["rate_limited", "fraud_suspected"]},
        "result": {"type": "string"},
        "verification_status": _STATUS_WORD,
        "attempts_left": {"type": "integer"},
    },
}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


#: Headers the API sets on every answer of a status (worker/api/app.py).
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "required": True,
            "schema": {"const": 'Bearer realm="flashcall"'},
            "description": "How to authenticate (RFC 6750).",
        }
    },
    429: {
        "Retry-After": {
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
            "description": "Seconds until the limit or the hold admits a start under a new id.",
        }
    },
    503: {
        "Retry-After": {
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
            "description": "Seconds to wait before sending the request again.",
        }
    },
}


def _problem(status: int, reasons: list[str], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response of this status: a problem of one of these reasons."""
    schema = {
        "allOf": [{"$ref": "#/components/schemas/Problem"}],
        "properties": {"status": {"const": status}, "reason": {"enum": sorted(reasons)}},
    }
    return {
        "description": "A problem: " + ", ".join(f"`{reason}`" for reason in reasons),
        "content": {MEDIA_TYPE: {"schema": schema}},
        **({"headers": headers} if headers else {}),
    }


def _problems(*reasons: str, path_id: bool = False) -> dict[str, Any]:
    """One response per HTTP status among these reasons and those of any request with a key.

    `path_id`: the path names an id, and one with a '/' in it is another path, which the
    router answers as no path of the API (404, no_such_path)."""
    by_status: dict[int, list[str]] = {}
    for reason in ("invalid_request", "unauthorized", "unavailable", "internal", *reasons):
        by_status.setdefault(REASONS[reason][0], []).append(reason)
    responses = {
        str(status): _problem(status, named, _HEADERS.get(status)) for status, named in by_status.items()
    }
    if path_id and "404" in responses:
        responses["404"]["content"][MEDIA_TYPE]["schema"]["properties"]["reason"]["enum"].append(
            "no_such_path"
        )
    return dict(sorted(responses.items()))


def _keyless(
    operation_id: str, summary: str, answer: dict[str, Any], problems: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A GET that takes no key (health checks, this document): its answer, and its problems."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": [],
            "responses": {
                "200": {"description": summary + ".", "content": {"application/json": {"schema": answer}}},
                **(problems or {}),
                "500": _problem(500, ["internal"]),
            },
        }
    }


_PATH_ID = {"name": "id", "in": "path", "required": True, "schema": _ID}


@cache
def document() -> dict[str, Any]:
    body_problems = ("too_large", "unsupported_media_type")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flashcall-router API",
            "version": "1",
            "description": "Phone verification by flash call, voice call or SMS: the producer "
            "contract of docs/protocol.md over HTTP (docs/api.md).",
        },
        "servers": [{"url": "http://127.0.0.1:8800"}],
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/verifications": {
                "post": {
                    "operationId": "startVerification",
                    "summary": "Start a verification: place the first call",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": _ID,
                            "description": "The verification's id, as the body's `id` would be.",
                        }
                    ],
                    "requestBody": {"required": True, "content": _json("StartRequest")},
                    "responses": {
                        "201": {
                            "description": "Created: the first call is on its way.",
                            "headers": {
                                "Location": {
                                    "required": True,
                                    "schema": {"type": "string", "pattern": "^/v1/verifications/"},
                                    "description": "The verification's path.",
                                }
                            },
                            "content": _json("StartAnswer"),
                        },
                        "200": {
                            "description": "The id exists: nobody is called again.",
                            "content": _json("RepeatAnswer"),
                        },
                        **_problems(
                            "id_conflict",
                            "refused_id",
                            "blocked",
                            "rate_limited",
                            "fraud_suspected",
                            *body_problems,
                        ),
                    },
                }
            },
            "/v1/verifications/{id}": {
                "get": {
                    "operationId": "getVerification",
                    "summary": "The verification's status",
                    "parameters": [_PATH_ID],
                    "responses": {
                        "200": {"description": "The status.", "content": _json("Verification")},
                        **_problems("not_found", path_id=True),
                    },
                }
            },
            "/v1/verifications/{id}/check": {
                "post": {
                    "operationId": "checkVerification",
                    "summary": "Check the code the user typed",
                    "parameters": [_PATH_ID],
                    "requestBody": {"required": True, "content": _json("CheckRequest")},
                    "responses": {
                        "200": {
                            "description": "approved, or rejected (a wrong code).",
                            "content": _json("CheckAnswer"),
                        },
                        **_problems(
                            "not_found",
                            "max_attempts",
                            "canceled",
                            "expired",
                            "check_timeout",
                            *body_problems,
                            path_id=True,
                        ),
                    },
                }
            },
            "/v1/verifications/{id}/cancel": {
                "post": {
                    "operationId": "cancelVerification",
                    "summary": "Cancel: no further call",
                    "parameters": [_PATH_ID],
                    "responses": {
                        "200": {
                            "description": "The status after the cancellation.",
                            "content": _json("Verification"),
                        },
                        **_problems("not_found", path_id=True),
                    },
                }
            },
            "/health": _keyless(
                "health",
                "The API is alive",
                {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
            ),
            "/ready": _keyless(
                "ready",
                "Redis answers and holds a library the API can use",
                {
                    "type": "object",
                    "required": ["ok", "library"],
                    "properties": {
                        "ok": {"const": True},
                        "library": {"type": "string", "pattern": "^[0-9]+$", "description": "Its version."},
                    },
                },
                # Not ready is the answer a load balancer reads, not one a client waits out.
                {"503": _problem(503, ["unavailable"])},
            ),
            "/openapi.json": _keyless(
                "openapi",
                "This document",
                {"type": "object", "required": ["openapi", "info", "paths"]},
            ),
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "An API key."}},
            "schemas": {
                "StartRequest": _START_REQUEST,
                "StartAnswer": _STARTED,
                "RepeatAnswer": _REPEATED,
                "CheckRequest": _CHECK_REQUEST,
                "CheckAnswer": _CHECK_ANSWER,
                "Verification": _STATUS,
                "Problem": _PROBLEM,
            },
        },
    }
