"""A throwaway Ray head on loopback for tests that go through the Ray Jobs server.

The head runs in the foreground (``ray start --head --block``) as a child of the test, from the
project's venv, with its own temp dir, its own ports, its own token (token auth, as Ray 2.60
enables by default) and its own HOME, so it touches nothing another Ray on this machine uses.
:meth:`LoopbackHead.stop` signals that child and every process of *this* head, found by pid
(descendants of the child, or carrying the head's marker in their environment): never
``ray stop``, which kills every Ray process on the machine.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["LoopbackHead", "free_port", "head_port_args", "own_pids", "stop_pids"]

VENV_BIN = Path(sys.executable).parent
RAY = VENV_BIN / "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_port_range(size: int) -> int:
    """First port of ``size`` consecutive free ports below the kernel's ephemeral range, so the
    worker ports cannot collide with the outgoing connections' ports either."""
    for _ in range(50):
        base = random.randrange(20000, 30000 - size)
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {size} consecutive free ports in 20000-30000")


def _processes() -> dict[int, tuple[int, bytes, bytes]]:
    """``pid -> (ppid, cmdline, environ)`` for every process readable here."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry)] = (ppid, cmdline, environ)
    return out


def head_port_args(worker_ports: int = 200) -> list[str]:
    """``ray start`` options giving a head's remaining servers and its workers free ports of their
    own, so that a test head never collides with another Ray on this machine."""
    first_worker = _free_port_range(worker_ports)
    servers = ("ray-client-server", "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
               "runtime-env-agent", "node-manager", "object-manager")  # fmt: skip
    return [f"--{name}-port={free_port()}" for name in servers] + [
        f"--min-worker-port={first_worker}",
        f"--max-worker-port={first_worker + worker_ports - 1}",
    ]


def own_pids(temp_dir: str, roots: set[int] | frozenset[int] = frozenset()) -> set[int]:
    """A test head's processes: ``roots`` and every process that carries the head's marker
    (``OSR_TEST_HEAD=<temp_dir>``) in its environment or its temp dir on its command line, plus
    their descendants and the processes their raylet started (agents overwrite the start of their
    environment with a process title but keep ``RAY_RAYLET_PID``). Never this test process."""
    procs = _processes()
    marker = f"OSR_TEST_HEAD={temp_dir}\0".encode()
    own = {pid for pid, (_, cmd, env) in procs.items() if marker in env or temp_dir.encode() in cmd} | set(roots)
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, env) in procs.items():
            if pid not in own and (ppid in own or any(f"RAY_RAYLET_PID={r}\0".encode() in env for r in own)):
                own.add(pid)
                grew = True
    own.discard(os.getpid())
    return own


def stop_pids(find, grace: float = 5, note=lambda what: None, reap=lambda: None) -> set[int]:
    """SIGTERM to the processes ``find()`` returns, then SIGKILL to those still alive after
    ``grace`` seconds (``find`` is asked again each round, for processes started meanwhile).
    Returns the pids still alive afterwards; ``reap`` lets the caller wait on its own children."""
    pids: set[int] = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = {p for p in pids | find() if _alive(p)}
        note(f"{sig.name} to {len(pids)}: " + ", ".join(f"{p} {_title(p)}" for p in sorted(pids)))
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            reap()
            time.sleep(0.1)
    return {p for p in pids | find() if _alive(p)}


class LoopbackHead:
    """``head = LoopbackHead(num_cpus=2); head.start(); head.ray("job", "submit", ...); head.stop()``."""

    def __init__(self, num_cpus: int = 2, object_store_mb: int = 300, env: dict[str, str] | None = None):
        # Short: Ray's unix socket paths live under the temp dir and are length-limited.
        self.temp_dir = tempfile.mkdtemp(prefix="osrj", dir="/tmp")
        self.home = tempfile.mkdtemp(prefix="osrj-home-")
        self.token_path = os.path.join(self.home, "auth_token")
        with open(self.token_path, "w") as f:
            f.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.args = [
            "--head",
            "--block",
            f"--port={self.port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            *head_port_args(),
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--object-store-memory={object_store_mb * 1024 * 1024}",
            "--disable-usage-stats",
        ]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIRTUAL_ENV"))}
        base.update(
            HOME=self.home,
            # The job's entrypoint (`python ...`) resolves through the head's PATH: the venv's.
            PATH=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=self.token_path,
            # The test runs under `uv run`, an ancestor of every process of this head. Ray 2.60
            # then starts the job's workers through `uv run` in the uploaded working_dir, which
            # builds a fresh copy of the project's venv (8 GB) for each job. The head already
            # runs from the venv: switch that off.
            RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
        )
        base.update(env or {})
        # Every process of this head inherits the marker (see _own_pids).
        self.head_env = {**base, "OSR_TEST_HEAD": self.temp_dir}
        self.client_env = {**base, "RAY_API_SERVER_ADDRESS": self.address}
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.home, "ray-start.log")

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 120) -> None:
        if not RAY.exists():
            raise RuntimeError(f"{RAY} not found: run the tests from the project venv (uv run pytest)")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(RAY), "start", *self.args],
                env=self.head_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self._job_server_up():
                return
            time.sleep(0.5)
        raise TimeoutError(f"the head's job server did not come up in {timeout} s:\n{self.log()[-4000:]}")

    def _get(self, path: str, timeout: float = 10):
        """GET ``path`` from the job server's REST API with this head's token; parsed JSON."""
        import urllib.request

        with open(self.token_path) as f:
            token = f.read().strip()
        request = urllib.request.Request(self.address + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def _job_server_up(self) -> bool:
        try:
            self._get("/api/jobs/", timeout=2)
            return True
        except (OSError, ValueError):  # URLError and HTTPError are OSErrors
            return False

    def job_info(self, submission_id: str) -> dict:
        """The job's details (``status``, ``driver_exit_code``, ``message``, ...) from the job server."""
        return self._get(f"/api/jobs/{submission_id}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def _own_pids(self) -> set[int]:
        """This head's processes: the `ray start` child and everything :func:`own_pids` finds."""
        return own_pids(self.temp_dir, {self.proc.pid} if self.proc is not None else set())

    def stop(self, grace: float = 5) -> set[int]:
        """Stop the head: SIGTERM to its processes (the `ray start --block` child and everything
        it started), SIGKILL to those still alive after ``grace`` seconds. Returns the pids still
        alive afterwards (empty when all went); :attr:`stop_log` records each step."""
        start = time.monotonic()
        self.stop_log: list[str] = []

        def note(what: str) -> None:
            self.stop_log.append(f"{time.monotonic() - start:5.1f}s {what}")

        reap = self.proc.poll if self.proc is not None else (lambda: None)  # or our child stays a zombie
        left = stop_pids(self._own_pids, grace, note, reap)
        if self.proc is not None:
            self.proc.wait()
        note(f"left: {sorted(left)}")
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)
        return left

    # ------------------------------------------------------------------ clients

    def ray(self, *args: str, timeout: float = 300, cwd: str | None = None) -> subprocess.CompletedProcess:
        """Run the venv's ``ray`` CLI as an authenticated client of this head."""
        return subprocess.run(
            [str(RAY), *args], env=self.client_env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()[:40].replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"  # a zombie has exited; its parent reaps it
    except OSError:
        return False
