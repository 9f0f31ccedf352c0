"""What the Python benchmarks share: the CPU model that every result line
records, and starting a dgrid binary on a free loopback port.

    proc, ports = start([f"{BIN}/dgrid-denoiser", "--listen=127.0.0.1:0", ...],
                        f"{work}/d.ports", f"{work}/d.log")
    ports["grpc"]  # the port it bound
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from typing import Dict, Sequence, Tuple


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def start(argv: Sequence[str], port_file: str, log: str,
          needed: Sequence[str] = ("grpc",)) -> Tuple[subprocess.Popen, Dict[str, int]]:
    """Starts argv with --port_file and waits (at most 120 s) until it has
    written the `needed` ports; its output goes to `log`."""
    proc = subprocess.Popen(list(argv) + [f"--port_file={port_file}"], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(port_file):
            with open(port_file) as f:
                ports = dict(line.strip().split("=", 1) for line in f if "=" in line)
            if all(name in ports for name in needed):
                return proc, {k: int(v) for k, v in ports.items()}
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited: see {log}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{argv[0]} did not start: see {log}")
