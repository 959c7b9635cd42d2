"""The parts a fault scenario breaks: a Redis it can kill, restart, freeze and starve of
memory, and worker groups it can kill -9 and restart as a supervisor would."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.harness import is_verification_process, worker_pids
from flashcall_dev.stack import REDIS_INSTALL_HINT, LocalStack, ManagedProcess, free_port
from worker.core.errors import FlashcallError

__all__ = ["ChaosRedis", "WorkerGroups"]


@dataclass
class ChaosRedis:
    """A redis-server on a fixed port, so that clients find it again after a restart."""

    data_dir: Path
    aof: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FlashcallError(REDIS_INSTALL_HINT)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir)]
        argv += ["--save", "", "--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec"]
        with (self.data_dir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - argv built here
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    # Loading the AOF answers LOADING until it is done.
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        raise FlashcallError(f"redis-server on port {self.port} did not come up")

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)

    def shutdown(self) -> None:
        """SIGTERM: Redis writes and syncs its AOF, then exits (a planned restart)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as across a network partition."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.kill()


@dataclass
class WorkerGroups:
    """`flashcall worker` groups, each as one host or pod would run it; a group whose
    process died is started again, as systemd or Kubernetes would."""

    stack: LocalStack
    count: int = 2
    processes: int = 1
    env: dict[str, str] = field(default_factory=dict)
    """What every group's environment adds (the callback receiver's URL, say)."""
    groups: list[ManagedProcess] = field(default_factory=list)

    def start(self) -> None:
        for n in range(self.count):
            self.groups.append(self._start(n))

    def _start(self, n: int) -> ManagedProcess:
        return self.stack.start_worker(processes=self.processes, threads=None, name=f"group{n}", env=self.env)

    def restart(self, n: int, *, timeout: float = 60) -> None:
        """Stop group n as a rolling deploy does (SIGTERM: messages in hand finish or go
        back to the queue) and start it again."""
        group = self.groups[n]
        group.stop(timeout=timeout)
        if group in self.stack.processes:
            self.stack.processes.remove(group)
        self.groups[n] = self._start(n)

    def verification_process(self, n: int) -> int:
        """A process of group n that makes provider calls (the niced ones; the check process is not)."""
        for pid in worker_pids(self.groups[n]):
            if is_verification_process(pid):
                return pid
        raise FlashcallError(f"group {n} has no verification process")

    def kill_process(self, n: int) -> None:
        os.kill(self.verification_process(n), signal.SIGKILL)

    def kill_all(self) -> None:
        for group in self.groups:
            group.kill()

    def restart_dead(self, *, timeout: float = 60) -> list[int]:
        """Start again every group whose main process exited (Dramatiq's main process exits
        when one of its workers dies); answers the groups restarted."""
        restarted = []
        deadline = time.monotonic() + timeout
        for n, group in enumerate(self.groups):
            if group.process.poll() is None:
                continue
            if group in self.stack.processes:
                self.stack.processes.remove(group)
            while time.monotonic() < deadline:
                try:
                    self.groups[n] = self._start(n)
                    break
                except FlashcallError:
                    # Redis may still be away: a supervisor keeps trying.
                    time.sleep(1)
            restarted.append(n)
        return restarted

    def wait_for_exit(self, n: int, timeout: float = 30) -> None:
        group = self.groups[n]
        with contextlib.suppress(subprocess.TimeoutExpired):
            group.process.wait(timeout)
