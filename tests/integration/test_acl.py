"""The Redis users of deploy/redis/users.acl, loaded into a real redis-server.

Redis 7 checks every command a function runs (redis.call) against the caller's ACL, keys
included, so the producer profile grants exactly what the five producer functions run, on
the keys they run it on. These tests load the shipped file the way an operator does
(`aclfile` + `ACL LOAD`), with passwords made up for the run, and show what each user can
and cannot do; docs/operations.md ("Least privilege") says the same in prose.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, cast

import httpx
import pytest
import redis

from flashcall_dev.stack import LocalStack, ManagedProcess, free_port, local_stack, redis_server
from tests.conftest import TEST_ROUTING
from tests.support import CALLBACK, Sandbox
from worker.callbacks.app import create_app
from worker.client import Producer
from worker.core import keys
from worker.redis import functions
from worker.redis.broker import FlashcallBroker
from worker.redis.functions import PublishedConfig
from worker.redis.library import install
from worker.redis.store import Store
from worker.routing.config import GuardConfig
from worker.routing.operators import prefix_table

pytestmark = pytest.mark.integration

USERS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "users.acl"

#: The placeholder for each user's password in the users file.
PASSWORD_VARIABLES = {
    "flashcall-admin": "FLASHCALL_REDIS_ADMIN_PASSWORD",
    "flashcall-producer": "FLASHCALL_REDIS_PRODUCER_PASSWORD",
    "flashcall-api": "FLASHCALL_REDIS_API_PASSWORD",
    "flashcall-events": "FLASHCALL_REDIS_EVENTS_PASSWORD",
    "flashcall-worker": "FLASHCALL_REDIS_WORKER_PASSWORD",
    "flashcall-callbacks": "FLASHCALL_REDIS_CALLBACKS_PASSWORD",
}


@dataclass(frozen=True)
class AclServer:
    url: str
    passwords: dict[str, str]

    def url_of(self, user: str) -> str:
        return self.url.replace("redis://", f"redis://{user}:{self.passwords[user]}@", 1)

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url_of(user), decode_responses=True)


@contextlib.contextmanager
def acl_redis() -> Iterator[AclServer]:
    """A redis-server of its own with the shipped users file loaded and the library installed."""
    log_dir = Path(tempfile.mkdtemp(prefix="flashcall-acl-"))
    acl_file = log_dir / "users.acl"
    # Only until the profile is loaded: the readiness check of redis_server() connects as
    # the default user, which the shipped file turns off.
    acl_file.write_text("user default on nopass ~* &* +@all\n")
    passwords = {user: secrets.token_hex(16) for user in PASSWORD_VARIABLES}
    with redis_server(log_dir, name="redis-acl", args=["--aclfile", str(acl_file)]) as url:
        # What `envsubst < deploy/redis/users.acl` does at installation.
        rendered = Template(USERS_FILE.read_text()).substitute(
            {variable: passwords[user] for user, variable in PASSWORD_VARIABLES.items()}
        )
        acl_file.write_text(rendered)
        bootstrap = redis.Redis.from_url(url)
        try:
            bootstrap.acl_load()
        finally:
            bootstrap.close()
        server = AclServer(url=url, passwords=passwords)
        admin = server.client("flashcall-admin")
        install(admin)
        admin.close()
        yield server


@pytest.fixture(scope="module")
def acl_server() -> Iterator[AclServer]:
    with acl_redis() as server:
        yield server


@pytest.fixture(scope="module")
def acl_stack(acl_server: AclServer) -> Iterator[LocalStack]:
    """The sandbox beside the ACL'd Redis; the stack itself watches heartbeats as the admin."""
    with local_stack(redis_url=acl_server.url_of("flashcall-admin"), routing_path=TEST_ROUTING) as started:
        yield started


@pytest.fixture(scope="module")
def acl_worker(acl_server: AclServer, acl_stack: LocalStack) -> ManagedProcess:
    """A worker as `flashcall-worker` whose providers post to a receiver running as
    `flashcall-callbacks`."""
    _, receiver_url = acl_stack.start_callbacks(
        env={"REDIS_URL": acl_server.url_of("flashcall-callbacks")}, name="callbacks-acl"
    )
    return acl_stack.start_worker(
        env={"REDIS_URL": acl_server.url_of("flashcall-worker"), "FLASHCALL_CALLBACK_BASE_URL": receiver_url},
        name="worker-acl",
    )


@pytest.fixture
def as_producer(acl_server: AclServer) -> Iterator[Producer]:
    client = Producer.from_url(acl_server.url_of("flashcall-producer"))
    yield client
    client.close()


def refused(client: redis.Redis, command: str) -> bool:
    """Whether Redis refuses `command` (split as a shell splits it) for lack of permission."""
    try:
        client.execute_command(*shlex.split(command))  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    except redis.exceptions.NoPermissionError:
        return True
    return False


def refused_as(server: AclServer, user: str, command: str) -> bool:
    """Whether Redis refuses `command` to `user` for lack of permission."""
    client = server.client(user)
    try:
        return refused(client, command)
    finally:
        client.close()


def remove_fake_messages(server: AclServer) -> None:
    """What a test wrote onto the verifications queue, so that a later test's worker never meets it."""
    admin = server.client("flashcall-admin")
    admin.lrem(keys.queue(keys.VERIFY_QUEUE), 0, "fake")
    admin.hdel(keys.queue_messages(keys.VERIFY_QUEUE), "fake")
    admin.delete("flashcall:callback:x")
    admin.close()


def test_the_users_file_holds_placeholders_not_passwords() -> None:
    text = USERS_FILE.read_text()
    assert re.findall(r"[>#<]\S+", text) == [f">${{{variable}}}" for variable in PASSWORD_VARIABLES.values()]
    assert "nopass" not in text


def test_the_default_user_is_turned_off(acl_server: AclServer) -> None:
    anonymous = redis.Redis.from_url(acl_server.url)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    anonymous.close()


def test_a_producer_starts_a_verification(as_producer: Producer, phone: str, verification_id: str) -> None:
    answer = as_producer.start(verification_id, "+" + phone, channels=["flashcall"])
    assert (answer["status"], answer["created"]) == ("pending", True)


def test_a_producer_meets_a_numbers_limit_and_its_refusal_is_remembered(
    acl_server: AclServer, as_producer: Producer, phone: str, verification_id: str
) -> None:
    admin = acl_server.client("flashcall-admin")
    admin.lpush(keys.REFUSED, "1 aged-out")  # so that this refusal also forgets one
    admin.close()
    as_producer.start(verification_id, "+" + phone, channels=["flashcall"])

    answer = as_producer.start(verification_id + "-again", "+" + phone, channels=["flashcall"])

    assert (answer["status"], answer["reason"]) == ("failed", "rate_limited")
    assert as_producer.status(verification_id + "-again")["reason"] == "rate_limited"


def test_a_producer_meets_a_limit_on_what_starts_share(acl_server: AclServer, as_producer: Producer) -> None:
    admin = acl_server.client("flashcall-admin")
    config = PublishedConfig(
        policies=("default",),
        per_phone=((10**6, 60_000),),
        keyed={"per_ip": ((1, 60_000),), "per_operator": ((10**6, 60_000),)},
        operators=prefix_table({}),
    )
    functions.publish_config(config).run(admin)
    try:
        as_producer.start("shared-1", "+79161230001", channels=["flashcall"], client_ip="198.51.100.9")
        answer = as_producer.start(
            "shared-2", "+79161230002", channels=["flashcall"], client_ip="198.51.100.9"
        )
    finally:
        admin.delete(keys.PREFIX + "config:guards", keys.PREFIX + "config:operators")
        admin.close()

    assert (answer["reason"], answer["limit"]) == ("rate_limited", "per_ip")


def test_a_producer_meets_the_conversion_guard(acl_server: AclServer, as_producer: Producer) -> None:
    admin = acl_server.client("flashcall-admin")
    guard = GuardConfig(window=60, history=3600, min_starts=3, rise=5, min_conversion=0.5, hold=60)
    config = PublishedConfig(policies=("default",), per_phone=((10**6, 60_000),), guard=guard.published)
    functions.publish_config(config).run(admin)
    try:
        answers = [
            as_producer.start(f"pumped-{n}", f"+7900777{n:04d}", channels=["flashcall"]) for n in range(4)
        ]
    finally:
        admin.delete(keys.PREFIX + "config:guards")
        admin.close()

    assert [answer.get("reason") for answer in answers] == [None, None, "fraud_suspected", "fraud_suspected"]


def test_a_producer_reads_the_answer_of_its_check_from_the_reply_key(
    as_producer: Producer, verification_id: str
) -> None:
    # An unknown id is answered by flashcall_check itself, so no worker is needed here.
    assert as_producer.check(verification_id, "4567") == {"id": verification_id, "result": "not_found"}


def test_a_producer_cancels_a_verification(as_producer: Producer, phone: str, verification_id: str) -> None:
    as_producer.start(verification_id, "+" + phone, channels=["flashcall"])
    assert as_producer.cancel(verification_id)["status"] == "canceled"
    assert as_producer.check(verification_id, "4567")["result"] == "canceled"


def test_a_producer_reads_a_status_with_fcall_ro(
    as_producer: Producer, phone: str, verification_id: str
) -> None:
    as_producer.start(verification_id, "+" + phone, channels=["flashcall"])
    status = functions.status(verification_id).run_read_only(as_producer.client)
    assert (status["id"], status["phone"]) == (verification_id, "+7999*****" + phone[-2:])


FORBIDDEN_TO_PRODUCERS = {
    "read a verification field": "HGET flashcall:v:order-42 codes",
    "list keys": "KEYS flashcall:*",
    "scan keys": "SCAN 0 MATCH flashcall:*",
    "read events": "XREAD STREAMS flashcall:events 0",
    "read events by range": "XRANGE flashcall:events - +",
    "read events in a group": "XREADGROUP GROUP g c STREAMS flashcall:events >",
    "read queued messages, typed codes included": "HGETALL flashcall:checks.msgs",
    "read a queue": "LRANGE flashcall:checks 0 -1",
    "push at the head of the verifications queue": "LPUSH flashcall:verifications fake",
    "push at the head of the checks queue": "LPUSH flashcall:checks fake",
    "load code": "FUNCTION LOAD REPLACE x",
    "delete the library": "FUNCTION DELETE flashcall",
    "flush functions": "FUNCTION FLUSH",
    "read the library": "FUNCTION LIST WITHCODE",
    "run a script": "EVAL 'return 1' 0",
    "run a cached script": "EVALSHA e0e1f9fabfc9d4800c877a703b823ac0578ff8db 0",
    "read the configuration": "CONFIG GET *",
    "change the configuration": "CONFIG SET appendonly no",
    "flush everything": "FLUSHALL",
    "flush the database": "FLUSHDB",
    "call a worker function": "FCALL flashcall_apply_check 0 order-42 1 flashcall:reply:1 0",
    "claim an attempt": "FCALL flashcall_begin_attempt 0 order-42 0",
    "publish policies": "SADD flashcall:config:policies any",
    "change per-number limits": "SET flashcall:config:limits []",
    "delete a verification": "DEL flashcall:v:order-42",
    "read a callback token": "GET flashcall:callback:token",
    "read a breaker": "HGETALL flashcall:breaker:vp-main",
    "touch keys outside flashcall": "GET session:1",
    "list users": "ACL LIST",
}


@pytest.mark.parametrize("command", FORBIDDEN_TO_PRODUCERS.values(), ids=FORBIDDEN_TO_PRODUCERS.keys())
def test_a_producer_is_refused(as_producer: Producer, command: str) -> None:
    assert refused(as_producer.client, command)


def test_a_producer_may_wait_for_its_start_to_reach_a_replica(as_producer: Producer) -> None:
    # docs/protocol.md, "Making a start durable"; this Redis has no replica to count.
    assert as_producer.client.wait(0, 0) == 0


STILL_POSSIBLE_FOR_PRODUCERS = {
    # What the producer functions run under the producer's ACL, the producer can run itself.
    "read a verification it knows the id of": "HGETALL flashcall:v:order-42",
    "push onto the end of a queue": "RPUSH flashcall:verifications fake",
    "write a queued message body": "HSET flashcall:verifications.msgs fake {}",
    "push onto a reply key": "LPUSH flashcall:reply:1 {}",
    "append an event": "XADD flashcall:events * event fake id order-42",
    "lift a limit on what starts share": "HDEL flashcall:limit:per_ip:203.0.113.7 60000:1",
}


@pytest.mark.parametrize(
    "command", STILL_POSSIBLE_FOR_PRODUCERS.values(), ids=STILL_POSSIBLE_FOR_PRODUCERS.keys()
)
def test_what_the_producer_functions_run_stays_possible_outside_them(
    acl_server: AclServer, as_producer: Producer, command: str
) -> None:
    # docs/operations.md lists these: if Redis ever refuses them, update the docs.
    assert not refused(as_producer.client, command)
    remove_fake_messages(acl_server)


def rules_in_the_file(user: str) -> str:
    """`user`'s rules in the users file, its name and password left out."""
    (line,) = [line for line in USERS_FILE.read_text().splitlines() if line.startswith(f"user {user} ")]
    return line.removeprefix(f"user {user} on >${{{PASSWORD_VARIABLES[user]}}} ")


def test_the_api_user_has_the_producers_rules_in_the_file() -> None:
    # The API is a producer that holds the credential for backends that may not: one rule
    # more would be a right no producer has, one fewer a start or check that fails.
    assert rules_in_the_file("flashcall-api") == rules_in_the_file("flashcall-producer")


def rights(client: redis.Redis, user: str) -> dict[str, Any]:
    """What ACL GETUSER answers for `user` but its passwords, commands as sets: Redis lists
    them in the order of its hash tables, which differs from one server to another."""
    info: dict[str, Any] | None = client.acl_getuser(user)
    assert info is not None, user
    selectors = [dict(zip(selector[::2], selector[1::2], strict=True)) for selector in info["selectors"]]
    return {
        **{field: value for field, value in info.items() if field not in {"passwords", "selectors"}},
        "commands": set(info["commands"]),
        "selectors": sorted(
            ({**selector, "commands": set(selector["commands"].split())} for selector in selectors),
            key=lambda selector: str(selector["keys"]),
        ),
    }


def test_redis_gives_the_api_user_exactly_the_producers_rights(acl_server: AclServer) -> None:
    admin = acl_server.client("flashcall-admin")
    try:
        assert rights(admin, "flashcall-api") == rights(admin, "flashcall-producer")
        # A user of its own: the same rights, not the same password.
        api, producer = (
            cast(dict[str, Any], admin.acl_getuser(user)) for user in ("flashcall-api", "flashcall-producer")
        )
        assert api["passwords"] != producer["passwords"]
    finally:
        admin.close()


FORBIDDEN_TO_THE_API = {
    **FORBIDDEN_TO_PRODUCERS,
    "change a breaker": "HSET flashcall:breaker:vp-main state closed",
    "change the published configuration": "HSET flashcall:config:operators 7999 x",
    "write a callback token": "SET flashcall:callback:x {}",
    "take a providers callback": "FCALL flashcall_callback_accept 0 x",
    "record a delivery": "FCALL flashcall_attempt_delivered 0 order-42 1",
    "change users": "ACL SETUSER intruder on nopass +@all",
}


@pytest.mark.parametrize("command", FORBIDDEN_TO_THE_API.values(), ids=FORBIDDEN_TO_THE_API.keys())
def test_the_api_user_is_refused(acl_server: AclServer, command: str) -> None:
    assert refused_as(acl_server, "flashcall-api", command)


def test_the_api_serves_every_operation_as_its_own_user(
    acl_server: AclServer,
    acl_stack: LocalStack,
    acl_worker: ManagedProcess,
    phone: str,
    new_phone: Callable[[], str],
    verification_id: str,
) -> None:
    key = secrets.token_urlsafe(32)
    _, url = acl_stack.start_api(
        keys=f"shop:{key}", env={"REDIS_URL": acl_server.url_of("flashcall-api")}, name="api-acl"
    )
    reader = Producer.from_url(acl_server.url_of("flashcall-events"))
    sandbox = Sandbox(acl_stack.sandbox_url)
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=15)
    try:
        # /ready reads the library's version, a producer function like the others.
        assert http.get("/ready").status_code == 200
        started = http.post("/v1/verifications", json={"id": verification_id, "phone": "+" + phone})
        assert started.status_code == 201, started.text
        assert reader.wait_for(verification_id, {"delivered", "failed"})["event"] == "delivered"
        status = http.get(f"/v1/verifications/{verification_id}")
        assert (status.status_code, status.json()["id"]) == (200, verification_id), status.text
        code = sandbox.inbox(phone)[-1]["code"]
        # A check waits for the worker's answer with BLPOP on a reply key, as the producer does.
        checked = http.post(f"/v1/verifications/{verification_id}/check", json={"code": code})
        assert checked.json()["result"] == "approved", checked.text

        again = verification_id + "-cancel"
        # Another number: a second start to the first would meet its per-number limit.
        assert (
            http.post("/v1/verifications", json={"id": again, "phone": "+" + new_phone()}).status_code == 201
        )
        canceled = http.post(f"/v1/verifications/{again}/cancel")
        assert canceled.json()["status"] == "canceled", canceled.text
    finally:
        http.close()
        sandbox.close()
        reader.close()


COMPOSE_USERS = USERS_FILE.parent / "compose-users.sh"


def test_the_compose_redis_gives_the_api_user_the_producers_rights(
    acl_server: AclServer, tmp_path: Path
) -> None:
    # deploy/redis/compose-users.sh as the compose stack runs it, the image's entrypoint
    # replaced by one that runs the command it is given, as the image's does.
    entrypoint = tmp_path / "docker-entrypoint.sh"
    entrypoint.write_text('#!/bin/sh\nexec "$@"\n')
    entrypoint.chmod(0o755)
    password, port = secrets.token_hex(16), free_port()
    env = {
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "FLASHCALL_ACL_FILE": str(tmp_path / "users.acl"),
        "FLASHCALL_REDIS_API_PASSWORD": password,
    }
    argv = ["sh", str(COMPOSE_USERS), "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no"]  # fmt: skip
    log = (tmp_path / "redis.log").open("wb")
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    anonymous = redis.Redis(port=port, decode_responses=True)
    api = redis.Redis(port=port, username="flashcall-api", password=password, decode_responses=True)
    admin = acl_server.client("flashcall-admin")
    try:
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                if anonymous.ping():
                    break
            assert server.poll() is None, (tmp_path / "redis.log").read_text()
            time.sleep(0.05)
        # The other services of the stack still connect without a password.
        assert anonymous.acl_whoami() == "default"
        assert api.ping()  # logged in with the password of the environment
        assert refused(api, "HSET flashcall:breaker:vp-main state closed")
        assert rights(anonymous, "flashcall-api") == rights(admin, "flashcall-producer")
    finally:
        for client in (anonymous, api, admin):
            client.close()
        server.terminate()
        server.wait(timeout=10)
        log.close()


def test_an_events_reader_follows_the_stream(
    acl_server: AclServer, as_producer: Producer, phone: str, verification_id: str
) -> None:
    as_producer.start(verification_id, "+" + phone, channels=["flashcall"])
    reader = Producer.from_url(acl_server.url_of("flashcall-events"))
    try:
        assert reader.wait_for(verification_id, {"created"}, timeout=5)["status"] == "pending"
    finally:
        reader.close()


FORBIDDEN_TO_EVENT_READERS = {
    "start a verification": 'FCALL flashcall_start 0 \'{"id":"x","phone":"+79991234567"}\'',
    "read a verification": "HGETALL flashcall:v:order-42",
    "append an event": "XADD flashcall:events * event fake",
    "trim the stream": "XTRIM flashcall:events MAXLEN 0",
}


@pytest.mark.parametrize(
    "command", FORBIDDEN_TO_EVENT_READERS.values(), ids=FORBIDDEN_TO_EVENT_READERS.keys()
)
def test_an_events_reader_is_refused(acl_server: AclServer, command: str) -> None:
    assert refused_as(acl_server, "flashcall-events", command)


FORBIDDEN_TO_WORKERS = {
    "flush everything": "FLUSHALL",
    "change the configuration": "CONFIG SET appendonly no",
    "read the server's state": "INFO",
    "delete the library": "FUNCTION DELETE flashcall",
    "run new code": "EVAL 'return 1' 0",
    "touch keys outside flashcall": "GET session:1",
    "change users": "ACL SETUSER intruder on nopass +@all",
}


@pytest.mark.parametrize("command", FORBIDDEN_TO_WORKERS.values(), ids=FORBIDDEN_TO_WORKERS.keys())
def test_a_worker_is_refused(acl_server: AclServer, command: str) -> None:
    assert refused_as(acl_server, "flashcall-worker", command)


def test_the_worker_user_may_read_whether_the_primary_has_replicas(acl_server: AclServer) -> None:
    # Claims wait for a replica while the primary has one (worker/redis/replication.py).
    worker = acl_server.client("flashcall-worker")
    try:
        assert worker.info("replication")["role"] == "master"
    finally:
        worker.close()


def test_the_worker_user_returns_the_messages_a_dead_worker_held(acl_server: AclServer) -> None:
    # Dramatiq's maintenance script, run as the worker user: it names the namespace key
    # `flashcall` and lists a dead worker's acknowledgement sets with KEYS.
    queue = f"acl-{secrets.token_hex(4)}"
    admin = acl_server.client("flashcall-admin")
    admin.zadd(keys.heartbeats(), {"dead-worker": 0})
    admin.hset(keys.queue_messages(queue), "m-1", "{}")
    admin.sadd(keys.consumer_acks("dead-worker", queue), "m-1")
    worker_client = redis.Redis.from_url(acl_server.url_of("flashcall-worker"))
    try:
        FlashcallBroker(client=worker_client, middleware=[]).maintain(queue)
        assert admin.lrange(keys.queue(queue), 0, -1) == ["m-1"]
    finally:
        worker_client.close()
        admin.close()


def test_the_worker_user_runs_a_verification_end_to_end(
    acl_server: AclServer,
    acl_stack: LocalStack,
    acl_worker: ManagedProcess,
    as_producer: Producer,
    phone: str,
    verification_id: str,
) -> None:
    as_producer.start(verification_id, "+" + phone, channels=["flashcall"])
    reader = Producer.from_url(acl_server.url_of("flashcall-events"))
    sandbox = Sandbox(acl_stack.sandbox_url)
    try:
        assert reader.wait_for(verification_id, {"delivered", "failed"})["event"] == "delivered"
        code: Any = sandbox.inbox(phone)[-1]["code"]
    finally:
        reader.close()
        sandbox.close()
    answer = as_producer.check(verification_id, code)
    assert (answer["result"], answer["status"]) == ("approved", "approved")


def test_the_callback_receiver_user_takes_a_providers_callback_end_to_end(
    acl_server: AclServer,
    acl_stack: LocalStack,
    acl_worker: ManagedProcess,
    as_producer: Producer,
    phone: str,
    verification_id: str,
) -> None:
    sandbox = Sandbox(acl_stack.sandbox_url)
    reader = Producer.from_url(acl_server.url_of("flashcall-events"))
    try:
        sandbox.script(phone, {"state": "BUSY"})
        as_producer.start(verification_id, "+" + phone, channels=["flashcall"])
        # The BUSY callback, taken in by the receiver as its own user, moves the verification on.
        fallback = reader.wait_for(verification_id, {"fallback"}, timeout=15)
        assert (fallback["reason"], fallback["from_provider"]) == ("busy", "vp-main")
        [posted] = [record for record in sandbox.records(phone) if record.get("callback_status")]
        assert posted["callback_status"] == "200"
    finally:
        reader.close()
        sandbox.close()


FORBIDDEN_TO_THE_CALLBACK_RECEIVER = {
    "load code": "FUNCTION LOAD REPLACE x",
    "read the library": "FUNCTION LIST WITHCODE",
    "run a script": "EVAL 'return 1' 0",
    "list keys": "KEYS flashcall:*",
    "scan keys": "SCAN 0 MATCH flashcall:*",
    "read a verification, its phone number included": "HGETALL flashcall:v:order-42",
    "read a verification field": "HGET flashcall:v:order-42 phone",
    "change a verification": "HSET flashcall:v:order-42 status approved",
    "read events": "XRANGE flashcall:events - +",
    "append an event": "XADD flashcall:events * event fake",
    "trim the events": "XTRIM flashcall:events MAXLEN 0",
    "list the live verifications": "ZRANGE flashcall:timers:expire 0 -1",
    "move a deadline": "ZADD flashcall:timers:step 0 order-42",
    "read a queue": "LRANGE flashcall:verifications 0 -1",
    "read queued messages": "HGETALL flashcall:verifications.msgs",
    "write the checks queue": "RPUSH flashcall:checks fake",
    "push at the head of the verifications queue": "LPUSH flashcall:verifications fake",
    "delete a callback token": "DEL flashcall:callback:x",
    "start a verification": 'FCALL flashcall_start 0 \'{"id":"x","phone":"+79991234567"}\'',
    "claim an attempt": "FCALL flashcall_begin_attempt 0 order-42 0",
    "record a delivery": "FCALL flashcall_attempt_delivered 0 order-42 1",
    "approve without a code": "FCALL flashcall_apply_check 0 order-42 1 flashcall:reply:1 0",
    "read a breaker": "HGETALL flashcall:breaker:vp-main",
    "flush everything": "FLUSHALL",
    "read the configuration": "CONFIG GET *",
    "list users": "ACL LIST",
    "touch keys outside flashcall": "GET session:1",
}


@pytest.mark.parametrize(
    "command", FORBIDDEN_TO_THE_CALLBACK_RECEIVER.values(), ids=FORBIDDEN_TO_THE_CALLBACK_RECEIVER.keys()
)
def test_the_callback_receiver_user_is_refused(acl_server: AclServer, command: str) -> None:
    assert refused_as(acl_server, "flashcall-callbacks", command)


STILL_POSSIBLE_FOR_THE_CALLBACK_RECEIVER = {
    # What the callback functions run under the receiver's ACL, the receiver can run itself.
    "read a token record whose name it knows": "GET flashcall:callback:x",
    "write a token record": "SET flashcall:callback:x {}",
    "tell whether a verification it knows the id of still runs": "ZSCORE flashcall:timers:expire order-42",
    "push onto the end of the verifications queue": "RPUSH flashcall:verifications fake",
    "write a queued message body": "HSET flashcall:verifications.msgs fake {}",
    "take a message number": "INCR flashcall:seq",
}


@pytest.mark.parametrize(
    "command",
    STILL_POSSIBLE_FOR_THE_CALLBACK_RECEIVER.values(),
    ids=STILL_POSSIBLE_FOR_THE_CALLBACK_RECEIVER.keys(),
)
def test_what_the_callback_functions_run_stays_possible_outside_them(
    acl_server: AclServer, command: str
) -> None:
    # docs/operations.md lists these: if Redis ever refuses them, update the docs.
    try:
        assert not refused_as(acl_server, "flashcall-callbacks", command)
    finally:
        remove_fake_messages(acl_server)


def test_the_callback_receiver_answers_503_while_the_library_is_missing() -> None:
    # A Redis of its own: on the module's, a worker would load the library again at once.
    with acl_redis() as server:
        admin = server.client("flashcall-admin")
        admin.function_delete("flashcall")
        store = Store.connect(server.url_of("flashcall-callbacks"), pool_size=1)
        app = create_app(store)
        app.state.store = store  # what the application's lifespan does when served

        async def post() -> int:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http:
                response = await http.post("/callbacks/vp/tok-1", json=CALLBACK)
            await store.aclose()
            return response.status_code

        try:
            assert asyncio.run(post()) == 503
        finally:
            admin.close()
