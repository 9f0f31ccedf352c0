#!/usr/bin/python3
"""The baselines of `dgrid-bench grid`: the original app's grid algorithm in
plain PyTorch (Debian's python3-torch), on the same TorchScript model.

  seed_style  the trunk first (capturing its latent at each branch step), then
              every branch as its own sequential batch-1 run from its row's
              captured latent: the shared prefix is reused, nothing is batched
  batched     the same, but each row's branches run as one batch

Classifier-free guidance runs the conditional and unconditional passes in one
batch, as diffusers' pipelines do. Prints one JSON line:
{"walls": [seconds per run], "model_evals": N}.

With --serve it warms up once, then reads "MODE SEED" lines on stdin and
answers each with {"wall": seconds, "model_evals": N}, so that dgrid-bench can
interleave its rounds with the other variants'.
"""
import argparse
import json
import os
import sys
import time

import torch


def schedule(manifest, steps):
    s = manifest["schedule"]
    train = int(s.get("train_timesteps", 1000))
    start, end = float(s.get("beta_start", 1e-4)), float(s.get("beta_end", 0.02))
    if s.get("beta_schedule", "linear") == "scaled_linear":
        betas = torch.linspace(start ** 0.5, end ** 0.5, train, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(start, end, train, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    offset = int(s.get("steps_offset", 0))
    ratio = train // steps
    ts = [min((steps - 1 - i) * ratio + offset, train - 1) for i in range(steps)]
    set_one = s.get("set_alpha_to_one", True)
    final = 1.0 if set_one else float(ac[0])
    a = [float(ac[t]) for t in ts]
    a_prev = a[1:] + [final]
    return ts, a, a_prev


class Sampler:
    def __init__(self, model, manifest, steps, eta, guidance, class_index):
        self.model = model
        self.ts, self.a, self.a_prev = schedule(manifest, steps)
        self.eta = eta
        self.guidance = guidance
        self.null = int(manifest.get("conditioning", {}).get("null_label", 0))
        self.cond = class_index if class_index >= 0 else self.null
        self.guided = class_index >= 0 and guidance not in (0.0, 1.0)
        self.evals = 0

    def step(self, i, x, gen):
        b = x.shape[0]
        t = torch.full((b,), self.ts[i], dtype=torch.long)
        if self.guided:
            cond = torch.cat([torch.full((b,), self.cond), torch.full((b,), self.null)]).long()
            out = self.model(torch.cat([x, x]), torch.cat([t, t]), cond)
            c, u = out[:b], out[b:]
            eps = u + self.guidance * (c - u)
        else:
            label = self.cond if self.guidance != 0.0 else self.null
            eps = self.model(x, t, torch.full((b,), label, dtype=torch.long))
        a, ap = self.a[i], self.a_prev[i]
        x0 = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
        sigma = self.eta * ((1 - ap) / (1 - a) * (1 - a / ap)) ** 0.5
        x = ap ** 0.5 * x0 + max(1 - ap - sigma * sigma, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=gen)
        self.evals += b
        return x

    def run(self, x, start, end, gen, captures=()):
        got = {}
        for i in range(start, end):
            x = self.step(i, x, gen)
            if i + 1 in captures:
                got[i + 1] = x.clone()
        return x, got


def grid(sampler, shape, steps, branch_steps, branches, mode, seed):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn((1,) + shape, generator=gen)
    _, captured = sampler.run(x_t, 0, steps, gen, captures=set(k for k in branch_steps if k > 0))
    for k in branch_steps:
        start = captured[k] if k > 0 else x_t
        if mode == "batched":
            sampler.run(start.repeat(branches, 1, 1, 1), k, steps, gen)
        else:
            for _ in range(branches):
                sampler.run(start, k, steps, gen)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True)
    p.add_argument("--mode", choices=["seed_style", "batched"], default="seed_style")
    p.add_argument("--serve", action="store_true")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--class_index", type=int, default=-1)
    p.add_argument("--branch_steps", default="0,5,10,20,30,40")
    p.add_argument("--branches", type=int, default=4)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.bundle, "manifest.json")) as f:
        manifest = json.load(f)
    model = torch.jit.load(os.path.join(args.bundle, manifest["weights"])).eval()
    shape = tuple(int(d) for d in manifest["latent_shape"])
    branch_steps = [int(k) for k in args.branch_steps.split(",") if k]
    def one(mode, seed):
        sampler = Sampler(model, manifest, args.steps, args.eta, args.guidance, args.class_index)
        start = time.perf_counter()
        grid(sampler, shape, args.steps, branch_steps, args.branches, mode, seed)
        # Trajectory steps, as dgrid counts model evaluations (a guided step is
        # one evaluation of two rows).
        return time.perf_counter() - start, sampler.evals

    if args.serve:
        with torch.inference_mode():
            one("batched", 99)  # warm-up
            for line in sys.stdin:
                if not line.strip():
                    continue
                mode, seed = line.split()
                if mode not in ("seed_style", "batched"):
                    print(json.dumps({"error": f"unknown mode {mode}"}), flush=True)
                    continue
                wall, evals = one(mode, int(seed))
                print(json.dumps({"wall": wall, "model_evals": evals}), flush=True)
        return
    walls, evals = [], 0
    with torch.inference_mode():
        for run in range(-1, args.runs):  # run -1 warms up
            sampler = Sampler(model, manifest, args.steps, args.eta, args.guidance,
                              args.class_index)
            start = time.perf_counter()
            grid(sampler, shape, args.steps, branch_steps, args.branches, args.mode, 100 + run)
            if run >= 0:
                walls.append(time.perf_counter() - start)
            # Trajectory steps, as dgrid counts model evaluations (a guided
            # step is one evaluation of two rows).
            evals = sampler.evals
    print(json.dumps({"walls": walls, "model_evals": evals}))


if __name__ == "__main__":
    main()
