#!/usr/bin/python3
"""Decision curves on the shipped models, and their throughput.

Starts the real pair on loopback (one denoiser serving both shipped bundles,
the orchestrator), measures each bundle's best-batch forward throughput with
`dgrid-bench denoiser`, then runs each curve below with a cold cache and
reports its time, its curves with standard errors, and the forward rows per
second the denoiser ran while it did (from dgrid_denoiser_forward_rows_total)
against the best-batch figure (ratio_to_best_engine). ratio_to_limit
compares the curve's time with all its work on the denoiser at the engine's
best rates: its forward rows, decoded images and judged images (limit_s).
The best forward rate is measured again after the curve
(ratio_to_best_engine_after): on a shared machine the two bracket the
machine's speed, and pass_efficiency (the passes' own rate over the better
of the two) near or above 1 says the first was measured on a slower one.
One JSON line per curve (with the CPU model) goes to stdout; each curve's
plot and JSON go to --out.

  fashion        fashion-mnist, unprompted: the class curve
  emoji          emoji, unprompted: subcategory and style curves
  emoji_switch   emoji, "grinning face, noto" switched to "red apple, noto"
                 at each row's step, with the trunk's noise
  emoji_switch_late  the same switch, rows at late steps (up to 49 of 50)

  PYTHONPATH=build/python:clients/python /usr/bin/python3 bench/curve_bench.py \\
      --trunks 100 --curves fashion,emoji,emoji_switch --out docs/curves
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dgrid_client import Client  # noqa: E402
from processes import cpu_model, start  # noqa: E402

CURVES = {
    "fashion": dict(model="fashion-mnist"),
    "emoji": dict(model="emoji"),
    "emoji_switch": dict(model="emoji", prompt="grinning face, noto",
                         switch_prompt="red apple, noto", branch_noise="trunk"),
    # The same switch at late steps, where the trunk's subcategory survives.
    "emoji_switch_late": dict(model="emoji", prompt="grinning face, noto",
                              switch_prompt="red apple, noto", branch_noise="trunk",
                              branch_steps=[0, 20, 30, 36, 40, 43, 45, 47, 49]),
}


SPLIT = ("dgrid_denoiser_forward_rows_total", "dgrid_denoiser_forward_seconds_sum",
         "dgrid_denoiser_decode_seconds_sum", "dgrid_denoiser_decoded_images_total",
         "dgrid_denoiser_batch_size_count")


def counters(metrics_port: int) -> dict:
    """The denoiser's counters that split a curve's time: forward rows and
    seconds, decoder seconds and images."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    found = dict.fromkeys(SPLIT, 0.0)
    for line in text.splitlines():
        name = line.split(" ")[0].split("{")[0]
        if name in found:
            found[name] = float(line.split()[-1])
    return found


def engine_rates(model_dir: str, threads: int) -> dict:
    """The engine's best images/s over batch sizes (dgrid-bench denoiser):
    the forward pass (with its batch), the decoder, and the judge."""
    out = subprocess.run([f"{BIN}/dgrid-bench", "denoiser", f"--model_dir={model_dir}",
                          "--seconds=2", f"--threads={threads}"],
                         capture_output=True, text=True, check=True).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def best(prefix: str) -> dict:
        found = [r for r in lines if r["config"].startswith(prefix)]
        return max(found, key=lambda r: r["images_per_s"]) if found else {}

    forward = best("engine_forward")
    return {"forward": forward["images_per_s"], "forward_batch": forward["batch"],
            "decode": best("engine_decode").get("images_per_s"),
            "judge": best("engine_judge").get("images_per_s")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trunks", type=int, default=100)
    p.add_argument("--curves", default="fashion,emoji,emoji_switch")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--max_batch", type=int, default=128)
    p.add_argument("--concurrent_grids", type=int, default=8,
                   help="the orchestrator's --curve_concurrent_grids")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "curves"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    best = {m: engine_rates(f"{ROOT}/models/{m}", args.threads)
            for m in {CURVES[c]["model"] for c in args.curves.split(",")}}
    for name in args.curves.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            denoiser, dports = start(
                [f"{BIN}/dgrid-denoiser", f"--model_dir={ROOT}/models/fashion-mnist,"
                 f"{ROOT}/models/emoji", "--listen=127.0.0.1:0", "--metrics_addr=127.0.0.1:0",
                 f"--threads={args.threads}", f"--max_batch={args.max_batch}"],
                f"{tmp}/denoiser.ports", f"{tmp}/denoiser.log", needed=("grpc", "metrics"))
            orchestrator, oports = start(
                [f"{BIN}/dgrid-orchestrator", f"--denoisers=127.0.0.1:{dports['grpc']}",
                 "--listen=127.0.0.1:0", "--metrics_addr=127.0.0.1:0",
                 "--grid_timeout_s=3600", f"--curve_concurrent_grids={args.concurrent_grids}",
                 f"--max_grids_per_client={max(16, args.concurrent_grids)}"],
                f"{tmp}/orchestrator.ports", f"{tmp}/orchestrator.log",
                needed=("grpc", "metrics"))
            try:
                with Client(f"127.0.0.1:{oports['grpc']}", default_timeout=7200) as client:
                    client.wait_ready()
                    before = counters(dports["metrics"])
                    started = time.time()
                    curve = client.decision_curve(args.trunks, seed=args.seed, **CURVES[name])
                    seconds = time.time() - started
                    after = counters(dports["metrics"])
                    used = {k: after[k] - before[k] for k in SPLIT}
                    rows = used["dgrid_denoiser_forward_rows_total"]
            finally:
                orchestrator.terminate()
                denoiser.terminate()
                orchestrator.wait()
                denoiser.wait()
        # The best rates again, once the curve's processes are gone: the
        # machine is shared, and one measurement minutes before a curve
        # may be taken while it ran faster or slower than the curve did.
        after_rates = engine_rates(f"{ROOT}/models/{CURVES[name]['model']}", args.threads)
        suffix = "" if args.concurrent_grids == 8 else f"_c{args.concurrent_grids}"
        curve.save_png(os.path.join(args.out, f"{name}{suffix}.png"))
        # The same JSON as `dgrid curve` writes (zeros included).
        curve.save_record(os.path.join(args.out, f"{name}{suffix}.json"))
        rates = best[CURVES[name]["model"]]
        best_ips, best_batch = rates["forward"], rates["forward_batch"]
        decoded = used["dgrid_denoiser_decoded_images_total"]
        judged = curve.proto.judged_images
        # The curve's work on the denoiser at the engine's best rates: its
        # forward rows, its decoded images and its judged images.
        limit_s = (rows / best_ips + (decoded / rates["decode"] if decoded else 0)
                   + (judged / rates["judge"] if judged else 0))
        line = {
            "bench": "curve", "curve": name, "trunks": curve.trunks, "seconds": round(seconds, 1),
            "model_evals": curve.model_evals, "forward_rows": rows,
            "forward_rows_per_s": round(rows / seconds, 1),
            "best_engine_images_per_s": round(best_ips, 1), "best_engine_batch": best_batch,
            "ratio_to_best_engine": round(rows / seconds / best_ips, 3),
            # Measured after the curve; the two bracket the machine's speed.
            "best_engine_after_images_per_s": round(after_rates["forward"], 1),
            "best_engine_after_batch": after_rates["forward_batch"],
            "ratio_to_best_engine_after": round(rows / seconds / after_rates["forward"], 3),
            "best_decode_images_per_s": round(rates["decode"] or 0, 1),
            "best_judge_images_per_s": round(rates["judge"] or 0, 1),
            "judged_images": judged, "limit_s": round(limit_s, 1),
            "ratio_to_limit": round(limit_s / seconds, 3),
            # Where the time went: the batcher's forward and decoder passes.
            "forward_s": round(used["dgrid_denoiser_forward_seconds_sum"], 1),
            # The passes' own rate over the better of the two best rates: near
            # or above 1, the best rates were measured on a slower machine.
            "pass_efficiency": round(rows / max(1e-9, used["dgrid_denoiser_forward_seconds_sum"])
                                     / max(best_ips, after_rates["forward"]), 3),
            "decode_s": round(used["dgrid_denoiser_decode_seconds_sum"], 1),
            "decoded_images": decoded,
            "forward_passes": used["dgrid_denoiser_batch_size_count"],
            "mean_batch": round(rows / max(1.0, used["dgrid_denoiser_batch_size_count"]), 1),
            "threads": args.threads, "max_batch": args.max_batch,
            "concurrent_grids": args.concurrent_grids, "cpu": cpu_model(),
            "rows": [r.branch_step for r in curve.rows],
            "divergence": [None if r.divergence is None else
                           [round(r.divergence.mean, 4), round(r.divergence.standard_error, 4)]
                           for r in curve.rows],
            "heads": {h.head: {
                "p_differs": [[round(e.mean, 4), round(e.standard_error, 4)]
                              for e in h.p_differs],
                "half_step": None if h.half_step is None else round(h.half_step, 2),
                "half_step_se": round(h.half_step_standard_error, 2),
                "half_step_68": [round(v, 2) for v in h.half_step_interval]}
                for h in curve.heads},
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
