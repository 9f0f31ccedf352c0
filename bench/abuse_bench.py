#!/usr/bin/python3
"""A well-behaved client's small grids, quiet and beside each abusive client.

Starts the real pair on loopback (2 denoisers serving both shipped bundles,
the orchestrator with its HTTP gateway), measures a small emoji grid's
latency with nothing else running, then with each abuser of issue 24 running
beside it, one at a time:

  marks      1 MiB prompts of combining marks, looped over gRPC and HTTP
  letters    1 MiB prompts of letters without spaces, looped
  big_grids  4 grids at the grid limits (16 x 16, 4 KiB prompts) at a time
  decode     4 clients looping Decode of 256 emoji latents on a denoiser
  rank0      4 clients sending Branch with rank 0 straight to a denoiser
  slowloris  300 sockets sending a header line every 3 s to the HTTP port

Each phase is bounded in time; every process stops at the end. Prints one
JSON line per phase (p50, p95, failures, the CPU model) and the
orchestrator's peak RSS.

  PYTHONPATH=build/python /usr/bin/python3 bench/abuse_bench.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

import grpc

from dgrid.v1 import denoiser_pb2, denoiser_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from dgrid.v1 import tensor_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from processes import cpu_model, start  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
MODELS = f"{ROOT}/models/emoji,{ROOT}/models/fashion-mnist"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def small_grid() -> orchestrator_pb2.GridRequest:
    r = orchestrator_pb2.GridRequest(model="emoji", prompt="grinning face, noto",
                                     seed=random.randrange(1 << 30))
    r.steps.value = 10
    r.branches.value = 2
    r.branch_steps.extend([0, 5])
    return r


def combining_marks(size: int) -> str:
    return ("\u0327\u0301" * (size // 4 + 1))[: size // 2]


class Abuser:
    """Runs `body` in `threads` threads until stopped; counts what it sent."""

    def __init__(self, body, threads: int):
        self.stop = threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self._loop, args=(body,), daemon=True)
                        for _ in range(threads)]

    def _loop(self, body):
        while not self.stop.is_set():
            try:
                body(self.stop)
            except Exception:  # the abuser's own failures are expected
                pass
            self.sent += 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20, help="per phase")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="dgrid-abuse-")
    procs = []
    try:
        denoisers = []
        for i in range(2):
            proc, ports = start([f"{BIN}/dgrid-denoiser", f"--model_dir={MODELS}",
                                 "--listen=127.0.0.1:0", "--metrics_addr=", "--threads=1"],
                                f"{work}/d{i}.ports", f"{work}/d{i}.log")
            procs.append(proc)
            denoisers.append(ports["grpc"])
        orch, ports = start([f"{BIN}/dgrid-orchestrator",
                             "--denoisers=" + ",".join(f"127.0.0.1:{p}" for p in denoisers),
                             "--listen=127.0.0.1:0", "--metrics_addr=",
                             "--http_addr=127.0.0.1:0"], f"{work}/o.ports", f"{work}/o.log")
        procs.append(orch)
        http = ports["http"]
        options = [("grpc.max_send_message_length", 64 << 20),
                   ("grpc.max_receive_message_length", 64 << 20)]
        channel = grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}", options=options)
        orchestrator = orchestrator_pb2_grpc.OrchestratorStub(channel)
        replica = denoiser_pb2_grpc.DenoiserStub(
            grpc.insecure_channel(f"127.0.0.1:{denoisers[0]}", options=options))
        peak_rss = [0.0]
        sampling = threading.Event()

        def sample_rss():
            while not sampling.is_set():
                peak_rss[0] = max(peak_rss[0], rss_mib(orch.pid))
                time.sleep(0.2)

        threading.Thread(target=sample_rss, daemon=True).start()

        def measure(seconds: float) -> dict:
            times, failures = [], 0
            end = time.time() + seconds
            while time.time() < end:
                t0 = time.time()
                try:
                    orchestrator.CreateGrid(small_grid(), timeout=30)
                    times.append(time.time() - t0)
                except grpc.RpcError:
                    failures += 1
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))] if times else None
            return {"grids": len(times), "failures": failures,
                    "p50_s": round(statistics.median(times), 3) if times else None,
                    "p95_s": round(p95, 3) if p95 else None}

        def refused_ms(prompt: str) -> tuple[str, float]:
            t0 = time.time()
            try:
                orchestrator.CreateGrid(orchestrator_pb2.GridRequest(model="emoji", prompt=prompt),
                                        timeout=30)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            return code, round((time.time() - t0) * 1000, 1)

        def big_prompt_grid(prompt: str):
            def body(stop):
                try:
                    orchestrator.CreateGrid(orchestrator_pb2.GridRequest(model="emoji",
                                                                         prompt=prompt),
                                            timeout=30)
                except grpc.RpcError:
                    pass
                body_json = json.dumps({"model": "emoji", "prompt": prompt}).encode()
                request = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1/grid",
                                                 data=body_json, method="POST",
                                                 headers={"Content-Type": "application/json"})
                try:
                    urllib.request.urlopen(request, timeout=30).read()
                except Exception:
                    pass
            return body

        def big_grids(stop):
            r = orchestrator_pb2.GridRequest(model="emoji", prompt="x" * 4096,
                                             seed=random.randrange(1 << 30))
            r.branches.value = 16
            r.branch_steps.extend(range(0, 48, 3))
            try:
                orchestrator.CreateGrid(r, timeout=120)
            except grpc.RpcError:
                pass

        info = replica.GetModelInfo(denoiser_pb2.GetModelInfoRequest(model="emoji"))
        shape = list(info.models[0].latent_shape)
        latent = tensor_pb2.Tensor(shape=shape, dtype=tensor_pb2.DATA_TYPE_FP32)
        latent.raw_contents = bytes(4 * shape[0] * shape[1] * shape[2])

        def decode(stop):
            request = denoiser_pb2.DecodeRequest(model="emoji")
            for _ in range(256):
                request.latents.append(latent)
            replica.Decode(request, timeout=120)

        def rank0(stop):
            request = denoiser_pb2.BranchRequest(model="emoji", fairness_rank=0, fairness_key=7)
            request.sampler.steps = 50
            request.sampler.eta = 1
            request.sampler.guidance = 4
            request.conditioning.prompt = "red apple"
            for k in range(64):
                t = request.trajectories.add()
                t.path.init_seed = k
                t.path.segments.add().noise_seed = k
            for _ in replica.Branch(request, timeout=120):
                if stop.is_set():
                    break

        def slowloris(stop):
            sockets = []
            try:
                for _ in range(300):
                    s = socket.create_connection(("127.0.0.1", http), timeout=5)
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
                    sockets.append(s)
                while not stop.is_set():
                    for s in list(sockets):
                        try:
                            s.sendall(b"X-a: b\r\n")
                        except OSError:
                            sockets.remove(s)
                    stop.wait(3)
            finally:
                for s in sockets:
                    s.close()

        marks = combining_marks(1 << 20)
        letters = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1 << 20))
        results = [{"phase": "refusal", "marks_1mib": refused_ms(marks),
                    "letters_1mib": refused_ms(letters)}]
        phases = [("quiet", None, 0), ("marks", big_prompt_grid(marks), 4),
                  ("letters", big_prompt_grid(letters), 4), ("big_grids", big_grids, 4),
                  ("decode", decode, 4), ("rank0", rank0, 4), ("slowloris", slowloris, 1)]
        for name, body, threads in phases:
            if body is None:
                line = measure(args.seconds)
            else:
                with Abuser(body, threads) as abuser:
                    time.sleep(1)
                    line = measure(args.seconds)
                line["abuser_requests"] = abuser.sent
            # CPU seconds each process burns in the second after the phase:
            # abuse that outlives its client shows here.
            before = [_cpu(p.pid) for p in procs]
            time.sleep(1)
            line["cpu_s_after"] = round(sum(_cpu(p.pid) - b for p, b in zip(procs, before)), 2)
            line.update(phase=name, cpu=cpu_model())
            results.append(line)
            print(json.dumps(line), flush=True)
        sampling.set()
        results.append({"phase": "memory", "orchestrator_peak_rss_mib": round(peak_rss[0], 1)})
        print(json.dumps(results[0]))
        print(json.dumps(results[-1]))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
