"""How `flashcall` answers what goes wrong: one line on stderr, `flashcall: ` and what to
do, and a documented exit status (docs/operations.md, "Exit statuses"): 1 when something
the command needs failed or refused it (Redis unreachable, a request refused), 2 when the
command was given something it cannot take (an option, a routing file). Never a traceback.

In process, through `main`: an error it did not answer would escape it and fail the test.
Redis is 127.0.0.1:1, where nothing listens: every connection is refused at once.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from worker.cli import EXIT_FAILURE, EXIT_USAGE, _parser, main

UNREACHABLE = "redis://127.0.0.1:1/0"
ROUTING = str(Path(__file__).parents[1] / "routing.test.yaml")


def redis_commands(heartbeats: Path) -> dict[str, list[str]]:
    """Each command that asks Redis something and ends, with the arguments it needs."""
    return {
        "redis install": ["redis", "install"],
        "routing explain": ["routing", "explain", "+79991234567", "--file", ROUTING],
        "breakers": ["breakers", "--file", ROUTING],
        "fraud list": ["fraud", "list"],
        "fraud release": ["fraud", "release", "7999123"],
        "health": ["health", "--ready", "--dir", str(heartbeats), "--file", ROUTING],
    }


#: The commands that never ask Redis anything, and the servers, which start without it and
#: say so on their /ready (docs/operations.md) rather than exit: an outage must not stop them.
WITHOUT_REDIS = {"routing check", "routing schema", "providers errors", "api-key", "sandbox", "demo"}
SERVERS = {"worker", "callbacks", "api"}
#: The commands that read a routing file, given one that does not exist.
ROUTING_FILE_COMMANDS = {
    "routing check": ["routing", "check", "{missing}"],
    "routing explain": ["routing", "explain", "+79991234567", "--file", "{missing}"],
    "breakers": ["breakers", "--file", "{missing}"],
}


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_commands(sub, f"{prefix} {name}".strip())
    return found or {prefix}


@pytest.fixture
def heartbeats(tmp_path: Path) -> Path:
    """A fresh worker heartbeat: `health --ready` gets as far as asking Redis."""
    (tmp_path / "1.alive").touch()
    return tmp_path


def answered(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the command wrote on stderr (nothing on stdout)."""
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    return line


def test_every_command_is_either_one_that_asks_redis_or_one_that_does_not(heartbeats: Path) -> None:
    assert leaf_commands(_parser()) == set(redis_commands(heartbeats)) | WITHOUT_REDIS | SERVERS


@pytest.mark.parametrize("command", sorted(redis_commands(Path())))
def test_an_unreachable_redis_is_one_line_and_status_1(
    command: str, heartbeats: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", UNREACHABLE)

    status = main([*redis_commands(heartbeats)[command], "--redis-url", UNREACHABLE])

    assert status == EXIT_FAILURE
    line = answered(capsys)
    assert line.startswith("flashcall")
    assert "127.0.0.1:1" in line
    assert "Traceback" not in line


@pytest.mark.parametrize("command", sorted(ROUTING_FILE_COMMANDS))
def test_a_missing_routing_file_is_one_line_naming_it_and_status_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "absent.yaml")
    argv = [part.format(missing=missing) for part in ROUTING_FILE_COMMANDS[command]]

    status = main([*argv, "--redis-url", UNREACHABLE] if command != "routing check" else argv)

    assert status == EXIT_USAGE
    assert answered(capsys) == f"flashcall: {missing}: cannot read: No such file or directory"


def test_a_request_redis_refuses_is_one_line_and_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis

    from worker.redis import functions

    def refuse(*_: object, **__: object) -> None:
        raise redis.ResponseError("Function not found")

    monkeypatch.setattr(functions.Call, "run", refuse)

    assert main(["fraud", "list", "--redis-url", UNREACHABLE]) == EXIT_FAILURE
    assert answered(capsys) == (
        "flashcall: Redis: Function not found (is the flashcall library loaded? flashcall redis install)"
    )


def test_a_file_that_cannot_be_written_is_one_line_and_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unwritable(*_: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "out"))

    monkeypatch.setattr("worker.routing.config.json_schema", unwritable)

    assert main(["routing", "schema"]) == EXIT_FAILURE
    assert answered(capsys) == f"flashcall: {tmp_path / 'out'}: Permission denied"


def test_a_number_explain_cannot_read_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routing", "explain", "12345", "--file", ROUTING]) == EXIT_USAGE
    assert answered(capsys).startswith("flashcall: '12345' is not a Russian number")


def test_a_redis_that_never_answers_is_one_line_and_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Connections are taken (the backlog) and never answered, as a frozen Redis does.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        monkeypatch.setattr("worker.cli.REDIS_TIMEOUT_S", 0.2)

        status = main(["fraud", "list", "--redis-url", f"redis://127.0.0.1:{port}/0"])

    assert status == EXIT_FAILURE
    assert answered(capsys).startswith("flashcall: Redis: Timeout")
