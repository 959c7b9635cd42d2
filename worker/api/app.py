"""`flashcall api`: the producer contract over HTTP, for backends that hold no Redis credentials.

An ASGI application (Starlette) served by uvicorn, with exactly the semantics of the Redis
functions (docs/protocol.md): a request's body goes to `flashcall_start` or `flashcall_check`
as it came, so the library alone validates it and words its errors. What came beside the body
(the id in the URL or the Idempotency-Key header, the name of the API key) is the functions'
second argument. docs/api.md is the page for its users; docs/openapi.json its schema.

- `POST /v1/verifications`: start (201 created, 200 for an id that exists);
- `POST /v1/verifications/{id}/check`: check a code; answered once a worker compared it, or
  504 after `check_timeout` seconds;
- `GET /v1/verifications/{id}`: the status;
- `POST /v1/verifications/{id}/cancel`: cancel;
- `GET /health` (alive), `GET /ready` (Redis answers, the library is new enough),
  `GET /openapi.json`: without a key.

Connections are bounded as the callback receiver's are (ReceiverLimits): header and body
deadlines, an idle timeout, a connection cap; a body is at most the library's 4096 bytes.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.api.keys import ApiKeys
from worker.api.openapi import document
from worker.api.problems import Problem, problem
from worker.callbacks.app import ReceiverLimits, run_limited
from worker.logs.structured import get_logger
from worker.redis import functions
from worker.redis.connections import async_client

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["MAX_BODY_BYTES", "MIN_LIBRARY_VERSION", "Api", "ApiMetrics", "create_app", "serve"]

log = get_logger(__name__)

#: The library's own limit on a request (MAX_REQUEST_BYTES in flashcall.lua).
MAX_BODY_BYTES = 4096
#: The first library whose check takes a reply key named by the API (`reply` in its second argument).
MIN_LIBRARY_VERSION = 19

_JSON = "application/json"
_REFUSED_STARTS = ("rate_limited", "blocked", "fraud_suspected")
_CHECK_PROBLEMS = {
    "not_found": "no verification has this id",
    "max_attempts": "the verification took its last check: start a new one",
    "expired": "the verification expired: start a new one",
    "canceled": "the verification was canceled",
}

T = TypeVar("T")


class ApiMetrics:
    """The API's own series, on their own port (`--metrics-port`): by key and operation."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        import prometheus_client as prom

        into = registry if registry is not None else prom.REGISTRY
        self.requests = prom.Counter(
            "flashcall_api_requests",
            "HTTP API requests answered, by the name of their API key, operation and HTTP status",
            ["key", "operation", "code"],
            registry=into,
        )
        self.latency = prom.Histogram(
            "flashcall_api_request_seconds",
            "Time from a request's headers to its answer, by operation",
            ["operation"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=into,
        )

    def observe(self, key: str, operation: str, code: int, seconds: float) -> None:
        self.requests.labels(key, operation, str(code)).inc()
        self.latency.labels(operation).observe(seconds)


@dataclass(frozen=True, slots=True)
class Api:
    client: redis.asyncio.Redis
    keys: ApiKeys
    metrics: ApiMetrics
    check_timeout: float = 5.0
    """Seconds a check waits for a worker's answer before it is answered 504."""

    async def run(self, call: functions.Call[T]) -> T:
        try:
            return await call.run_async(self.client)
        except redis.ResponseError as error:
            raise _refusal(error) from None

    async def run_then_pop(self, call: functions.Call[T], key: str) -> tuple[T, str | None]:
        """The call, and what `key` holds within check_timeout, in one round trip."""
        try:
            return await call.run_then_pop(self.client, key, self.check_timeout)
        except redis.ResponseError as error:
            raise _refusal(error) from None


def _refusal(error: redis.ResponseError) -> Exception:
    """The problem for a Redis error reply; anything the contract does not name is a fault."""
    text = str(error)
    if text.startswith("flashcall: "):
        detail = text.removeprefix("flashcall: ")
        if detail.endswith("is already used by a verification of another phone"):
            return Problem("id_conflict", detail)
        return Problem("invalid_request", detail)
    if text.startswith("Function not found"):
        return Problem(
            "unavailable",
            "the flashcall library is not installed in Redis: "
            "start a worker, or run `flashcall redis install`",
            headers={"Retry-After": "5"},
        )
    return error


Handler = Callable[[Api, Request, str], Awaitable[Response]]


def _endpoint(operation: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authentication, problems and metrics around one operation."""

    async def endpoint(request: Request) -> Response:
        began = time.perf_counter()
        api: Api = request.app.state.api
        key = api.keys.name_of_header(request.headers.get("authorization"))
        try:
            if key is None:
                raise Problem(
                    "unauthorized",
                    "give an API key as `Authorization: Bearer <key>`",
                    headers={"WWW-Authenticate": 'Bearer realm="flashcall"'},
                )
            response = await handler(api, request, key)
        except Problem as refused:
            response = problem(refused.reason, refused.detail, headers=refused.headers, **refused.fields)
            if refused.reason == "unauthorized":
                log.warning("api request refused: no valid key", operation=operation)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            log.warning("api request failed: Redis did not answer", operation=operation, error=str(error))
            response = problem(
                "unavailable",
                "no Redis primary answered; the request may not have been taken: send it again",
                headers={"Retry-After": "1"},
            )
        api.metrics.observe(key or "", operation, response.status_code, time.perf_counter() - began)
        return response

    return endpoint


async def _json_body(request: Request) -> bytes:
    """The body, no longer than the library takes; read no further, so a flood is cut off."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != _JSON:
        raise Problem("unsupported_media_type", "send the body as Content-Type: application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Problem("too_large", f"request is {int(declared)} bytes, the limit is {MAX_BODY_BYTES}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise Problem(
                    "too_large", f"request is over {MAX_BODY_BYTES} bytes, the limit is {MAX_BODY_BYTES}"
                )
            chunks.append(chunk)
    except ClientDisconnect:
        # Closed at its body deadline (or by the client): nobody reads this answer.
        raise Problem("invalid_request", "the request was not completed") from None
    return b"".join(chunks)


def _json(text: str, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(text, status_code=status_code, headers=headers, media_type=_JSON)


async def _start(api: Api, request: Request, key: str) -> Response:
    body = await _json_body(request)
    via: dict[str, str] = {"api_key": key}
    if (idempotency_key := request.headers.get("idempotency-key")) is not None:
        via["id"] = idempotency_key
    reply = await api.run(_text(functions.start(body.decode("utf-8", "replace"), via=json.dumps(via))))
    answer: dict[str, Any] = json.loads(reply)
    reason = answer.get("reason")
    if reason in _REFUSED_STARTS:
        retry_after = answer.get("retry_after")
        if reason != "blocked" and retry_after is None:
            # A repeat of a refused id: waiting does not help, as it would a first refusal
            # (429 and Retry-After); the id stays refused, only a new id can start.
            raise Problem(
                "refused_id",
                f"this id's start was refused ({reason}): start again under a new id",
                id=answer["id"],
                refusal=reason,
                created=answer["created"],
            )
        if reason == "blocked":
            detail = "the number is on routing.yaml's block list: it is never called"
        elif reason == "rate_limited":
            detail = f"routing.yaml's {answer.get('limit')} limit admits this start in {retry_after} s"
        else:
            detail = f"the number's range is held for {retry_after} s"
        raise Problem(
            reason,
            detail,
            headers={"Retry-After": str(retry_after)} if retry_after is not None else None,
            id=answer["id"],
            limit=answer.get("limit"),
            retry_after=retry_after,
            created=answer["created"],
        )
    if answer["created"]:
        return _json(reply, 201, {"Location": f"/v1/verifications/{answer['id']}"})
    return _json(reply)


async def _check(api: Api, request: Request, _: str) -> Response:
    verification_id = request.path_params["id"]
    body = await _json_body(request)
    # A reply key of its own: the BLPOP goes in the FCALL's round trip, one wait fewer.
    token = secrets.token_hex(16)
    call = functions.check(
        body.decode("utf-8", "replace"), via=json.dumps({"id": verification_id, "reply": token})
    )
    _, popped = await api.run_then_pop(call, functions.reply_key_of(token))
    if popped is None:
        raise Problem(
            "check_timeout",
            f"no worker answered within {api.check_timeout:g} s; the check was counted: "
            "read the verification's status, or check again",
            id=verification_id,
        )
    result: dict[str, Any] = json.loads(popped)
    if result["result"] in _CHECK_PROBLEMS:
        raise Problem(
            result["result"],
            _CHECK_PROBLEMS[result["result"]],
            id=result["id"],
            result=result["result"],
            verification_status=result.get("status"),
            attempts_left=result.get("attempts_left"),
        )
    return _json(popped)


def _verification(answer: str) -> Response:
    document_ = json.loads(answer)
    if document_.get("status") == "not_found":
        raise Problem("not_found", _CHECK_PROBLEMS["not_found"], id=document_["id"])
    return _json(answer)


async def _status(api: Api, request: Request, _: str) -> Response:
    return _verification(await api.run(_text(functions.status(request.path_params["id"]))))


async def _cancel(api: Api, request: Request, _: str) -> Response:
    return _verification(await api.run(_text(functions.cancel(request.path_params["id"]))))


def _text(call: functions.Call[Any]) -> functions.Call[str]:
    """The call answering its JSON text as Redis gave it: the API passes it on unparsed."""
    return functions.Call(call.name, call.args, str)


async def _health(_: Request) -> Response:
    return JSONResponse({"ok": True})


async def _ready(request: Request) -> Response:
    api: Api = request.app.state.api
    try:
        version = await functions.version().run_async(api.client)
    except redis.ResponseError:
        return problem("unavailable", "the flashcall library is not installed in Redis: start a worker")
    except (redis.ConnectionError, redis.TimeoutError):
        return problem("unavailable", "Redis does not answer")
    if not version.isdigit() or int(version) < MIN_LIBRARY_VERSION:
        return problem(
            "unavailable",
            f"Redis holds library {version}; the API needs {MIN_LIBRARY_VERSION} or later: "
            "upgrade the workers",
        )
    return JSONResponse({"ok": True, "library": version})


async def _openapi(_: Request) -> Response:
    return JSONResponse(document())


async def _http_problem(_: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        return problem(
            "method_not_allowed", "see /openapi.json for the methods", headers=dict(error.headers or {})
        )
    return problem("no_such_path", "see /openapi.json for the paths")


async def _fault(_: Request, error: Exception) -> Response:
    log.error("api request failed", error=repr(error))
    return problem("internal", "the API failed to answer; the request may have been taken: send it again")


def create_app(api: Api) -> Starlette:
    """The API on these Redis client and keys; the client is closed when the application shuts down."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.api = api
        yield
        await api.client.aclose()

    return Starlette(
        routes=[
            Route("/v1/verifications", _endpoint("start", _start), methods=["POST"]),
            Route("/v1/verifications/{id}", _endpoint("status", _status), methods=["GET"]),
            Route("/v1/verifications/{id}/check", _endpoint("check", _check), methods=["POST"]),
            Route("/v1/verifications/{id}/cancel", _endpoint("cancel", _cancel), methods=["POST"]),
            Route("/health", _health, methods=["GET"]),
            Route("/ready", _ready, methods=["GET"]),
            Route("/openapi.json", _openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_problem, Exception: _fault},
        lifespan=lifespan,
    )


def serve(
    host: str,
    port: int,
    *,
    redis_url: str,
    keys: ApiKeys,
    metrics_port: int,
    check_timeout: float,
    limits: ReceiverLimits | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM."""
    import prometheus_client

    limits = limits or ReceiverLimits()
    client = async_client(
        redis_url,
        pool_size=64,
        timeout=10,
        # A check's BLPOP holds its connection for up to check_timeout.
        socket_timeout=check_timeout + 5,
        decode_responses=True,
    )
    api = Api(client, keys, ApiMetrics(), check_timeout=check_timeout)
    prometheus_client.start_http_server(metrics_port, addr=host)
    log.info(
        "api listening",
        url=f"http://{host}:{port}/v1/",
        metrics=f"http://{host}:{metrics_port}/metrics",
        keys=sorted(keys.names),
        check_timeout=check_timeout,
        **asdict(limits),
    )
    run_limited(create_app(api), host, port, limits)
