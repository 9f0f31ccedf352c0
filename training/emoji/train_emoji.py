#!/usr/bin/python3
"""Trains the emoji bundle (models/emoji) on the CPU, resumably (it places
nothing on a GPU).

    training/emoji/fetch.sh                      # the data, once
    /usr/bin/python3 training/emoji/train_emoji.py all --run training/runs/emoji

Stages, each saved in --run (the autoencoder and the diffusion stage every
few hundred steps, the others when done) so a stopped run resumes:
  ae          the KL autoencoder (f = 4) on random 32x32 crops
  latents     encodes the training images once; fixes latent_scale
  diffusion   the text encoder and the UNet together, with EMA
  classifier  the evaluation classifier (subcategory and style)
  export      writes the bundle (TorchScript, vocabulary, manifest)
`all` runs what is not done yet, in that order.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import bundle_manifest  # noqa: E402
import emoji_model as em  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------- data

class Data:
    def __init__(self, folder):
        with open(os.path.join(folder, "meta.json")) as f:
            self.meta = json.load(f)
        raw = open(os.path.join(folder, "images.u8"), "rb").read()
        n = len(self.meta["records"])
        u8 = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(n, 64, 64, 3)
        self.images = u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0     # [-1, 1]
        self.records = self.meta["records"]
        self.train = [i for i, r in enumerate(self.records) if r["split"] == "train"]
        self.heldout = [i for i, r in enumerate(self.records) if r["split"] == "heldout"]
        self.styles = [s["word"] for s in self.meta["styles"]]
        self.subcategories = sorted({r["subcategory"] for r in self.records})


def caption(record, rng, drop_tags=False):
    """The emoji's name, with some of its tags and the style word sampled in:
    "grinning cat, happy, smile, twemoji"."""
    parts = [record["name"] if rng.random() < 0.6 else record.get("label", record["name"])]
    if not drop_tags:
        tags = [t for t in record["tags"] if t not in record["name"].split()]
        rng.shuffle(tags)
        parts += tags[: rng.randint(0, min(3, len(tags)))]
    if rng.random() < 0.7:
        parts.append(record["style"])
    return ", ".join(parts)


def vocabulary_words(data):
    words = set()
    for r in data.records:
        words.update(em.split_words(r["name"]))
        words.update(em.split_words(r.get("label", "")))
        for t in r["tags"]:
            words.update(em.split_words(t))
        words.update(em.split_words(r["style"]))
    words.add(",")
    return words


# ---------------------------------------------------------------- checkpoints

def save(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path):
    return torch.load(path) if os.path.exists(path) else None


def log(run, stage, text):
    line = f"{time.strftime('%H:%M:%S')} {stage}: {text}"
    print(line, flush=True)
    with open(os.path.join(run, "log.txt"), "a") as f:
        f.write(line + "\n")


def psnr(a, b):
    """Per-image PSNR of images in [-1, 1] (peak-to-peak 2), averaged."""
    mse = ((a.clamp(-1, 1) - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(4.0 / mse)).mean().item()


# ------------------------------------------------------------------------- ae

def train_ae(args, data):
    path = os.path.join(args.run, "ae.ckpt")
    torch.manual_seed(args.seed)
    ae = em.Autoencoder()
    opt = torch.optim.AdamW(ae.parameters(), lr=args.ae_lr, weight_decay=0.0)
    state = load(path)
    step = 0
    if state:
        ae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        if state.get("done"):
            return ae
    rng = torch.Generator().manual_seed(args.seed + step)
    train = torch.tensor(data.train)
    held = data.images[data.heldout]
    t0 = time.time()
    while step < args.ae_steps:
        lr = args.ae_lr * 0.5 * (1 + math.cos(math.pi * step / args.ae_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = train[torch.randint(len(train), (args.ae_batch,), generator=rng)]
        # Random 32x32 crops on the 4-pixel latent grid, and mirror images.
        ox, oy = (torch.randint(9, (2,), generator=rng) * 4).tolist()
        x = data.images[idx][:, :, oy:oy + 32, ox:ox + 32]
        if torch.rand(1, generator=rng).item() < 0.5:
            x = x.flip(3)
        mean, logvar = ae.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        y = ae.decoder(z)
        rec = (y - x).abs().mean() + ((y - x) ** 2).mean()
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
        loss = rec + args.ae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 250 == 0 or step == args.ae_steps:
            with torch.no_grad():
                p = psnr(ae.decoder(ae.encoder(held)[0]), held)
            log(args.run, "ae", f"step {step} loss {loss.item():.4f} kl {kl.item():.3f} "
                                f"heldout PSNR {p:.2f} dB lr {lr:.2e} "
                                f"({time.time() - t0:.0f} s)")
            save(path, {"model": ae.state_dict(), "opt": opt.state_dict(), "step": step})
    save(path, {"model": ae.state_dict(), "opt": opt.state_dict(), "step": step, "done": True,
                "seconds": time.time() - t0})
    return ae


# -------------------------------------------------------------------- latents

def encode_latents(args, data, ae):
    path = os.path.join(args.run, "latents.pt")
    state = load(path)
    if state:
        return state
    with torch.no_grad():
        means, logvars = [], []
        for i in range(0, len(data.images), 128):
            m, lv = ae.encoder(data.images[i:i + 128])
            means.append(m)
            logvars.append(lv)
    mean, logvar = torch.cat(means), torch.cat(logvars)
    train = torch.tensor(data.train)
    sample = mean[train] + torch.exp(0.5 * logvar[train]) * torch.randn_like(mean[train])
    scale = 1.0 / sample.std().item()
    state = {"mean": mean, "logvar": logvar, "latent_scale": scale}
    save(path, state)
    log(args.run, "latents", f"latent_scale {scale:.5f} (std {1 / scale:.4f})")
    return state


# ------------------------------------------------------------------ diffusion

# The schedule export_emoji.py writes into the manifest.
SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "train_timesteps": 1000}


def alphas_cumprod():
    return bundle_manifest.alphas_cumprod(SCHEDULE).float()


def make_diffusion(vocab_size, args):
    text = em.TextEncoder(vocab_size, args.max_length, dim=args.context_dim)
    unet = em.UNet(context_dim=args.context_dim, widths=tuple(args.unet_widths),
                   temb=4 * args.unet_widths[0])
    return text, unet


def parse_schedule(text):
    """--schedule "END:LR:GAMMA,END:LR:GAMMA,...": consecutive segments of the
    diffusion training, each a warm-up and a cosine decay of the learning rate
    to zero from the previous END to its own (a warm restart between them),
    with min-SNR weighting GAMMA (0: none)."""
    segments, start = [], 0
    for part in text.split(","):
        end, lr, gamma = part.split(":")
        if int(end) <= start:
            raise SystemExit(f"--schedule: segment ends must increase, got {end} after {start}")
        segments.append({"start": start, "end": int(end), "lr": float(lr),
                         "snr_gamma": float(gamma)})
        start = int(end)
    return segments


def plan_segments(state, args):
    """The schedule asked for, checked against the one a checkpoint was
    trained with: a run resumes, or is extended by later segments, only if
    the segments it finished are a prefix of what is asked. The segment in
    progress may change (that is how a running segment is lengthened)."""
    segments = parse_schedule(args.schedule)
    if not state:
        return segments
    done = state.get("segments")
    if done is None:
        raise SystemExit(f"the checkpoint in {args.run} predates --schedule; use a new --run")
    if state["step"] > segments[-1]["end"]:
        raise SystemExit(f"--schedule ends at step {segments[-1]['end']}, but the checkpoint in "
                         f"{args.run} is at step {state['step']}; use a new --run")
    for old, new in zip(done, segments):
        if old["end"] <= state["step"] and old != new:
            raise SystemExit(f"--schedule: the checkpoint in {args.run} was trained with "
                             f"{old}, not {new}; use a new --run")
    return segments


def snr_weight(abar_t, gamma):
    """Min-SNR-gamma loss weights for epsilon prediction, min(SNR, gamma) / SNR
    (Hang et al. 2023): the low-noise steps, which fix detail, count less, so
    the high-noise ones, where what is drawn is decided, get more of the
    gradient. gamma 0 means no weighting."""
    if gamma <= 0:
        return torch.ones_like(abar_t)
    snr = abar_t / (1 - abar_t)
    return snr.clamp(max=gamma) / snr


def train_diffusion(args, data, latents, vocab):
    path = os.path.join(args.run, "diffusion.ckpt")
    torch.manual_seed(args.seed)
    text, unet = make_diffusion(len(vocab.words), args)
    params = list(text.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)  # lr set per step
    ema_text, ema_unet = make_diffusion(len(vocab.words), args)
    ema_text.load_state_dict(text.state_dict())
    ema_unet.load_state_dict(unet.state_dict())
    step = 0
    state = load(path)
    if state:
        text.load_state_dict(state["text"])
        unet.load_state_dict(state["unet"])
        ema_text.load_state_dict(state["ema_text"])
        ema_unet.load_state_dict(state["ema_unet"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    segments = plan_segments(state, args)
    if step >= segments[-1]["end"]:
        return ema_text, ema_unet
    abar = alphas_cumprod()
    rng = random.Random(args.seed * 1000003 + step)
    gen = torch.Generator().manual_seed(args.seed + step)
    scale = latents["latent_scale"]
    mean, logvar = latents["mean"], latents["logvar"]
    train = data.train
    ema_params = list(ema_text.parameters()) + list(ema_unet.parameters())
    t0 = time.time()
    seen_seconds = state.get("seconds", 0.0) if state else 0.0
    running = None
    end = segments[-1]["end"]
    while step < end:
        seg = next(s for s in segments if s["start"] <= step < s["end"])
        into, length = step - seg["start"], seg["end"] - seg["start"]
        warm = min(1.0, (into + 1) / 500)
        lr = seg["lr"] * warm * 0.5 * (1 + math.cos(math.pi * into / length))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = [train[rng.randrange(len(train))] for _ in range(args.batch)]
        caps = ["" if rng.random() < args.drop else caption(data.records[i], rng) for i in idx]
        ids = torch.tensor([vocab.encode(c) for c in caps])
        m, lv = mean[idx], logvar[idx]
        z0 = (m + torch.exp(0.5 * lv) * torch.randn(m.shape, generator=gen)) * scale
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = abar[t][:, None, None, None]
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        per_sample = ((unet(zt, t, text(ids)) - noise) ** 2).flatten(1).mean(1)
        loss = (per_sample * snr_weight(abar[t], seg["snr_gamma"])).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema_params, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == end:
            elapsed = seen_seconds + time.time() - t0
            log(args.run, "diffusion", f"step {step} loss {running:.4f} lr {lr:.2e} "
                                       f"({elapsed:.0f} s)")
            with open(os.path.join(args.run, "loss.csv"), "a") as f:
                f.write(f"{step},{running:.5f}\n")
        if step % 500 == 0 or step == end:
            save(path, {"text": text.state_dict(), "unet": unet.state_dict(),
                        "ema_text": ema_text.state_dict(), "ema_unet": ema_unet.state_dict(),
                        "opt": opt.state_dict(), "step": step,
                        "seconds": seen_seconds + time.time() - t0,
                        "final_loss": running,
                        "vocab": vocab.words, "segments": segments})
    return ema_text, ema_unet


# ----------------------------------------------------------------- classifier

class Classifier(torch.nn.Module):
    """Image [B, 3, 64, 64] in [-1, 1] -> (subcategory logits, style logits,
    features). Trained on the real training images; its features are what the
    Frechet distance is computed on."""

    def __init__(self, subcategories, styles, width=24):
        super().__init__()
        w = width

        def block(cin, cout):
            return torch.nn.Sequential(
                torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout),
                torch.nn.SiLU(), torch.nn.Conv2d(cout, cout, 3, padding=1),
                torch.nn.BatchNorm2d(cout), torch.nn.SiLU(), torch.nn.MaxPool2d(2))

        # 64x64 is averaged down to 32x32 first: subcategory and style show there.
        self.body = torch.nn.Sequential(torch.nn.AvgPool2d(2), block(3, w), block(w, 2 * w),
                                        block(2 * w, 4 * w))
        self.features = torch.nn.Linear(4 * w * 16, 128)
        self.sub = torch.nn.Linear(128, subcategories)
        self.style = torch.nn.Linear(128, styles)

    def forward(self, x):
        f = F.silu(self.features(self.body(x).flatten(1)))
        return self.sub(f), self.style(f), f


def train_classifier(args, data):
    path = os.path.join(args.run, "classifier.ckpt")
    torch.manual_seed(args.seed)
    net = Classifier(len(data.subcategories), len(data.styles))
    state = load(path)
    if state and state.get("done"):
        net.load_state_dict(state["model"])
        return net, state
    sub_of = {s: i for i, s in enumerate(data.subcategories)}
    style_of = {s: i for i, s in enumerate(data.styles)}
    ys = torch.tensor([sub_of[r["subcategory"]] for r in data.records])
    yst = torch.tensor([style_of[r["style"]] for r in data.records])
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(args.seed)
    train = torch.tensor(data.train)
    steps = args.classifier_steps
    t0 = time.time()
    net.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = train[torch.randint(len(train), (64,), generator=gen)]
        x = data.images[idx]
        # Small shifts and colour jitter, so it judges shapes, not pixels.
        dx, dy = (torch.randint(-4, 5, (2,), generator=gen)).tolist()
        x = torch.roll(x, (dy, dx), (2, 3))
        x = (x * (1 + 0.1 * torch.randn(len(idx), 3, 1, 1, generator=gen))).clamp(-1, 1)
        sub, sty, _ = net(x)
        loss = F.cross_entropy(sub, ys[idx]) + F.cross_entropy(sty, yst[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 200 == 0:
            log(args.run, "classifier", f"step {step + 1} loss {loss.item():.3f}")
    net.eval()
    held = torch.tensor(data.heldout)
    with torch.no_grad():
        sub, sty, _ = net(data.images[held])
    acc_sub = (sub.argmax(1) == ys[held]).float().mean().item()
    acc_style = (sty.argmax(1) == yst[held]).float().mean().item()
    log(args.run, "classifier", f"held-out accuracy: subcategory {acc_sub:.3f}, "
                                f"style {acc_style:.3f} ({time.time() - t0:.0f} s)")
    state = {"model": net.state_dict(), "done": True, "heldout_subcategory_accuracy": acc_sub,
             "heldout_style_accuracy": acc_style}
    save(path, state)
    return net, state


# --------------------------------------------------------------------- export

def export(args, data, ae, latents, vocab, text, unet, classifier, cstate):
    import export_emoji
    export_emoji.write_bundle(args, data, ae, latents, vocab, text, unet, classifier, cstate)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["ae", "latents", "diffusion", "classifier", "export", "all"])
    p.add_argument("--data", default=os.path.join(HERE, "data"))
    p.add_argument("--run", default=os.path.join(HERE, "..", "runs", "emoji"))
    p.add_argument("--out", default=os.path.join(HERE, "..", "..", "models", "emoji"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--ae_steps", type=int, default=3000)
    p.add_argument("--ae_batch", type=int, default=32)
    p.add_argument("--ae_lr", type=float, default=2e-3)
    p.add_argument("--ae_kl", type=float, default=1e-5)
    p.add_argument("--schedule", default="10000:1e-3:0,20000:1e-3:5,25000:5e-4:5,38000:1e-3:5",
                   help="diffusion segments END:LR:MIN_SNR_GAMMA, comma-separated")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--drop", type=float, default=0.1, help="caption drop probability (CFG)")
    p.add_argument("--max_length", type=int, default=20)
    p.add_argument("--context_dim", type=int, default=64)
    p.add_argument("--unet_widths", type=int, nargs=2, default=[32, 64])
    p.add_argument("--classifier_steps", type=int, default=1500)
    p.add_argument("--guidance", type=float, default=4.0, help="the bundle's default guidance")
    p.add_argument("--version", default="",
                   help="the bundle's version (default: the UNet weights' SHA-256, 12 hex "
                        "digits; the orchestrator's cache keys on it)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.run, exist_ok=True)
    data = Data(args.data)
    vocab = em.Vocab(vocabulary_words(data), args.max_length)
    saved = load(os.path.join(args.run, "diffusion.ckpt"))
    if saved and "vocab" in saved:  # a resumed run keeps the word list it started with
        vocab.words = saved["vocab"]
        vocab.ids = {w: i for i, w in enumerate(vocab.words)}
    stage = args.stage
    ae = train_ae(args, data) if stage in ("ae", "all", "latents", "diffusion", "export") else None
    if stage == "ae":
        return
    latents = encode_latents(args, data, ae) if ae is not None else None
    if stage == "latents":
        return
    text = unet = None
    if stage in ("diffusion", "all", "export"):
        text, unet = train_diffusion(args, data, latents, vocab)
    if stage == "diffusion":
        return
    classifier, cstate = train_classifier(args, data)
    if stage == "classifier":
        return
    export(args, data, ae, latents, vocab, text, unet, classifier, cstate)


if __name__ == "__main__":
    main()
