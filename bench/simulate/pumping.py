"""The pumping scenario of `make simulate`: steady legitimate traffic, then a bot that starts
verifications across a few number ranges at ten times its rate and approves none.

Unlike the routing scenarios it runs in real time: the conversion guard counts starts in
windows of Redis's own clock, which flashcall_start reads, so the simulation cannot move
it. Everything is the product's own: `flashcall worker` with routing.yaml as shipped plus
the guard (its windows scaled down so that the run takes minutes, its thresholds as
shipped), the sandbox placing every call, users who read their code from the sandbox's
inbox and type it. What it measures: the calls the attack got paid for before the guard
held its ranges, the legitimate starts refused, and how soon a range was released once
the attack stopped.
"""

from __future__ import annotations

import heapq
import json
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import redis
import yaml

from bench import harness
from bench.progress import Progress
from flashcall_dev.stack import REPO_ROUTING
from worker.core import keys
from worker.core.phone import is_valid_russian
from worker.redis import functions
from worker.routing.config import GuardConfig

__all__ = ["Plan", "run"]

#: The attack's ranges: numbers of MTS, MegaFon and Beeline, each range 10,000 numbers.
BOT_RANGES = ("7916555", "7926555", "7903555")
CALLS_TARGET = 50
REFUSED_TARGET = 0.001


@dataclass(frozen=True, slots=True)
class Plan:
    legit_per_s: float = 10.0
    bot_factor: float = 10.0
    before_s: float = 40.0
    """Legitimate traffic alone, before the attack."""
    attack_s: float = 30.0
    after_s: float = 60.0
    """Legitimate traffic after the attack stopped: when its ranges are released."""
    typing_s: tuple[float, float] = (1.0, 4.0)
    never_type: float = 0.03
    seed: int = 7
    guard: GuardConfig = field(
        default_factory=lambda: GuardConfig(window=60, history=1800, hold=20, max_hold=600)
    )
    """The shipped thresholds, with windows scaled down so that the run takes minutes."""

    @classmethod
    def quick(cls) -> Plan:
        return cls(before_s=8, attack_s=8, after_s=30)


@dataclass
class _Seen:
    """What the event stream told, as it told it."""

    delivered: dict[str, str] = field(default_factory=dict)
    """Verification -> its cost, for each delivered."""
    holds: list[tuple[float, str]] = field(default_factory=list)
    releases: list[tuple[float, str, str]] = field(default_factory=list)


def _routing_file(guard: GuardConfig) -> Path:
    document = yaml.safe_load(REPO_ROUTING.read_text(encoding="utf-8"))
    document.setdefault("fraud", {})["guard"] = {
        "window": f"{guard.window:g}s",
        "history": f"{guard.history:g}s",
        "min_starts": guard.min_starts,
        "rise": guard.rise,
        "min_conversion": guard.min_conversion,
        "hold": f"{guard.hold:g}s",
        "max_hold": f"{guard.max_hold:g}s",
    }
    path = Path(tempfile.mkdtemp(prefix="flashcall-pumping-")) / "routing.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _legit_numbers(seed: int) -> Iterator[str]:
    draw = random.Random(seed)  # noqa: S311 - simulated users, not a secret
    while True:
        number = "79" + f"{draw.randrange(10**9):09d}"
        if is_valid_russian(number) and number[:7] not in BOT_RANGES:
            yield number


def _paced(per_s: float, seconds: float, act: Callable[[int], None]) -> None:
    began = time.monotonic()
    for n in range(int(per_s * seconds)):
        time.sleep(max(0.0, began + n / per_s - time.monotonic()))
        act(n)


def run(plan: Plan, say: Callable[[str], None]) -> dict[str, Any]:
    """The scenario once, on a stack of its own."""
    with harness.stack(0, _routing_file(plan.guard)) as started:
        worker = harness.start_project(started, processes=1)
        try:
            return _play(plan, started.redis_url, started.sandbox_url, say)
        finally:
            worker.stop()


def _play(plan: Plan, redis_url: str, sandbox_url: str, say: Callable[[str], None]) -> dict[str, Any]:
    seen = _Seen()
    answers: dict[str, dict[str, Any]] = {}
    phones: dict[str, str] = {}
    typing: list[tuple[float, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    draw = random.Random(plan.seed)  # noqa: S311 - simulated users, not a secret

    def follow() -> None:
        reader = redis.Redis.from_url(redis_url, decode_responses=True)
        cursor = "$"
        while not stop.is_set():
            answer = cast(list[Any], reader.xread({keys.EVENTS: cursor}, block=200, count=1000) or [])
            for _, entries in answer:
                for entry_id, fields in entries:
                    cursor = entry_id
                    _take(fields)
        reader.close()

    def _take(fields: dict[str, str]) -> None:
        now = time.monotonic()
        event = fields["event"]
        if event == "delivered":
            verification = fields["id"]
            seen.delivered[verification] = fields.get("cost", "0")
            if verification.startswith("legit-") and draw.random() >= plan.never_type:
                with lock:
                    heapq.heappush(typing, (now + draw.uniform(*plan.typing_s), verification))
        elif event == "fraud_held":
            seen.holds.append((now, fields["range"]))
        elif event == "fraud_released":
            seen.releases.append((now, fields["range"], fields.get("reason", "")))

    def type_codes() -> None:
        typist = redis.Redis.from_url(redis_url, decode_responses=True)
        with httpx.Client(base_url=sandbox_url, timeout=5) as sandbox:
            while not stop.is_set():
                with lock:
                    due = typing[0] if typing and typing[0][0] <= time.monotonic() else None
                    if due:
                        heapq.heappop(typing)
                if due is None:
                    time.sleep(0.02)
                    continue
                code = harness.inbox(sandbox, phones[due[1]])["code"]
                functions.check(json.dumps({"id": due[1], "code": code})).run(typist)
        typist.close()

    def starter(prefix: str, numbers: Iterator[str]) -> Callable[[int], None]:
        producer = redis.Redis.from_url(redis_url, decode_responses=True)

        def start(n: int) -> None:
            verification, phone = f"{prefix}-{n}", next(numbers)
            phones[verification] = phone
            answers[verification] = functions.start(
                json.dumps({"id": verification, "phone": "+" + phone})
            ).run(producer)

        return start

    legit = starter("legit", _legit_numbers(plan.seed))
    bot_draw = random.Random(plan.seed + 1)  # noqa: S311 - the bot's numbers
    bot = starter("bot", (f"{BOT_RANGES[n % 3]}{bot_draw.randrange(10**4):04d}" for n in range(10**9)))
    helpers = [threading.Thread(target=follow), threading.Thread(target=type_codes)]
    for helper in helpers:
        helper.start()
    total_s = plan.before_s + plan.attack_s + plan.after_s
    legit_thread = threading.Thread(target=_paced, args=(plan.legit_per_s, total_s, legit))
    began = time.monotonic()
    # The last users type their codes; the last releases come.
    settle_s = plan.typing_s[1] + 2
    with Progress(
        "pumping",
        total_s + settle_s,
        lambda: time.monotonic() - began,
        duration=True,
        figures=lambda: f"{len(answers)} started, {len(seen.holds)} holds, {len(seen.releases)} releases",
    ):
        legit_thread.start()
        say(f"pumping: legitimate traffic at {plan.legit_per_s:g}/s for {total_s:g} s")
        time.sleep(plan.before_s)
        attack_began = time.monotonic()
        say(f"pumping: the bot at {plan.legit_per_s * plan.bot_factor:g}/s over {len(BOT_RANGES)} ranges")
        _paced(plan.legit_per_s * plan.bot_factor, plan.attack_s, bot)
        attack_ended = time.monotonic()
        legit_thread.join()
        time.sleep(settle_s)
    stop.set()
    for helper in helpers:
        helper.join()
    return _figures(plan, answers, seen, began=began, attack=(attack_began, attack_ended))


def _figures(
    plan: Plan,
    answers: dict[str, dict[str, Any]],
    seen: _Seen,
    *,
    began: float,
    attack: tuple[float, float],
) -> dict[str, Any]:
    legit = {v: a for v, a in answers.items() if v.startswith("legit-")}
    bot = {v: a for v, a in answers.items() if v.startswith("bot-")}
    refused = [v for v, a in legit.items() if a.get("reason") == "fraud_suspected"]
    paid = [v for v in seen.delivered if v.startswith("bot-")]
    roubles = sum(float(seen.delivered[v]) for v in paid)
    first_hold = {r: t for t, r in reversed(seen.holds)}
    released = {r: t for t, r, _ in seen.releases if t >= attack[1]}
    return {
        "plan": {
            "legit_per_s": plan.legit_per_s,
            "bot_per_s": plan.legit_per_s * plan.bot_factor,
            "bot_ranges": list(BOT_RANGES),
            "before_s": plan.before_s,
            "attack_s": plan.attack_s,
            "after_s": plan.after_s,
            "guard": plan.guard.model_dump(),
        },
        "legit_started": len(legit),
        "legit_refused": len(refused),
        "legit_refused_share": round(len(refused) / max(len(legit), 1), 5),
        "bot_started": len(bot),
        "bot_refused": sum(1 for a in bot.values() if a.get("status") == "failed"),
        "calls_paid_to_attack": len(paid),
        "roubles_paid_to_attack": round(roubles, 2),
        "held_after_attack_began_s": {r: round(t - attack[0], 1) for r, t in first_hold.items()},
        "released_after_attack_stopped_s": {r: round(t - attack[1], 1) for r, t in released.items()},
        "holds": len(seen.holds),
        "wall_s": round(time.monotonic() - began, 1),
        "calls_target": CALLS_TARGET,
        "refused_target": REFUSED_TARGET,
        "met": len(paid) < CALLS_TARGET and len(refused) / max(len(legit), 1) < REFUSED_TARGET,
    }


def section(result: dict[str, Any]) -> str:
    """The scenario's part of docs/routing-quality.md."""
    plan, guard = result["plan"], result["plan"]["guard"]
    released = ", ".join(f"{r} {s:g} s" for r, s in sorted(result["released_after_attack_stopped_s"].items()))
    held = ", ".join(f"{r} {s:g} s" for r, s in sorted(result["held_after_attack_began_s"].items()))
    verdict = "met" if result["met"] else "**missed**"
    return (
        "## Traffic pumping (`pumping`)\n\n"
        f"In real time ({result['wall_s']:g} s): legitimate users at {plan['legit_per_s']:g} starts a "
        f"second, each a number of its own, who type their code 1-4 s after the call (3% never); "
        f"after {plan['before_s']:g} s a bot starts {plan['bot_per_s']:g} a second for "
        f"{plan['attack_s']:g} s over the ranges {', '.join(plan['bot_ranges'])} and types none. "
        "routing.yaml as shipped, with `fraud.guard` at its shipped thresholds (min_starts "
        f"{guard['min_starts']}, rise {guard['rise']:g}, min_conversion {guard['min_conversion']:g}) "
        f"and its windows scaled down (window {guard['window']:g} s, history {guard['history']:g} s, "
        f"hold {guard['hold']:g} s) so that the run takes minutes.\n\n"
        "| figure | measured | target |\n|---|---|---|\n"
        f"| calls paid to the attack | {result['calls_paid_to_attack']} of {result['bot_started']} starts "
        f"({result['roubles_paid_to_attack']:g} RUB) | < {result['calls_target']} |\n"
        f"| legitimate starts refused | {result['legit_refused']} of {result['legit_started']} "
        f"({result['legit_refused_share']:.2%}) | < {result['refused_target']:.1%} |\n"
        f"| each range held, after the attack began | {held or 'never'} | |\n"
        f"| each range released, after the attack stopped | {released or 'not within the run'} | |\n\n"
        f"Targets: {verdict}.\n"
    )
