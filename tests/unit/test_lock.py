"""uv.lock: every dependency pinned with its hashes, the venv the tests run in holds
exactly it, and deploy/Dockerfile installs the same versions. `make lint` checks that
the lock matches pyproject.toml (`uv lock --check`)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
LOCK = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def uv() -> str:
    found = ROOT / ".uv" / "bin" / "uv"
    if found.exists():
        return str(found)
    on_path = shutil.which("uv")
    if on_path is None:
        pytest.skip("uv is installed into .uv/ by make install")
    return on_path


def run_uv(uv: str, *argv: str, cwd: Path, environment: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(environment), "UV_PYTHON_DOWNLOADS": "never"}
    return subprocess.run(
        [uv, *argv, "--offline", "--python", sys.executable],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def image_sync_commands() -> list[list[str]]:
    return [shlex.split(line) for line in re.findall(r"^RUN (uv sync .*)$", DOCKERFILE, re.MULTILINE)]


def test_every_locked_package_from_an_index_carries_its_hashes() -> None:
    from_index = [package for package in LOCK["package"] if "registry" in package["source"]]
    assert from_index
    for package in from_index:
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        assert files, package["name"]
        assert all(file["hash"].startswith("sha256:") for file in files), package["name"]


def test_the_test_environment_holds_exactly_the_locked_versions(uv: str) -> None:
    # --inexact: `make bench` adds the bench extra to the same venv.
    checked = run_uv(
        uv,
        "sync",
        "--locked",
        "--extra",
        "dev",
        "--check",
        "--inexact",
        cwd=ROOT,
        environment=Path(sys.prefix),
    )
    assert checked.returncode == 0, checked.stderr


def test_the_image_installs_only_from_the_lock() -> None:
    installs = re.findall(r"^RUN (.*(?:pip|uv) .*)$", DOCKERFILE, re.MULTILINE)
    assert installs[0] == "pip install --no-cache-dir --no-deps --require-hashes -r requirements-uv.txt"
    assert installs[1:] == [" ".join(command) for command in image_sync_commands()]
    assert all("--locked" in command for command in image_sync_commands())
    assert re.search(r"^COPY pyproject.toml uv.lock ", DOCKERFILE, re.MULTILINE)


def test_the_image_and_make_install_take_uv_from_the_same_hash_checked_pin() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements-uv.txt" in makefile
    pins = re.findall(r"^uv==(\S+)", (ROOT / "requirements-uv.txt").read_text(encoding="utf-8"), re.MULTILINE)
    assert len(pins) == 1


def test_the_image_runs_the_versions_the_tests_run(uv: str, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "worker", source / "worker")
    final = image_sync_commands()[-1]
    argv = [word for word in final[1:] if word != "/usr/local/bin/python3" and word != "--python"]
    planned = run_uv(uv, *argv, "--dry-run", cwd=source, environment=tmp_path / "image")
    assert planned.returncode == 0, planned.stderr
    versions = dict(re.findall(r"^ \+ (\S+)==(\S+)$", planned.stderr, re.MULTILINE))
    assert {"dramatiq", "redis", "httpx", "pydantic"} <= versions.keys()
    assert "mypy" not in versions
    assert {name: metadata.version(name) for name in versions} == versions


def test_the_production_wheel_holds_the_worker_package_alone(uv: str, tmp_path: Path) -> None:
    built = subprocess.run(
        [uv, "build", "--wheel", "--offline", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert {name.split("/")[0] for name in names} == {"worker", f"flashcall_router-{version}.dist-info"}
    assert "worker/redis/flashcall.lua" in names
