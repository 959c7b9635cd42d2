"""`flashcall callbacks` and `flashcall api`: where they listen unless told, and the limits
they refuse to start with."""

from __future__ import annotations

import pytest

from worker.cli import _parser, main


def test_the_receiver_listens_on_loopback_unless_told_otherwise() -> None:
    assert _parser().parse_args(["callbacks"]).host == "127.0.0.1"


@pytest.mark.parametrize(
    "option", ["--header-timeout", "--body-timeout", "--idle-timeout", "--max-connections"]
)
def test_a_receiver_limit_below_one_is_refused_before_anything_is_served(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["callbacks", option, "0"]) == 2
    assert f"{option} must be 1 or more, not 0" in capsys.readouterr().err


def test_the_api_listens_on_loopback_unless_told_otherwise() -> None:
    assert _parser().parse_args(["api"]).host == "127.0.0.1"


@pytest.mark.parametrize(
    "option", ["--header-timeout", "--body-timeout", "--idle-timeout", "--max-connections"]
)
def test_an_api_limit_below_one_is_refused_before_anything_is_served(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["api", option, "0"]) == 2
    assert f"{option} must be 1 or more, not 0" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["0", "61", "-1"])
def test_a_check_timeout_outside_its_bounds_is_refused(
    timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["api", "--check-timeout", timeout]) == 2
    assert "--check-timeout" in capsys.readouterr().err
