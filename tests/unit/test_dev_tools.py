"""The development tools (flashcall_dev: the sandbox, the local stacks, the demo) live beside
the product, not in it: the dev venv imports them from anywhere, and an installation without
them (the production wheel, the image) answers `flashcall sandbox` and `flashcall demo` with
one line saying what they are, and status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker.cli import main


@pytest.mark.parametrize("command", ["sandbox", "demo"])
def test_a_development_command_without_the_dev_package_answers_one_line_and_status_2(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "flashcall_dev", None)

    assert main([command]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"flashcall: `flashcall {command}` is a development tool")


def test_the_dev_venv_imports_the_dev_package_from_any_directory(tmp_path: Path) -> None:
    # The editable install's path entry is the repository root, which holds flashcall_dev.
    found = subprocess.run(
        [sys.executable, "-c", "import flashcall_dev.sandbox, flashcall_dev.stack"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr
