"""The redis-cli and curl examples of docs/protocol.md and README.md, run against a real
Redis, worker and HTTP API.

The conventions are stated at the top of docs/protocol.md. A runnable example is a
```console block right after an HTML comment `example: NAME` (optionally `code=DIGITS`);
each `$ redis-cli ...` line runs as `redis-cli -p PORT ...`, and its output must be the
lines under it. An example whose name ends in `-curl` is the HTTP twin of the example
before it: each `$ curl ...` line runs in a POSIX shell as written, with the API's real
address for http://127.0.0.1:8800 and FLASHCALL_API_KEY set to the `shop` key. `<name>`
in an output line matches any text and remembers it for later commands of the same
example; JSON objects are compared as JSON.

Two ways to run them. Alone, each on the session's stack: ids `order-N`, each documented
phone and the consumer group `backend` are made unique for every run, and the shipped
routing's Telphin at 0.30 stands for the test routing's vp-main at 0.35. In order, every
example of README.md and then of docs/protocol.md on one fresh stack with the shipped
routing.yaml, as a reader runs them: ids, phones and providers as written.

The client snippets of docs/protocol.md are compiled where their toolchain is installed
(Go: `go vet`; Node: `node --check`; PHP: `php -l`) and run against a stack where their
Redis client is too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from flashcall_dev.sandbox import default_provider_ports
from flashcall_dev.sandbox.app import PROVIDERS as SANDBOX_PROVIDERS
from flashcall_dev.stack import REPO_ROUTING, LocalStack, free_port, local_stack
from tests.support import API_KEY, Api, Sandbox
from worker.api.problems import REASONS
from worker.core import keys
from worker.core.phone import mask
from worker.redis import functions
from worker.redis.library import library_version
from worker.routing.config import load_routing, url_override_variable
from worker.routing.select import exploring

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parents[2]
DOC = REPOSITORY / "docs" / "protocol.md"
README = REPOSITORY / "README.md"

_EXAMPLE = re.compile(
    r"^<!-- example: (?P<name>[\w-]+)(?P<attrs>(?: \w+=\S+)*) -->\n```console\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
_PLACEHOLDER = re.compile(r"<([^<>\n]+)>")
_SENTINEL = re.compile(r"@@(\d+)@@")
_ID = re.compile(r"\border-\d+\b")
#: The documented phones, national part: 999 123-45-67 and its neighbours, in every form
#: shown (+7..., 7..., 8 (999) 123-45-67, masked +7999*****67).
_NATIONAL = re.compile(r"(?<!\d)([78]?)(999123\d{4})(?!\d)")
_SPACED = re.compile(r"\((999)\) (123)-(\d\d)-(\d\d)")
_MASKED = re.compile(r"\+7999\*{5}(\d\d)")
_GROUP = re.compile(r"\bbackend\b")
_CODE = re.compile(r'("code":")(\d+)(")')
_TABLE_ERROR = re.compile(r"^\|.*\| `(ERR flashcall: [^`]+)` \|$", re.MULTILINE)

#: Where the curl examples find the API: `flashcall api`'s default address.
DOC_API = "http://127.0.0.1:8800"
CURL_SUFFIX = "-curl"
#: Examples with no HTTP twin: the API serves start, check, status and cancel only.
REDIS_ONLY = frozenset({"version", "events", "direct-start", "dead-letter"})
#: Errors of the table no HTTP request can cause: the API always sends a well-formed second
#: argument (its key names are checked when it loads them, and it draws a new reply token
#: for every check).
NOT_OVER_HTTP = (
    "ERR flashcall: the second argument must be",
    "ERR flashcall: 'api_key' must be",
    "ERR flashcall: 'reply' must be",
    "ERR flashcall: 'reply' was used",
)
#: Commands that only read: retried until their output matches, as verifications move on
#: asynchronously.
READ_ONLY_COMMANDS = frozenset(
    {"FCALL_RO", "ZSCORE", "HGET", "HEXISTS", "EXISTS", "LLEN", "LRANGE", "XLEN", "XRANGE", "XREVRANGE"}
)
#: The functions the examples call with FCALL that only read.
READ_ONLY_FUNCTIONS = frozenset({functions.status("order-1").name, functions.version().name})
RETRY_FOR_S = 20.0
#: Examples that read the shared event stream run again (with new ids) if another
#: verification's event came in between.
STREAM_ATTEMPTS = 3


class Mismatch(AssertionError):
    """A command's output is not the one the documentation shows."""


@dataclass(frozen=True)
class Step:
    command: str
    expected: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    name: str
    code: str | None
    steps: tuple[Step, ...]

    @property
    def reads_stream(self) -> bool:
        return any(re.search(r"\bXREAD(GROUP)?\b", step.command) for step in self.steps)

    @property
    def over_http(self) -> bool:
        return self.name.endswith(CURL_SUFFIX)


def load_examples(text: str) -> list[Example]:
    examples = []
    for found in _EXAMPLE.finditer(text):
        attrs = dict(pair.split("=", 1) for pair in found["attrs"].split())
        steps: list[tuple[str, list[str]]] = []
        for line in found["body"].splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
            else:
                raise ValueError(f"example {found['name']}: output before the first command: {line!r}")
        examples.append(
            Example(
                name=found["name"],
                code=attrs.get("code"),
                steps=tuple(Step(command, tuple(output)) for command, output in steps),
            )
        )
    return examples


EXAMPLES = load_examples(DOC.read_text(encoding="utf-8"))
README_EXAMPLES = load_examples(README.read_text(encoding="utf-8"))
REDIS_EXAMPLES = [example for example in EXAMPLES if not example.over_http]
CURL_EXAMPLES = [example for example in EXAMPLES if example.over_http]


# Matching ---------------------------------------------------------------------------


def match_text(expected: str, actual: str) -> dict[str, str] | None:
    """The placeholders' values if `actual` is `expected` with its placeholders filled in."""
    names: list[str] = []
    pattern, position = "", 0
    for found in _PLACEHOLDER.finditer(expected):
        pattern += re.escape(expected[position : found.start()]) + "(.+?)"
        names.append(found[1])
        position = found.end()
    pattern += re.escape(expected[position:])
    matched = re.fullmatch(pattern, actual)
    return dict(zip(names, matched.groups(), strict=True)) if matched else None


def _json_pattern(expected: str) -> tuple[Any, list[str]]:
    """The expected JSON with each placeholder turned into a sentinel string, and their names."""
    names: list[str] = []
    out: list[str] = []
    in_string, i = False, 0
    while i < len(expected):
        char = expected[i]
        placeholder = _PLACEHOLDER.match(expected, i) if char == "<" else None
        if placeholder:
            token = f"@@{len(names)}@@"
            names.append(placeholder[1])
            out.append(token if in_string else f'"{token}"')
            i = placeholder.end()
            continue
        if in_string and char == "\\":
            out.append(expected[i : i + 2])
            i += 2
            continue
        if char == '"':
            in_string = not in_string
        out.append(char)
        i += 1
    return json.loads("".join(out)), names


def _same(pattern: Any, value: Any, names: list[str], captured: dict[str, str]) -> bool:
    if isinstance(pattern, dict):
        return (
            isinstance(value, dict)
            and pattern.keys() == value.keys()
            and all(_same(pattern[key], value[key], names, captured) for key in pattern)
        )
    if isinstance(pattern, list):
        return (
            isinstance(value, list)
            and len(pattern) == len(value)
            and all(_same(p, v, names, captured) for p, v in zip(pattern, value, strict=True))
        )
    if isinstance(pattern, str) and _SENTINEL.search(pattern):
        text = value if isinstance(value, str) else json.dumps(value)
        parts = _SENTINEL.split(pattern)  # literal, index, literal, index, ..., literal
        regex = "".join(re.escape(part) if n % 2 == 0 else "(.+?)" for n, part in enumerate(parts))
        matched = re.fullmatch(regex, text)
        if matched is None:
            return False
        for index, group in zip(parts[1::2], matched.groups(), strict=True):
            captured[names[int(index)]] = group
        return True
    return type(pattern) is type(value) and pattern == value


def match_json(expected: str, actual: str) -> dict[str, str] | None:
    """Like match_text, for a JSON object: key order is not significant."""
    try:
        value = json.loads(actual)
    except ValueError:
        return None
    pattern, names = _json_pattern(expected)
    captured: dict[str, str] = {}
    return captured if _same(pattern, value, names, captured) else None


def match_output(expected: list[str], actual: list[str]) -> dict[str, str] | None:
    if len(expected) != len(actual):
        return None
    captured: dict[str, str] = {}
    for want, got in zip(expected, actual, strict=True):
        found = match_json(want, got) if want.startswith("{") else match_text(want, got)
        if found is None:
            return None
        captured.update(found)
    return captured


# Running ----------------------------------------------------------------------------


def redis_cli(argv: list[str]) -> list[str]:
    """Output lines, as redis-cli prints them when not on a terminal (trailing blank lines dropped)."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def curl(command: str, env: dict[str, str]) -> list[str]:
    """Output lines of a curl command line run by a shell, as a reader would paste it."""
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False, env=env
    )
    lines = (done.stdout + done.stderr).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def curl_env(api_key: str, home: Path) -> dict[str, str]:
    """The environment of the curl examples: the key, and nothing of the machine's that would
    change what curl prints (a ~/.curlrc, a proxy that does not reach 127.0.0.1)."""
    env = {name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")}
    env.update({"FLASHCALL_API_KEY": api_key, "HOME": str(home), "CURL_HOME": str(home)})
    env.update({"XDG_CONFIG_HOME": str(home)})
    return env


def _curl_reads_only(command: str) -> bool:
    """A GET: no body, no other method."""
    argv = shlex.split(command)
    return not any(arg in ("-d", "--data", "--data-raw", "-X", "--request") for arg in argv)


def _spaced(phone: str) -> str:
    national = phone[1:]
    return f"({national[:3]}) {national[3:6]}-{national[6:8]}-{national[8:]}"


def documented_phones(example: Example) -> list[str]:
    """The national parts of the phones an example shows, in order of appearance."""
    text = "\n".join(line for step in example.steps for line in (step.command, *step.expected))
    text = _SPACED.sub(lambda m: "".join(m.groups()), text)
    return list(dict.fromkeys(national for _, national in _NATIONAL.findall(text)))


def _read_only(argv: list[str]) -> bool:
    command = argv[0].upper()
    return command in READ_ONLY_COMMANDS or (
        command == "FCALL" and len(argv) > 1 and argv[1] in READ_ONLY_FUNCTIONS
    )


class Run:
    """One run of an example: unique ids, the values its placeholders matched, what to clean up."""

    def __init__(
        self,
        example: Example,
        *,
        port: int,
        sandbox: Sandbox,
        new_phone: Callable[[], str] | None = None,
        api: Api | None = None,
        curl_env: dict[str, str] | None = None,
    ) -> None:
        """`new_phone` makes the session's unique numbers that stand for the documented ones;
        without it the example runs verbatim: its ids, phones and providers as written."""
        self.example = example
        self.port = port
        self.api = api
        self.curl_env = curl_env
        self.sandbox = sandbox
        self.verbatim = new_phone is None
        self.suffix = "" if self.verbatim else f"-{secrets.token_hex(4)}"
        self.phones = {
            national: national if new_phone is None else new_phone()[1:]
            for national in documented_phones(example)
        }
        self.ids: dict[str, str] = {}
        self.groups: dict[str, str] = {}
        self.captured: dict[str, str] = {}
        self.started_at = time.time()

    @property
    def phone(self) -> str:
        """The number the example's codes reach, as 7XXXXXXXXXX: its first phone's."""
        assert self.phones, f"example {self.example.name}: a code= example shows no phone"
        return "7" + next(iter(self.phones.values()))

    def _masked(self, found: re.Match[str]) -> str:
        shown = [doc for doc in self.phones if doc.endswith(found[1])]
        return mask("7" + self.phones[shown[0]]) if shown else found[0]

    def unique(self, text: str) -> str:
        text = _ID.sub(lambda m: self.ids.setdefault(m[0], f"{m[0]}{self.suffix}"), text)
        text = _GROUP.sub(lambda m: self.groups.setdefault(m[0], f"{m[0]}{self.suffix}"), text)
        if self.verbatim:
            return text
        text = _MASKED.sub(self._masked, text)
        text = _SPACED.sub(
            lambda m: _spaced("7" + self.phones.get("".join(m.groups()), "".join(m.groups()))), text
        )
        return _NATIONAL.sub(lambda m: m[1] + self.phones.get(m[2], m[2]), text)

    def delivered_codes(self) -> list[str]:
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            codes = [
                message["code"]
                for message in self.sandbox.inbox(self.phone)
                if message["at"] >= self.started_at - 1
            ]
            if codes:
                return codes
            if time.monotonic() > deadline:
                raise AssertionError(f"example {self.example.name}: no code reached {self.phone}")
            time.sleep(0.1)

    def _code(self, found: re.Match[str]) -> str:
        documented = found[2]
        delivered = self.delivered_codes()
        if documented == self.example.code:
            code = delivered[0]
        else:
            # A documented wrong code must stay wrong, even if the dice made it right.
            code = documented
            while code in delivered:
                code = f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"
        return found[1] + code + found[3]

    def _captured(self, found: re.Match[str]) -> str:
        name = found[1]
        if name not in self.captured:
            raise AssertionError(f"example {self.example.name}: <{name}> is used before any output set it")
        return self.captured[name]

    def argv(self, command: str) -> list[str]:
        command = _PLACEHOLDER.sub(self._captured, self.unique(command))
        argv = shlex.split(command)
        assert argv[0] == "redis-cli", f"example {self.example.name}: not a redis-cli command: {command}"
        if self.example.code is not None:
            argv = [_CODE.sub(self._code, arg) for arg in argv]
        return argv[1:]

    def curl_command(self, command: str) -> str:
        """The command line with this run's ids, phone and code, and the API's real address."""
        assert self.api is not None, f"example {self.example.name}: a curl example needs the API"
        command = _PLACEHOLDER.sub(self._captured, self.unique(command))
        assert command.startswith("curl "), f"example {self.example.name}: not a curl command: {command}"
        if self.example.code is not None:
            command = _CODE.sub(self._code, command)
        return command.replace(DOC_API, self.api.url)

    def expected(self, lines: tuple[str, ...]) -> list[str]:
        return [self.unique(line) for line in lines]

    def _runner(self, command: str) -> tuple[str, Callable[[], list[str]], bool]:
        """What the step runs (as the failure message shows it), how, and whether it only reads."""
        if self.example.over_http:
            line = self.curl_command(command)
            env = self.curl_env
            assert env is not None, f"example {self.example.name}: a curl example needs curl's environment"
            return line, lambda: curl(line, env), _curl_reads_only(line)
        argv = self.argv(command)
        return (
            f"redis-cli {shlex.join(argv)}",
            lambda: redis_cli(["redis-cli", "-p", str(self.port), *argv]),
            _read_only(argv),
        )

    def play(self) -> None:
        for step in self.example.steps:
            shown, run, reads_only = self._runner(step.command)
            expected = self.expected(step.expected)
            deadline = time.monotonic() + (RETRY_FOR_S if reads_only else 0)
            while True:
                actual = run()
                captured = match_output(expected, actual)
                if captured is not None:
                    self.captured.update(captured)
                    break
                if time.monotonic() >= deadline:
                    raise Mismatch(
                        f"example {self.example.name}: $ {shown}\n"
                        "expected:\n  " + "\n  ".join(expected) + "\ngot:\n  " + "\n  ".join(actual)
                    )
                time.sleep(0.2)

    def clean_up(self, client: redis.Redis) -> None:
        """Cancel what the example started, once no call of it is under way, so that no
        event of it lands in a later example; drop its consumer groups."""
        for verification_id in self.ids.values():
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                status = functions.status(verification_id).run(client)["status"]
                if status not in ("pending", "sending"):
                    break
                time.sleep(0.1)
            functions.cancel(verification_id).run(client)
        for group in self.groups.values():
            client.xgroup_destroy(keys.EVENTS, group)


@dataclass(frozen=True)
class DocsStack:
    """Redis, the sandbox, a worker and the API with the `shop` key, on one routing file."""

    port: int
    sandbox: Sandbox
    api: Api
    client: redis.Redis


@contextlib.contextmanager
def docs_stack(routing_path: Path) -> Iterator[DocsStack]:
    with local_stack(routing_path=routing_path) as started:
        started.start_worker(processes=1, threads=32)
        metrics_port = free_port()
        process, url = started.start_api(keys=f"shop:{API_KEY}", metrics_port=metrics_port)
        api = Api(
            url=url, key=API_KEY, metrics_url=f"http://127.0.0.1:{metrics_port}/metrics", process=process
        )
        port = urlsplit(started.redis_url).port
        assert port is not None
        control = Sandbox(started.sandbox_url)
        connection = redis.Redis.from_url(started.redis_url, decode_responses=True)
        try:
            yield DocsStack(port=port, sandbox=control, api=api, client=connection)
        finally:
            connection.close()
            control.close()


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsStack]:
    """For the examples one at a time: the shipped routing.yaml, ranked statically, so that
    the providers the examples show do not move however many of them run (learned routing
    explores 5% of attempts, chosen by their ids, and learns from what it sees)."""
    routing = yaml.safe_load(REPO_ROUTING.read_text(encoding="utf-8"))
    del routing["learning"]
    path = tmp_path_factory.mktemp("routing") / "routing.yaml"
    path.write_text(yaml.safe_dump(routing), encoding="utf-8")
    with docs_stack(path) as started:
        yield started


@pytest.fixture(scope="module")
def fresh() -> Iterator[DocsStack]:
    """For the examples in order: the shipped routing.yaml as it is."""
    with docs_stack(REPO_ROUTING) as started:
        yield started


@pytest.fixture
def client(stack: LocalStack) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    yield connection
    connection.close()


@pytest.fixture
def cli(stack: LocalStack) -> Callable[..., list[str]]:
    port = urlsplit(stack.redis_url).port
    return lambda *args: redis_cli(["redis-cli", "-p", str(port), *args])


# Tests ------------------------------------------------------------------------------


def test_protocol_doc_has_runnable_examples_with_unique_names() -> None:
    names = [example.name for example in EXAMPLES]
    assert len(names) >= 10
    assert len(names) == len(set(names))
    assert all(example.steps for example in EXAMPLES)


@pytest.mark.parametrize("example", REDIS_EXAMPLES, ids=[example.name for example in REDIS_EXAMPLES])
def test_redis_cli_example_prints_the_documented_output(
    example: Example, alone: DocsStack, new_phone: Callable[[], str]
) -> None:
    attempts = STREAM_ATTEMPTS if example.reads_stream else 1
    for attempt in range(1, attempts + 1):
        run = Run(example, port=alone.port, sandbox=alone.sandbox, new_phone=new_phone)
        try:
            run.play()
        except Mismatch:
            if attempt == attempts:
                raise
        else:
            break
        finally:
            run.clean_up(alone.client)


@pytest.mark.parametrize("example", CURL_EXAMPLES, ids=[example.name for example in CURL_EXAMPLES])
def test_curl_example_prints_the_documented_output(
    example: Example, alone: DocsStack, new_phone: Callable[[], str], tmp_path: Path
) -> None:
    env = curl_env(alone.api.key, tmp_path)
    run = Run(
        example, port=alone.port, sandbox=alone.sandbox, new_phone=new_phone, api=alone.api, curl_env=env
    )
    try:
        run.play()
    finally:
        run.clean_up(alone.client)


def test_every_example_the_api_can_serve_has_its_curl_twin_right_after_it() -> None:
    assert {example.name for example in REDIS_EXAMPLES} >= REDIS_ONLY
    assert not EXAMPLES[0].over_http
    pairs = []
    for before, example in itertools.pairwise(EXAMPLES):
        if example.over_http:
            assert not before.over_http, f"{example.name} follows another curl example"
            pairs.append((before.name, example.name))
            assert example.code == before.code, f"{example.name}: code= differs from its twin's"
    wanted = [example.name for example in REDIS_EXAMPLES if example.name not in REDIS_ONLY]
    assert pairs == [(name, name + CURL_SUFFIX) for name in wanted]


def test_every_problem_reason_is_in_the_over_http_section() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = " ".join(text[text.index("\n## Over HTTP\n") :].split("\n## ", 2)[1].split())
    missing = [reason for reason, (status, _) in REASONS.items() if f"`{status}` `{reason}`" not in section]
    assert missing == []


def test_every_error_the_api_can_give_is_shown_by_a_curl_example() -> None:
    table = _TABLE_ERROR.findall(DOC.read_text(encoding="utf-8"))
    details = [
        _json_pattern(line)[0].get("detail", "")
        for example in CURL_EXAMPLES
        for step in example.steps
        for line in step.expected
        if line.startswith("{")
    ]
    # The size limits need requests too long to show, as with redis-cli.
    missing = [
        error
        for error in table
        if "bytes, the limit is" not in error
        and not error.startswith(NOT_OVER_HTTP)
        and not any(
            match_text(error.removeprefix("ERR flashcall: "), detail) is not None for detail in details
        )
    ]
    assert missing == []


def test_every_error_in_the_table_is_shown_by_a_runnable_example() -> None:
    table = _TABLE_ERROR.findall(DOC.read_text(encoding="utf-8"))
    assert len(table) >= 20
    shown = [line for example in EXAMPLES for step in example.steps for line in step.expected]
    # The two size limits need requests too long to show; the next test checks them. A reused
    # reply token needs a check a worker answered first (test_library_validation checks it).
    missing = [
        error
        for error in table
        if "bytes, the limit is" not in error
        and "'reply' was used" not in error
        and not any(match_text(error, line) is not None for line in shown)
    ]
    assert missing == []


def test_size_limit_errors_read_as_the_table_says(
    cli: Callable[..., list[str]], client: redis.Redis, phone: str, worker: object
) -> None:
    table = [error for error in _TABLE_ERROR.findall(DOC.read_text(encoding="utf-8")) if "limit is" in error]
    assert len(table) == 2
    verification_id = f"order-limits-{secrets.token_hex(4)}"
    too_long = {"id": verification_id, "phone": f"+{phone}", "metadata": {"note": "x" * 4100}}
    too_much_metadata = {"id": verification_id, "phone": f"+{phone}", "metadata": {"note": "x" * 1100}}

    for request, size in ((too_long, 4096), (too_much_metadata, 1024)):
        start = functions.start(json.dumps(request))
        answer = cli("FCALL", start.name, "0", *start.args)
        [documented] = [error for error in table if f"the limit is {size}" in error]
        assert len(answer) == 1
        assert match_text(documented, answer[0]) is not None, (documented, answer)
    assert functions.status(verification_id).run(client)["status"] == "not_found"


# In order, verbatim, on a fresh stack --------------------------------------------------


def test_readme_has_runnable_examples_of_redis_and_http() -> None:
    assert [example.over_http for example in README_EXAMPLES] == [False, True]


def test_the_examples_of_readme_then_protocol_run_in_order_verbatim_on_a_fresh_stack(
    fresh: DocsStack, tmp_path: Path
) -> None:
    # Each example is cleaned up before the next (what it started is canceled), so that the
    # event stream example reads its own events, not a late one of an earlier example.
    env = curl_env(fresh.api.key, tmp_path)
    for example in [*README_EXAMPLES, *EXAMPLES]:
        run = Run(example, port=fresh.port, sandbox=fresh.sandbox, api=fresh.api, curl_env=env)
        try:
            run.play()
        finally:
            run.clean_up(fresh.client)


def test_the_library_version_the_table_gives_is_the_library_version() -> None:
    text = DOC.read_text(encoding="utf-8")
    [version] = re.findall(r"^\| `flashcall_version` \| none \| the library's version, `(\d+)`", text, re.M)
    assert version == library_version()


# README.md's "By hand" ---------------------------------------------------------------


def by_hand_exports() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## By hand\n") :].split("\n## ", 2)[1]
    return dict(re.findall(r"^export (\w+)=(\S+)", section, re.M))


def test_by_hand_exports_every_credential_the_shipped_routing_enables_as_the_sandbox_has_it() -> None:
    exports = by_hand_exports()
    routing = load_routing(REPO_ROUTING, environ={})
    specs = {spec.name: spec for spec in SANDBOX_PROVIDERS}
    expected = {
        variable: specs[entry.type].credentials[credential]
        for entry in routing.providers.values()
        if entry.enabled
        for credential, variable in entry.credential_variables().items()
    }

    assert {variable: exports.get(variable) for variable in expected} == expected
    assert routing.unset_credentials(exports) == []


def test_by_hand_points_every_provider_at_the_sandbox_default_port() -> None:
    exports = by_hand_exports()
    routing = load_routing(REPO_ROUTING, environ={})
    ports = default_provider_ports()
    expected = {
        url_override_variable(name): f"http://127.0.0.1:{ports[entry.type]}"
        for name, entry in routing.providers.items()
    }

    assert {variable: exports.get(variable) for variable in expected} == expected


def test_by_hand_gives_the_api_the_key_the_curl_examples_send() -> None:
    exports = by_hand_exports()

    assert exports["FLASHCALL_API_KEYS"] == f"shop:{exports['FLASHCALL_API_KEY']}"


# Client snippets ---------------------------------------------------------------------


def snippets(language: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def _ran(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


#: The durable start's fragment, in a function of the Go program's package.
GO_FRAGMENT = """package main

import (
\t"context"
\t"log"
\t"time"

\t"github.com/redis/go-redis/v9"
)

func durableStart(ctx context.Context, rdb *redis.Client, request []byte) {
%s}
"""


def go_module(directory: Path) -> Path:
    """The Go snippets as one package: the program, and the durable start in a function."""
    [fragment, program] = snippets("go")
    assert program.startswith("package main\n")
    (directory / "main.go").write_text(program, encoding="utf-8")
    body = "".join(f"\t{line}\n" if line else "\n" for line in fragment.splitlines())
    (directory / "durable.go").write_text(GO_FRAGMENT % body, encoding="utf-8")
    return directory


needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain on PATH")


@needs_go
def test_the_go_snippets_are_gofmt_clean_go(tmp_path: Path) -> None:
    # gofmt parses without the dependencies, so this holds where go-redis cannot be fetched.
    formatted = _ran(
        ["gofmt", "-e", "-l", *(path.name for path in go_module(tmp_path).glob("*.go"))], tmp_path
    )
    assert formatted.returncode == 0, formatted.stderr
    assert formatted.stdout == ""


@needs_go
def test_the_go_snippets_build_and_pass_go_vet(tmp_path: Path) -> None:
    go_module(tmp_path)
    assert _ran(["go", "mod", "init", "snippets"], tmp_path).returncode == 0
    fetched = _ran(["go", "mod", "tidy"], tmp_path)
    if fetched.returncode != 0:
        pytest.skip(f"go mod tidy could not fetch go-redis: {fetched.stderr.strip()[-300:]}")
    for command in (["go", "vet", "./..."], ["go", "build", "./..."]):
        done = _ran(command, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr


def _for_the_stack(snippet: str, port: int, verification_id: str, phone: str) -> str:
    """The snippet pointed at the stack's Redis, with an id and a phone of its own."""
    snippet = snippet.replace("127.0.0.1:6379", f"127.0.0.1:{port}").replace("6379", str(port))
    return _NATIONAL.sub(lambda m: m[1] + phone[1:], _ID.sub(verification_id, snippet))


def _runs_into_its_event_loop(argv: list[str], cwd: Path) -> str:
    """Run a snippet that ends reading events forever: it must still be reading after a while,
    not have stopped on an error. Answers what it printed."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=15, check=False)
    except subprocess.TimeoutExpired as still_reading:
        out = still_reading.stdout
        return out.decode() if isinstance(out, bytes) else out or ""
    raise AssertionError(f"the snippet stopped ({done.returncode}):\n{done.stdout}{done.stderr}")


@pytest.mark.skipif(shutil.which("node") is None, reason="no node on PATH")
def test_the_node_snippet_is_valid_javascript(tmp_path: Path) -> None:
    [snippet] = snippets("js")
    (tmp_path / "snippet.mjs").write_text(snippet, encoding="utf-8")
    checked = _ran(["node", "--check", "snippet.mjs"], tmp_path)
    assert checked.returncode == 0, checked.stderr


#: Where `npm ci --prefix tests/snippets/node` (.ci/run) installs node-redis, locked.
SNIPPET_NODE_MODULES = REPOSITORY / "tests" / "snippets" / "node" / "node_modules"


def node_modules_with(package: str) -> Path | None:
    """A node_modules directory holding `package`: tests/snippets/node's, FLASHCALL_NODE_MODULES,
    or npm's global one. An ES module finds packages only in the node_modules of its own
    directory or above it, so the test links the one found beside the snippet."""
    candidates = [SNIPPET_NODE_MODULES]
    if os.environ.get("FLASHCALL_NODE_MODULES"):
        candidates.append(Path(os.environ["FLASHCALL_NODE_MODULES"]))
    if shutil.which("npm") is not None:
        found = _ran(["npm", "root", "--global"], REPOSITORY, timeout=30)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(Path(found.stdout.strip()))
    return next((path for path in candidates if (path / package / "package.json").is_file()), None)


def test_the_node_snippet_starts_a_verification_and_reads_events(
    stack: LocalStack, worker: object, new_phone: Callable[[], str], client: redis.Redis, tmp_path: Path
) -> None:
    modules = node_modules_with("redis") if shutil.which("node") is not None else None
    if modules is None:
        pytest.skip("no node, or no node-redis: npm ci --prefix tests/snippets/node installs it")
    [snippet] = snippets("js")
    verification_id = f"order-node-{secrets.token_hex(4)}"
    port = urlsplit(stack.redis_url).port
    assert port is not None
    (tmp_path / "node_modules").symlink_to(modules, target_is_directory=True)
    (tmp_path / "snippet.mjs").write_text(_for_the_stack(snippet, port, verification_id, new_phone()))

    printed = _runs_into_its_event_loop(["node", "snippet.mjs"], tmp_path)

    assert "pending true" in printed
    # Canceled, unless the snippet's code happened to be the one delivered.
    assert functions.status(verification_id).run(client)["status"] in ("canceled", "approved")


@pytest.mark.skipif(shutil.which("php") is None, reason="no php on PATH")
def test_the_php_snippet_is_valid_php(tmp_path: Path) -> None:
    [snippet] = snippets("php")
    (tmp_path / "snippet.php").write_text(snippet, encoding="utf-8")
    checked = _ran(["php", "-l", "snippet.php"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _php_has_redis() -> bool:
    return shutil.which("php") is not None and "redis" in _ran(["php", "-m"], REPOSITORY).stdout.split()


@pytest.mark.skipif(not _php_has_redis(), reason="php has no redis extension (php -m)")
def test_the_php_snippet_starts_a_verification_and_reads_events(
    stack: LocalStack, worker: object, new_phone: Callable[[], str], client: redis.Redis, tmp_path: Path
) -> None:
    [snippet] = snippets("php")
    verification_id = f"order-php-{secrets.token_hex(4)}"
    port = urlsplit(stack.redis_url).port
    assert port is not None
    (tmp_path / "snippet.php").write_text(_for_the_stack(snippet, port, verification_id, new_phone()))

    _runs_into_its_event_loop(["php", str(tmp_path / "snippet.php")], tmp_path)

    # Canceled, unless the snippet's code happened to be the one delivered.
    assert functions.status(verification_id).run(client)["status"] in ("canceled", "approved")


def test_no_documented_verification_explores_on_its_first_attempt() -> None:
    # Learned routing explores a share of attempts chosen by the verification's id: an id
    # that explored would show a reader another provider than the page does.
    learning = load_routing(REPO_ROUTING, environ={}).learning
    assert learning is not None
    ids = {
        found
        for example in [*README_EXAMPLES, *EXAMPLES]
        for step in example.steps
        for found in _ID.findall(step.command)
    }
    assert [name for name in sorted(ids) if exploring(name, 0, learning.explore)] == []
