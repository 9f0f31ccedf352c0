#!/usr/bin/python3
"""ctest: runs `dgrid-bench grid` on a tiny configuration and checks its JSON.

  check_grid_bench.py DGRID_BENCH MODEL_DIR
"""
import json
import subprocess
import sys

bench, model = sys.argv[1], sys.argv[2]
out = subprocess.run(
    [bench, "grid", f"--model_dir={model}", "--runs=1", "--grid_steps=10",
     "--grids=default,classic", "--grid_prompt=low", "--threads=1",
     "--limit_seconds=0.05"],
    check=True, capture_output=True, text=True, timeout=240).stdout
lines = [json.loads(line) for line in out.splitlines() if line.strip()]
variants = {(l["grid"], l["variant"]) for l in lines}
failures = []
for grid in ("default", "classic"):
    for v in ("limit", "limit_all", "inprocess", "inprocess_whole", "pair_1", "pair_1_whole",
              "pair_2", "seed_style", "from_scratch",
              "python_seed_style", "python_batched"):
        if (grid, v) not in variants:
            failures.append(f"missing {grid}/{v}")
for l in lines:
    for key in ("wall_s", "wall_min_s", "wall_max_s", "model_evals", "images_per_s",
                "ratio_to_limit"):
        if key not in l:
            failures.append(f"{l['grid']}/{l['variant']}: no {key}")
    want = l["from_scratch_evals"] if l["variant"] == "from_scratch" else l["plan_model_evals"]
    if l["model_evals"] != want:
        failures.append(f"{l['grid']}/{l['variant']}: model_evals {l['model_evals']} != {want}")
    if not l["wall_min_s"] <= l["wall_s"] <= l["wall_max_s"]:
        failures.append(f"{l['grid']}/{l['variant']}: median outside [min, max]")
for f in failures:
    print("FAIL:", f)
print(f"{len(lines)} bench lines checked: {len(lines) - len(failures)} passed, "
      f"{len(failures)} failed")
sys.exit(1 if failures else 0)
