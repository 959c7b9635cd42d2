"""`flashcall demo`: one verification end to end, as a backend and a user would see it."""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from flashcall_dev.stack import REPO_ROUTING, LocalStack, local_stack
from worker.api.keys import new_key
from worker.client import Producer
from worker.core.errors import FlashcallError

__all__ = ["run_demo"]

DEMO_PHONE = "+79991234567"
#: The HTTP API's verification calls another number: the shipped routing lets one number
#: start only so often (limits.per_phone).
API_DEMO_PHONE = "+79991234568"
_WAIT = 30.0
#: How the demo shows the key: a backend keeps it out of its shell history, in the environment.
_AUTHORIZATION_SHOWN = '-H "Authorization: Bearer $FLASHCALL_API_KEY"'


def _say(text: str = "") -> None:
    print(text, flush=True)


def _say_call(call: dict[str, str]) -> None:
    if call["channel"] == "flashcall":
        _say(f"phone>   missed call from +{call['from']}; its last digits are the code")
    else:
        _say(f"phone>   {call['channel']} with the code {call['code']}")


def _play(stack: LocalStack) -> None:
    producer = Producer.from_url(stack.redis_url)
    verification_id = f"demo-{secrets.token_hex(4)}"
    number = DEMO_PHONE.lstrip("+")

    metadata = {"source": "make run"}
    request = {"id": verification_id, "phone": DEMO_PHONE, "metadata": metadata}
    _say(f"backend> FCALL flashcall_start 0 '{json.dumps(request)}'")
    _say(f"redis>   {json.dumps(producer.start(verification_id, DEMO_PHONE, metadata=metadata))}")

    outcome = producer.wait_for(verification_id, {"delivered", "failed"}, timeout=_WAIT)
    if outcome["event"] != "delivered":
        raise FlashcallError(f"the verification failed: {producer.status(verification_id)}")

    inbox = httpx.get(f"{stack.sandbox_url}/_sandbox/inbox/{number}", timeout=5).json()["messages"]
    call = inbox[-1]
    delivered = producer.events(verification_id)[-1]
    _say(f"router>  {delivered['channel']} through {delivered['provider']}")
    _say_call(call)

    _say(f"backend> FCALL flashcall_check 0 '{json.dumps({'id': verification_id, 'code': call['code']})}'")
    _say("backend> BLPOP <the reply key it returned> 5")
    _say(f"redis>   {json.dumps(producer.check(verification_id, call['code']))}")

    _say()
    _say("event trail (XRANGE flashcall:events):")
    for event in producer.events(verification_id):
        details = ", ".join(
            f"{name}={event[name]}"
            for name in ("provider", "channel", "step", "attempt", "reason", "cost")
            if name in event
        )
        _say(f"  {event['event']:<16} {event['status']:<10} {details}")
    _say()
    status = producer.status(verification_id)
    _say(f"backend> FCALL flashcall_status 0 {verification_id}")
    _say(f"redis>   {json.dumps(status)}")
    _say()
    _say(f"final status: {status['status']}")
    producer.close()
    if status["status"] != "approved":
        raise FlashcallError(f"expected approved, got {status['status']}")


def _curl(url: str, key: str, method: str, path: str, body: dict[str, str] | None = None) -> dict[str, Any]:
    """Sends a request as a backend would with curl, shows the command and its answer; answers
    the JSON. Without curl on the machine, httpx sends the same request."""
    head = ["-s", "-w", "\\n%{http_code}\\n"] + (["-X", method] if method != "GET" else [])
    tail = ["-H", "Content-Type: application/json", "-d", json.dumps(body)] if body is not None else []
    tail.append(url + path)
    quoted = " ".join(shlex.quote(part) for part in tail)
    _say(f"backend> curl {' '.join(shlex.quote(part) for part in head)} {_AUTHORIZATION_SHOWN} {quoted}")
    curl = shutil.which("curl")
    if curl is None:
        response = httpx.request(
            method, url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=15
        )
        answer, code = response.text, str(response.status_code)
    else:
        argv = [curl, *head, "-H", f"Authorization: Bearer {key}", *tail]
        ended = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)  # noqa: S603
        if ended.returncode != 0:
            raise FlashcallError(f"curl failed (exit status {ended.returncode}): {ended.stderr.strip()}")
        answer, _, code = ended.stdout.rstrip("\n").rpartition("\n")
    _say(f"api>     {answer}")
    _say(f"api>     HTTP {code}")
    parsed: dict[str, Any] = json.loads(answer)
    return parsed


def _play_http(stack: LocalStack) -> None:
    key = new_key()
    _, url = stack.start_api(keys=f"demo:{key}")
    _say(f"the same over HTTP: flashcall api at {url}, its key in $FLASHCALL_API_KEY")
    if shutil.which("curl") is None:
        _say("(curl is not installed here: httpx sends the same requests)")
    verification_id = f"demo-{secrets.token_hex(4)}"
    _curl(url, key, "POST", "/v1/verifications", {"id": verification_id, "phone": API_DEMO_PHONE})
    producer = Producer.from_url(stack.redis_url)
    try:
        outcome = producer.wait_for(verification_id, {"delivered", "failed"}, timeout=_WAIT)
    finally:
        producer.close()
    if outcome["event"] != "delivered":
        raise FlashcallError(f"the verification over HTTP failed: {outcome}")
    number = API_DEMO_PHONE.lstrip("+")
    call = httpx.get(f"{stack.sandbox_url}/_sandbox/inbox/{number}", timeout=5).json()["messages"][-1]
    _say_call(call)
    checked = _curl(url, key, "POST", f"/v1/verifications/{verification_id}/check", {"code": call["code"]})
    status = _curl(url, key, "GET", f"/v1/verifications/{verification_id}")
    _say()
    _say(f"final status over HTTP: {status['status']}")
    if checked.get("result") != "approved" or status["status"] != "approved":
        raise FlashcallError(f"expected approved over HTTP, got {status['status']}")


def run_demo(*, redis_url: str | None = None, routing_path: Path = REPO_ROUTING) -> int:
    _say(f"starting redis-server, the provider sandbox and one worker, routing by {routing_path}...")
    with local_stack(redis_url=redis_url, routing_path=routing_path) as stack:
        worker = stack.start_worker(processes=1, threads=16)
        _say(f"  redis {stack.redis_url}, sandbox {stack.sandbox_url}, logs in {stack.log_dir}")
        _say()
        try:
            _play(stack)
            _say()
            _play_http(stack)
        except FlashcallError:
            _say("worker log (last lines):")
            _say(worker.log_tail())
            raise
    _say("stopped everything the demo started.")
    return 0
