"""`flashcall callbacks`: where it listens unless told, and the limits it refuses to start with."""

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
