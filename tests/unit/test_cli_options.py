"""What `flashcall` and each of its commands take: `--version`, every option's default in
its --help, and `flashcall worker`'s own parser in front of Dramatiq's: the few Dramatiq
options it passes on, and every other option refused with its usage line and status 2."""

from __future__ import annotations

import argparse
import dataclasses
from importlib.metadata import version
from pathlib import Path

import pytest

from worker.cli import _RECEIVER_LIMITS, _dramatiq_argv, _parser, main


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`flashcall`'s parser and each command's, at every level."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += parsers(sub)
    return found


OPTIONS = [
    pytest.param(parser, action, id=f"{parser.prog} {action.option_strings[-1]}")
    for parser in parsers(_parser())
    for action in parser._actions
    if action.option_strings and not isinstance(action, argparse._HelpAction | argparse._VersionAction)
]


def test_version_is_the_installed_package_s(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"flashcall {version('flashcall-router')}\n"


@pytest.mark.parametrize(("parser", "action"), OPTIONS)
def test_every_option_s_help_names_its_default(
    parser: argparse.ArgumentParser, action: argparse.Action
) -> None:
    shown = parser._get_formatter()._expand_help(action)

    assert "default" in shown


def test_a_default_from_the_environment_is_named_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Redis URL may hold a password: --help names the variable instead.
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@redis.internal:6379/0")

    shown = _parser().parse_args(["breakers"])
    helped = [p.format_help() for p in parsers(_parser())]

    assert shown.redis_url == "redis://:hunter2@redis.internal:6379/0"
    assert not any("hunter2" in text for text in helped)


def test_the_receiver_limits_help_gives_are_the_receiver_s_defaults() -> None:
    from worker.callbacks.app import ReceiverLimits

    defaults = {f.name.replace("_", "-"): f.default for f in dataclasses.fields(ReceiverLimits)}

    assert {option: default for option, (_, default) in _RECEIVER_LIMITS.items()} == defaults


@pytest.mark.parametrize("option", ["--bogus", "--log-file", "--use-spawn", "--path", "-v"])
def test_the_worker_refuses_an_option_it_does_not_pass_on_with_its_usage_and_status_2(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", option])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: flashcall worker ")
    assert f"flashcall worker: error: unrecognized arguments: {option}" in err


def test_the_worker_refuses_a_module_to_import_as_well(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "other.actors"])

    assert exited.value.code == 2
    assert "unrecognized arguments: other.actors" in capsys.readouterr().err


def test_the_worker_passes_the_dramatiq_options_it_takes_on_as_dramatiq_spells_them(tmp_path: Path) -> None:
    argv = [
        "worker", "--queues", "verifications", "checks", "--pid-file", "/run/flashcall.pid",
        "--watch", str(tmp_path), "--watch-include", "*.yaml", "--watch-include", "*.lua",
    ]  # fmt: skip
    args = _parser().parse_args(argv)

    assert _dramatiq_argv(args) == [
        "--queues", "verifications", "checks",
        "--pid-file", "/run/flashcall.pid",
        "--watch", str(tmp_path),
        "--watch-include", "*.yaml", "--watch-include", "*.lua",
    ]  # fmt: skip


def test_the_worker_passes_nothing_on_unless_asked() -> None:
    assert _dramatiq_argv(_parser().parse_args(["worker"])) == []


def test_dramatiq_takes_every_option_the_worker_passes_on(tmp_path: Path) -> None:
    from dramatiq.cli import make_argument_parser

    argv = [
        "worker", "--queues", "q", "--pid-file", "p", "--watch", str(tmp_path), "--watch-use-polling",
        "--watch-include", "*.yaml", "--watch-exclude", "*.tmp",
    ]  # fmt: skip
    args = _parser().parse_args(argv)

    parsed = make_argument_parser().parse_args(["worker.actors", *_dramatiq_argv(args)])  # type: ignore[no-untyped-call]

    assert (parsed.queues, parsed.pid_file, parsed.watch_use_polling) == (["q"], "p", True)
    assert (parsed.include_patterns[-1], parsed.exclude_patterns) == ("*.yaml", ["*.tmp"])
