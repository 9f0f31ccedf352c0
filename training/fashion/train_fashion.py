#!/usr/bin/python3
"""Trains the Fashion-MNIST bundle (models/fashion-mnist) on CPU or CUDA,
resumably, from Debian's dataset-fashion-mnist.

    /usr/bin/python3 training/fashion/train_fashion.py all --out models/fashion-mnist

Stages, each checkpointed in --run (default training/runs/fashion) so that a
stopped run resumes where it was when the same command is run again:
  classifier  the evaluation classifier, which the bundle declares as its judge
  diffusion   the class-conditional epsilon UNet, with EMA weights
  export      writes the bundle into --out: model.pt (EMA weights), classifier.pt
              and classifier.json, manifest.json (through tools/bundle_manifest.py),
              loss.csv and loss.png (when matplotlib is installed)
`all` runs what is not done yet, in that order. Only `export` writes into
--out. Without a trained classifier in --run, export keeps the classifier.pt
already in --out (so retraining the denoiser keeps the judge it is compared
by).
"""
import argparse
import copy
import csv
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bundle_manifest  # noqa: E402
import fashion_model as fm  # noqa: E402

SCHEDULE = {
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "set_alpha_to_one": False,
}
# The settings a stage's checkpoint was started with; resuming with others
# would change the data order or the learning-rate schedule mid-run.
DIFFUSION_KEYS = ("epochs", "batch", "lr", "seed", "limit_images", "max_steps", "cond_dropout",
                  "ema_decay")
CLASSIFIER_KEYS = ("classifier_epochs", "batch", "lr", "seed", "limit_images", "max_steps")


# ------------------------------------------------------------------ helpers

def mix_seed(seed, counter):
    """SplitMix64 of (seed, counter): independent generator seeds per step
    and per epoch, so a resumed run draws what an unbroken one would."""
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + counter + 0x632BE59BD9B4E019) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) >> 1  # 63 bits: torch.Generator takes a signed seed


def generator(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "CPU"


def hardware(device, threads):
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, fp32"
    return f"{cpu_model()}, {os.cpu_count()} cores, {threads} torch threads, fp32"


def save(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # a stopped run never leaves half a checkpoint


def load(path):
    return torch.load(path, map_location="cpu") if os.path.exists(path) else None


def check_same_run(path, saved, args, keys):
    changed = [f"--{k} {saved[k]} (now {getattr(args, k)})" for k in keys
               if k in saved and saved[k] != getattr(args, k)]
    if changed:
        sys.exit(f"{path} was started with " + ", ".join(changed) +
                 f"; rerun with those flags or remove {path}")


def run_config(args, keys):
    return {k: getattr(args, k) for k in keys}


# --------------------------------------------------------------- classifier

def train_classifier(args, device):
    """Trains the judge; False when --stop_after stopped it first."""
    path = os.path.join(args.run, "classifier.ckpt")
    state = load(path)
    if state:
        check_same_run(path, state["config"], args, CLASSIFIER_KEYS)
    if state and state["done"]:
        print(f"classifier: done ({state['test_accuracy']:.4f} test accuracy)", flush=True)
        return True
    train_x, train_y = fm.load_split(args.data, "train", args.limit_images)
    test_x, test_y = fm.load_split(args.data, "t10k", args.limit_images)
    torch.manual_seed(args.seed)
    net = fm.Classifier().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    n = len(train_x)
    per_epoch = n // args.batch
    total = per_epoch * args.classifier_epochs
    if args.max_steps:
        total = min(total, args.max_steps)
    step, seconds = 0, 0.0
    if state:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, seconds = state["step"], state["train_seconds"]
        # Dropout draws from torch's global generator: it goes on from where
        # the stopped run left it, not from just after the initialisation.
        if "rng" in state:
            torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        print(f"classifier: resumed at step {step}", flush=True)
    print(f"classifier: {n} images, {total} steps, {fm.parameters(net)} parameters", flush=True)
    gen = generator(args.seed)
    accuracy = 0.0
    t0 = time.time()
    stop_at = step + args.stop_after if args.stop_after else total
    while step < total:
        if step >= stop_at:  # checkpoints come at epochs' ends: --stop_after rounds up to one
            print(f"classifier: stopped at step {step} (--stop_after); rerun to resume", flush=True)
            return False
        epoch = step // per_epoch
        perm = torch.randperm(n, generator=generator(mix_seed(args.seed, 2000000 + epoch)))
        for i in range(step % per_epoch, per_epoch):
            gen.manual_seed(mix_seed(args.seed, 3000000 + step))
            # Cosine decay over the run; no warmup needed at this size.
            for group in opt.param_groups:
                group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            idx = perm[i * args.batch:(i + 1) * args.batch]
            x = fm.to_unit_range(train_x[idx])
            # Random horizontal flips: a garment's class does not depend on
            # its left-right orientation.
            flip = (torch.rand(args.batch, generator=gen) < 0.5).view(-1, 1, 1, 1)
            x = torch.where(flip, x.flip(3), x).to(device)
            net.train()
            loss = F.cross_entropy(net(x)[0], train_y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0:
                print(f"classifier step {step}/{total} loss {loss.item():.4f}", flush=True)
            if step == total:
                break
        accuracy = test_accuracy(net, test_x, test_y, device)
        print(f"classifier epoch {step / per_epoch:.2f}: test accuracy {accuracy:.4f}",
              flush=True)
        save(path, {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "train_seconds": seconds + time.time() - t0, "done": step >= total,
                    "test_accuracy": accuracy, "epochs": step / per_epoch,
                    "test_images": len(test_x), "parameters": fm.parameters(net),
                    "config": run_config(args, CLASSIFIER_KEYS)})
    return True


def test_accuracy(net, images, labels, device):
    net.eval()
    correct = 0
    with torch.no_grad():
        for a in range(0, len(images), 500):
            logits, _ = net(fm.to_unit_range(images[a:a + 500]).to(device))
            correct += int((logits.argmax(1).cpu() == labels[a:a + 500]).sum())
    return correct / len(images)


# ---------------------------------------------------------------- diffusion

def learning_rate(peak, step, total):
    """Linear warmup, then cosine decay to a tenth of the peak: the late,
    small steps are where the EMA weights settle."""
    warmup = max(1, min(250, total // 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def final_loss(curve, step, total):
    """Mean logged loss over the last min(200, total/5) steps: one batch's
    loss is noisy because each draws its own timesteps."""
    window = min(200, max(1, total // 5))
    recent = [p["loss"] for p in curve if p["step"] > step - window]
    return statistics.fmean(recent) if recent else float("nan")


def train_diffusion(args, device):
    """Trains the denoiser; False when --stop_after stopped it first."""
    path = os.path.join(args.run, "diffusion.ckpt")
    state = load(path)
    if state:
        check_same_run(path, state["config"], args, DIFFUSION_KEYS)
    images, labels = fm.load_split(args.data, "train", args.limit_images)
    n = len(images)
    per_epoch = n // args.batch
    if per_epoch < 1:
        sys.exit(f"--batch {args.batch} exceeds the {n} training images")
    total = per_epoch * args.epochs
    if args.max_steps:
        total = min(total, args.max_steps)
    if state and state["step"] >= total:
        print(f"diffusion: done ({state['step']} steps)", flush=True)
        return True
    here = hardware(device, args.threads)

    torch.manual_seed(args.seed)
    net = fm.UNet().to(device)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    step, seconds, machines, curve = 0, 0.0, "", []
    if state:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        step, seconds = state["step"], state["train_seconds"]
        machines, curve = state["hardware"], state["curve"]
        print(f"diffusion: resumed from {path} at step {step} ({seconds:.0f} s trained)",
              flush=True)
    # The manifest names every machine that took steps of this run.
    if here not in machines:
        machines = f"{machines}; then {here}" if machines else here

    abar = bundle_manifest.alphas_cumprod(SCHEDULE)
    sqrt_ab = abar.sqrt().float().to(device)
    sqrt_1mab = (1 - abar).sqrt().float().to(device)
    steps_t = SCHEDULE["train_timesteps"]
    print(f"diffusion: {n} images, {per_epoch} steps/epoch, {total} steps, batch {args.batch}, "
          f"{fm.parameters(net)} parameters, {here}", flush=True)

    def checkpoint():
        save(path, {"model": net.state_dict(), "ema": ema.state_dict(),
                    "optimizer": opt.state_dict(), "step": step,
                    "train_seconds": seconds + time.time() - t_start, "hardware": machines,
                    "curve": curve, "config": run_config(args, DIFFUSION_KEYS),
                    "steps_per_epoch": per_epoch, "total_steps": total})

    gen = generator(args.seed)
    stop_at = step + args.stop_after if args.stop_after else total
    perm, perm_epoch = None, -1
    interval_loss, interval_steps = 0.0, 0
    t_start = t_interval = time.time()
    net.train()
    while step < total:
        epoch = step // per_epoch
        if epoch != perm_epoch:
            perm = torch.randperm(n, generator=generator(mix_seed(args.seed, 1000000 + epoch)))
            perm_epoch = epoch
        i = step % per_epoch
        idx = perm[i * args.batch:(i + 1) * args.batch]
        # Timesteps, noise and dropped labels come from a generator keyed by
        # the step, so a resumed run continues exactly where it stopped.
        gen.manual_seed(mix_seed(args.seed, step))
        t = torch.randint(0, steps_t, (args.batch,), generator=gen)
        noise = torch.randn((args.batch,) + tuple(images.shape[1:]), generator=gen)
        drop = torch.rand(args.batch, generator=gen) < args.cond_dropout
        cond = torch.where(drop, torch.full_like(labels[idx], fm.NUM_CLASSES), labels[idx])
        x0 = fm.to_unit_range(images[idx])
        t, noise, cond, x0 = t.to(device), noise.to(device), cond.to(device), x0.to(device)
        xt = sqrt_ab[t].view(-1, 1, 1, 1) * x0 + sqrt_1mab[t].view(-1, 1, 1, 1) * noise

        for group in opt.param_groups:
            group["lr"] = learning_rate(args.lr, step, total)
        loss = F.mse_loss(net(xt, t, cond), noise)
        opt.zero_grad()
        loss.backward()
        # Rare large batches (many small t) cannot throw the weights.
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            # EMA with the usual warm-up, so that early exports are not
            # dominated by the random initialisation.
            d = min(args.ema_decay, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), net.parameters()):
                e.mul_(d).add_(p.detach(), alpha=1 - d)

        value = loss.item()
        if not math.isfinite(value):
            sys.exit(f"loss is {value} at step {step}; lower --lr or resume from {path}")
        interval_loss += value
        interval_steps += 1
        if step % args.log_every == 0 or step == total:
            now = time.time()
            rate = interval_steps * args.batch / (now - t_interval)
            curve.append({"step": step, "epoch": round(step / per_epoch, 4),
                          "loss": interval_loss / interval_steps, "images_per_s": rate,
                          "lr": learning_rate(args.lr, step - 1, total)})
            if step % (args.log_every * 5) == 0 or step == total:
                print(f"diffusion step {step}/{total} epoch {step / per_epoch:.2f} "
                      f"loss {curve[-1]['loss']:.4f} {rate:.0f} img/s", flush=True)
            interval_loss, interval_steps = 0.0, 0
            t_interval = now
        if (step % per_epoch == 0 or step % args.checkpoint_every == 0 or step == total
                or step == stop_at):
            t_save = time.time()
            checkpoint()
            t_interval += time.time() - t_save  # not training time for images/s
        if step == stop_at and step < total:
            print(f"diffusion: stopped at step {step} (--stop_after); rerun to resume", flush=True)
            return False
    print(f"diffusion: done, final loss {final_loss(curve, step, total):.4f}", flush=True)
    return True


# ------------------------------------------------------------------- export

def forward_ms_per_image(model_path, threads, batch=32, iters=20):
    """Median ms per image of batch-32 forwards of the saved TorchScript on
    this CPU, the figure the manifest records."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    m = torch.jit.load(model_path, map_location="cpu").eval()
    x = torch.randn(batch, 1, 28, 28)
    t = torch.randint(0, SCHEDULE["train_timesteps"], (batch,))
    c = torch.randint(0, fm.NUM_CLASSES + 1, (batch,))
    times = []
    with torch.no_grad():
        for i in range(3 + iters):  # the profiling executor specialises first
            a = time.perf_counter()
            m(x, t, c)
            if i >= 3:
                times.append((time.perf_counter() - a) * 1000 / batch)
    torch.set_num_threads(saved)
    return statistics.median(times)


def write_loss(curve, out):
    with open(os.path.join(out, "loss.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "loss", "images_per_s", "lr"])
        for p in curve:
            w.writerow([p["step"], f"{p['epoch']:.4f}", f"{p['loss']:.6f}",
                        f"{p['images_per_s']:.1f}", f"{p['lr']:.6g}"])
    png = os.path.join(out, "loss.png")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if os.path.exists(png):
            os.remove(png)  # it would show another run's curve
        print("matplotlib is not installed: loss.png not drawn (loss.csv has the curve)",
              flush=True)
        return
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([p["epoch"] for p in curve], [p["loss"] for p in curve], lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE loss (epsilon)")
    ax.set_title("train_fashion.py diffusion")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def export(args):
    dstate = load(os.path.join(args.run, "diffusion.ckpt"))
    if dstate is None:
        sys.exit(f"export: no diffusion checkpoint in {args.run}; run the diffusion stage")
    total = dstate["total_steps"]
    loss = final_loss(dstate["curve"], dstate["step"], total)
    if not math.isfinite(loss):
        sys.exit(f"export: the run in {args.run} logged no loss in its last steps, which the "
                 "manifest's final loss averages (a --log_every larger than the steps run?); "
                 "nothing written")
    os.makedirs(args.out, exist_ok=True)
    # A bundle is whole or has no manifest: an export that fails part way
    # leaves no new weights beside the old manifest.
    manifest_path = os.path.join(args.out, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    ema = fm.UNet()
    ema.load_state_dict(dstate["ema"])
    model_path = os.path.join(args.out, "model.pt")
    torch.jit.save(torch.jit.script(ema.eval()), model_path + ".tmp")
    os.replace(model_path + ".tmp", model_path)
    ms = forward_ms_per_image(model_path, args.threads)

    cstate = load(os.path.join(args.run, "classifier.ckpt"))
    classifier_path = os.path.join(args.out, "classifier.pt")
    if cstate and not cstate["done"]:
        # A stopped classifier (--stop_after) is no judge to compare by.
        print(f"export: the classifier in {args.run} is unfinished; "
              + (f"keeping {classifier_path}" if os.path.exists(classifier_path)
                 else "the bundle gets no judge"), flush=True)
    elif cstate:
        net = fm.Classifier()
        net.load_state_dict(cstate["model"])
        torch.jit.save(torch.jit.script(net.eval()), classifier_path + ".tmp")
        os.replace(classifier_path + ".tmp", classifier_path)
        with open(os.path.join(args.out, "classifier.json"), "w") as f:
            json.dump({"file": "classifier.pt", "test_accuracy": round(cstate["test_accuracy"], 4),
                       "test_images": cstate["test_images"], "feature_dim": fm.FEATURES,
                       "parameters": cstate["parameters"], "epochs": round(cstate["epochs"], 2),
                       "train_seconds": round(cstate["train_seconds"]),
                       "command": command(args, "classifier")}, f, indent=2)
            f.write("\n")
    elif os.path.exists(classifier_path):
        print(f"export: no classifier trained in {args.run}; keeping {classifier_path}",
              flush=True)
    write_loss(dstate["curve"], args.out)

    manifest = {
        "name": "fashion-mnist",
        # New weights, a new version: the orchestrator's cache keys on it.
        "version": args.version or bundle_manifest.weights_version([ema]),
        "description": "Class-conditional DDPM UNet (epsilon prediction) on 28x28 Fashion-MNIST, "
                       "trained by training/fashion/train_fashion.py; cond = class index, or "
                       "null_label for unconditional / classifier-free guidance.",
        "latent_shape": [1, 28, 28],
        "image_shape": [28, 28, 1],
        "weights": "model.pt",
        "timestep_dtype": "float",
        "schedule": SCHEDULE,
        "conditioning": {"class_labels": fm.CLASS_LABELS, "null_label": fm.NUM_CLASSES},
        "decoder": {"kind": "identity", "value_range": [-1, 1]},
        "defaults": {"steps": 50, "eta": 1, "guidance": args.guidance, "spacing": "leading"},
        "data": {"dataset": "Fashion-MNIST (Debian dataset-fashion-mnist)", "license": "MIT",
                 "source": "https://github.com/zalandoresearch/fashion-mnist"},
        "training": {
            "command": command(args, "all"),
            "epochs": math.ceil(dstate["step"] / dstate["steps_per_epoch"]),
            "seed": args.seed,
            "final_loss": round(loss, 5),
            "hardware": dstate["hardware"],
            "train_seconds": round(dstate["train_seconds"]),
            "parameters": fm.parameters(ema),
            "ms_per_image_forward_b32": round(ms, 3),
        },
    }
    if os.path.exists(classifier_path):
        manifest["classifier"] = "classifier.pt"
        manifest["judge"] = {"weights": "classifier.pt",
                             "heads": [{"name": "class", "output": 0,
                                        "labels": fm.CLASS_LABELS}]}
    bundle_manifest.write_manifest(manifest_path, manifest)
    print(f"export: {args.out} (final loss {manifest['training']['final_loss']}, "
          f"{ms:.3f} ms/image at batch 32)", flush=True)


def command(args, stage):
    """The command as a user would retype it, for the manifest."""
    parts = ["/usr/bin/python3 training/fashion/train_fashion.py", stage, "--out", args.out,
             "--epochs", str(args.epochs), "--batch", str(args.batch), "--lr", str(args.lr),
             "--seed", str(args.seed), "--guidance", str(args.guidance)]
    if args.classifier_epochs != 10:
        parts += ["--classifier_epochs", str(args.classifier_epochs)]
    for flag in ("limit_images", "max_steps"):
        if getattr(args, flag):
            parts += [f"--{flag}", str(getattr(args, flag))]
    return " ".join(parts)


# --------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["classifier", "diffusion", "export", "all"])
    p.add_argument("--out", default=os.path.join(ROOT, "models", "fashion-mnist"),
                   help="the bundle folder export writes")
    p.add_argument("--run", default=os.path.join(ROOT, "training", "runs", "fashion"),
                   help="checkpoints; a rerun with the same flags resumes from them")
    p.add_argument("--data", default=fm.DEFAULT_DATA_DIR)
    p.add_argument("--epochs", type=int, default=11, help="denoiser epochs")
    p.add_argument("--classifier_epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--cond_dropout", type=float, default=0.1,
                   help="fraction of labels replaced by the null label")
    p.add_argument("--ema_decay", type=float, default=0.999)
    p.add_argument("--guidance", type=float, default=1.5,
                   help="the classifier-free guidance default written to the manifest")
    p.add_argument("--limit_images", type=int, default=0,
                   help="first N images of each split only (tests)")
    p.add_argument("--max_steps", type=int, default=0, help="stop after N steps (tests)")
    p.add_argument("--stop_after", type=int, default=0,
                   help="stop this invocation after N steps, checkpointed (tests of resuming)")
    p.add_argument("--log_every", type=int, default=20, help="steps per loss-curve point")
    p.add_argument("--version", default="",
                   help="the bundle's version (default: the weights' SHA-256, 12 hex digits; "
                        "the orchestrator's cache keys on it)")
    p.add_argument("--checkpoint_every", type=int, default=250,
                   help="steps between checkpoints (and at every epoch's end)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.run, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.stage in ("classifier", "all") and not train_classifier(args, device):
        return
    # A stopped stage exports nothing: a half-trained denoiser would replace
    # the bundle in --out.
    if args.stage in ("diffusion", "all") and not train_diffusion(args, device):
        return
    if args.stage in ("export", "all"):
        export(args)


if __name__ == "__main__":
    main()
