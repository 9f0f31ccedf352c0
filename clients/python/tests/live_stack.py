"""A live Diffusion Grid stack on loopback for Python tests and tools: one
dgrid-denoiser (or `replicas` of them) and one dgrid-orchestrator on free
ports, stopped on exit.

    with LiveStack() as stack:
        target = stack.orchestrator  # "127.0.0.1:PORT"

Environment: DGRID_BIN_DIR (default <repo>/build/bin), DGRID_TEST_MODEL (the
model bundle; default <repo>/models/fashion-mnist, as the C++ stack tests).
Imports nothing generated, so the reflection test can use it too.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def model_dir() -> str:
    return os.environ.get("DGRID_TEST_MODEL") or os.path.join(REPO, "models", "fashion-mnist")


def bin_dir() -> str:
    return os.environ.get("DGRID_BIN_DIR") or os.path.join(REPO, "build", "bin")


class StackError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies (e.g. killed by a ctest
    timeout before its finally blocks run)."""
    try:
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def stop_on_sigterm() -> None:
    """Turns SIGTERM into SystemExit, so that finally blocks stop the stack."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


class LiveStack:
    """Starts the denoiser, waits for its port file, then the orchestrator."""

    def __init__(self, model: Optional[str] = None, start_timeout: float = 120.0, *,
                 replicas: int = 1, threads: int = 1, bins: Optional[str] = None) -> None:
        self.model = model or model_dir()
        self.start_timeout = start_timeout
        self.replicas = replicas
        self.threads = threads  # torch threads per denoiser
        self.bins = bins or bin_dir()
        self.dir = tempfile.mkdtemp(prefix="dgrid-pytest-")
        self.processes: List[subprocess.Popen] = []
        self.names: Dict[int, str] = {}  # pid -> name (its log is NAME.log)
        self.denoisers: List[str] = []
        self.orchestrator = ""

    def __enter__(self) -> "LiveStack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, argv: List[str]) -> subprocess.Popen:
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT,
                                 preexec_fn=_die_with_parent)
        finally:
            log.close()
        self.processes.append(p)
        self.names[p.pid] = name
        return p

    def _wait_ports(self, name: str, p: subprocess.Popen, port_file: str) -> Dict[str, int]:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise StackError(f"{name} exited with {p.returncode}:\n{self.log(name)}")
            if os.path.exists(port_file):  # written atomically (rename)
                ports: Dict[str, int] = {}
                with open(port_file) as f:
                    for line in f:
                        key, _, value = line.strip().partition("=")
                        if key and value:
                            ports[key] = int(value)
                if ports.get("grpc"):
                    return ports
            time.sleep(0.05)
        raise StackError(f"{name} did not serve within {self.start_timeout} s:\n{self.log(name)}")

    def start(self) -> None:
        if not os.path.isfile(os.path.join(self.model, "manifest.json")):
            raise StackError(f"no model bundle at {self.model} (set DGRID_TEST_MODEL)")
        for i in range(self.replicas):
            name = "denoiser" if i == 0 else f"denoiser{i}"
            port_file = os.path.join(self.dir, name + ".ports")
            p = self._spawn(name, [
                os.path.join(self.bins, "dgrid-denoiser"), f"--model_dir={self.model}",
                "--listen=127.0.0.1:0", "--metrics_addr=", f"--threads={self.threads}",
                f"--port_file={port_file}"])
            self.denoisers.append(f"127.0.0.1:{self._wait_ports(name, p, port_file)['grpc']}")
        self.orchestrator = self.add_orchestrator()

    def add_orchestrator(self, flags: Optional[List[str]] = None, name: str = "orchestrator") -> str:
        """Starts an orchestrator over the denoisers; returns its address."""
        port_file = os.path.join(self.dir, name + ".ports")
        p = self._spawn(name, [
            os.path.join(self.bins, "dgrid-orchestrator"), f"--denoisers={','.join(self.denoisers)}",
            "--listen=127.0.0.1:0", "--metrics_addr=", f"--port_file={port_file}"] + (flags or []))
        return f"127.0.0.1:{self._wait_ports(name, p, port_file)['grpc']}"

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.dir, name + ".log"), "rb") as f:
                return f.read()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Orchestrator first, then the denoisers: SIGTERM, then SIGKILL after 10 s.
        Removes the logs too, unless DGRID_KEEP_TEST_DIRS is set."""
        for p in reversed(self.processes):
            if p.poll() is None:
                p.terminate()
            elif p.returncode != 0:  # died during the test: show why
                name = self.names.get(p.pid, "")
                print(f"{name} exited early with {p.returncode}:\n{self.log(name)}",
                      file=sys.stderr)
        for p in reversed(self.processes):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.processes.clear()
        if not os.environ.get("DGRID_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    # Manual use: start a stack, print the orchestrator's address, wait for ^C
    # or SIGTERM (at most argv[1] seconds).
    stop_on_sigterm()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with LiveStack() as s:
        print(s.orchestrator, flush=True)
        try:
            time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 600)
        except KeyboardInterrupt:
            pass
