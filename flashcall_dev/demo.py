"""`flashcall demo`: one verification end to end, as a backend and a user would see it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx

from flashcall_dev.stack import REPO_ROUTING, LocalStack, local_stack
from worker.client import Producer
from worker.core.errors import FlashcallError

__all__ = ["run_demo"]

DEMO_PHONE = "+79991234567"
_WAIT = 30.0


def _say(text: str = "") -> None:
    print(text, flush=True)


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
    if call["channel"] == "flashcall":
        _say(f"phone>   missed call from +{call['from']}; its last digits are the code")
    else:
        _say(f"phone>   {call['channel']} with the code {call['code']}")

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


def run_demo(*, redis_url: str | None = None, routing_path: Path = REPO_ROUTING) -> int:
    _say(f"starting redis-server, the provider sandbox and one worker, routing by {routing_path}...")
    with local_stack(redis_url=redis_url, routing_path=routing_path) as stack:
        worker = stack.start_worker(processes=1, threads=16)
        _say(f"  redis {stack.redis_url}, sandbox {stack.sandbox_url}, logs in {stack.log_dir}")
        _say()
        try:
            _play(stack)
        except FlashcallError:
            _say("worker log (last lines):")
            _say(worker.log_tail())
            raise
    _say("stopped everything the demo started.")
    return 0
