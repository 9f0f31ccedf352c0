#!/usr/bin/python3
"""Evaluates the emoji bundle through the real serving path.

    /usr/bin/python3 training/emoji/evaluate.py [--model models/emoji] [--grids 100]

Starts two dgrid-denoiser replicas (one torch thread each) and a
dgrid-orchestrator on loopback (the built binaries in build/bin, through
clients/python/tests/live_stack.py), asks for default grids of prompts that name
emoji, reads the cells' PNGs back, and scores them with the bundle's own
classifier (classifier.pt: subcategory and style). Real images come from
training/emoji/data (training/emoji/fetch.sh builds it). Writes eval.json
and eval/speciation.svg into the bundle folder.

Figures:
  autoencoder   reconstruction PSNR on the held-out images
  classifier    its accuracy on the held-out real images: the reference
  prompted      the fraction of samples whose predicted subcategory (and
                style, when the prompt names one) is the prompted emoji's,
                with a standard error over prompts
  frechet       Frechet distance on the classifier's features, samples vs
                real training images, next to a held-out-real vs training
                floor with as many images
  memorisation  each sample's RMS pixel distance to its nearest training
                image; a near-copy is closer than the autoencoder's own
                95th-percentile reconstruction error of training images
  speciation    per branch step, P(a branch's subcategory differs from its
                trunk's), and the same for style

`--quick N` is CI's check: N grids of two rows, accuracy only, no data needed.
"""
import argparse
import io
import json
import math
import os
import random
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


# --------------------------------------------------------------------- cells

def png_to_tensor(data):
    """A cell PNG to [3, 64, 64] in [-1, 1]."""
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1) / 127.5 - 1.0


# ------------------------------------------------------------------- figures

def frechet(a, b):
    """Frechet distance between Gaussians fitted to feature rows a and b."""
    a, b = a.double(), b.double()
    mu = a.mean(0) - b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    # tr sqrt(ca cb) through the symmetric form sqrt(ca)^T cb sqrt(ca).
    w, v = torch.linalg.eigh(ca)
    root = v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T
    inner = torch.linalg.eigvalsh(root @ cb @ root).clamp_min(0).sqrt().sum()
    return float(mu @ mu + ca.trace() + cb.trace() - 2 * inner)


def speciation_svg(points, path):
    """A two-line chart of P(change) by branch step, written as SVG."""
    w, h, left, bottom, top, right = 560, 320, 60, 50, 20, 130
    steps = [p["step"] for p in points]
    xmax = max(steps) or 1

    def x(s):
        return left + (w - left - right) * s / xmax

    def y(p):
        return top + (h - top - bottom) * (1 - p)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="DejaVu Sans, sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>']
    for i in range(6):
        p = i / 5
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(p):.1f}" y2="{y(p):.1f}" '
                   f'stroke="#ddd"/><text x="{left - 8}" y="{y(p) + 4:.1f}" '
                   f'text-anchor="end">{p:.1f}</text>')
    for s in steps:
        out.append(f'<text x="{x(s):.1f}" y="{h - bottom + 18}" text-anchor="middle">{s}</text>')
    out.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 10}" text-anchor="middle">'
               'branch step (of 50)</text>')
    out.append(f'<text transform="translate(16 {(top + h - bottom) / 2:.0f}) rotate(-90)" '
               'text-anchor="middle">P(branch differs from trunk)</text>')
    for key, colour, label in (("p_subcategory", "#d62728", "subcategory"),
                               ("p_style", "#1f77b4", "style")):
        pts = " ".join(f"{x(p['step']):.1f},{y(p[key]):.1f}" for p in points)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for p in points:
            out.append(f'<circle cx="{x(p["step"]):.1f}" cy="{y(p[key]):.1f}" r="3" '
                       f'fill="{colour}"/>')
        ly = top + 20 + (0 if key == "p_subcategory" else 20)
        out.append(f'<line x1="{w - right + 12}" x2="{w - right + 32}" y1="{ly}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/><text x="{w - right + 38}" '
                   f'y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


# ------------------------------------------------------------- bundle check

def bundle_vocab(args, manifest):
    """The bundle's word list as the training code's Vocab."""
    import emoji_model as em
    tok = manifest["conditioning"]["tokenizer"]
    words = open(os.path.join(args.model, tok["vocab"]), encoding="utf-8").read().split("\n")[:-1]
    vocab = em.Vocab([], tok["max_length"])
    vocab.words, vocab.ids = words, {w: i for i, w in enumerate(words)}
    return vocab


def check_bundle(args, manifest, prompts):
    """What CI asserts of the shipped bundle before sampling: its size and
    licences, and that the C++ tokenizer gives the ids training used."""
    size = sum(os.path.getsize(os.path.join(args.model, f)) for f in os.listdir(args.model)
               if os.path.isfile(os.path.join(args.model, f)))
    assert size <= 40e6, f"bundle is {size / 1e6:.1f} MB, over 40 MB"
    licence = manifest["data"]["license"]
    assert "Apache-2.0" in licence and "CC-BY-4.0" in licence, licence
    vocab = bundle_vocab(args, manifest)
    texts = manifest["conditioning"]["example_prompts"] + prompts + ["", "flag: côte d’ivoire"]
    out = subprocess.run([os.path.join(args.build, "bin", "dgrid"), "tokenize",
                          f"--model_dir={args.model}"] + texts,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == len(texts), out
    for text, line in zip(texts, out):
        want = [i for i in vocab.encode(text) if i != vocab.PAD]
        got = [int(v) for v in line.split()]
        got = [i for i in got if i != vocab.PAD]
        assert got == want, f"tokenize {text!r}: C++ {got}, training {want}"
    for text in manifest["conditioning"]["example_prompts"]:
        assert vocab.UNK not in vocab.encode(text), f"example prompt {text!r} has unknown words"
    print(f"bundle: {size / 1e6:.1f} MB, {len(vocab.words)} words, tokenizer agrees on "
          f"{len(texts)} prompts", flush=True)


# ------------------------------------------------------------ guidance sweep

def guidance_sweep(args, manifest, net, prompts, sub_of, style_of):
    """Prompted accuracy by guidance scale with the Python reference sampler
    (tools/import_diffusers.py: the same DDIM in law, not the engine's Philox
    noise), to choose the bundle's default guidance cheaply."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import import_diffusers
    bundle = import_diffusers.load_bundle(args.model)
    vocab = bundle_vocab(args, manifest)
    cond = torch.tensor([vocab.encode(p) for p, _, _ in prompts])
    uncond = torch.tensor([vocab.encode("")] * len(prompts))
    want_sub = torch.tensor([sub_of[s] for _, s, _ in prompts])
    want_style = torch.tensor([style_of[s] if s else -1 for _, _, s in prompts])
    styled = want_style >= 0
    out = []
    for g in [float(v) for v in args.sweep.split(",")]:
        images = []
        for i in range(0, len(prompts), 64):
            _, img = import_diffusers.sample(bundle, cond[i:i + 64], uncond[i:i + 64],
                                             guidance=g, seed=args.seed + i)
            images.append(img.clamp(-1, 1))
        got_sub, got_style, _ = classify(net, torch.cat(images))
        acc, se = grouped_accuracy(got_sub == want_sub, len(prompts))
        row = {"guidance": g, "samples": len(prompts),
               "subcategory_accuracy": acc, "subcategory_accuracy_se": se,
               "style_accuracy": round(
                   (got_style[styled] == want_style[styled]).float().mean().item(), 4)}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


# ---------------------------------------------------------------------- main

def grouped_accuracy(hit, groups):
    """(accuracy, its standard error) for hits [N] in `groups` equal
    consecutive groups: one per prompt for a grid's cells, one per image
    for real images. Samples of one prompt are not independent (a prompt
    the model cannot draw misses in every cell), so the error is over the
    groups: the spread of the per-group means."""
    per = hit.float().reshape(groups, -1)
    means = per.mean(1)
    se = means.std().item() / math.sqrt(groups) if groups > 1 else float("nan")
    return round(per.mean().item(), 4), round(se, 4)


def classify(net, images):
    subs, styles, feats = [], [], []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            s, st, f = net(images[i:i + 256])
            subs.append(s.argmax(1))
            styles.append(st.argmax(1))
            feats.append(f)
    return torch.cat(subs), torch.cat(styles), torch.cat(feats)


def prompts_for(records, n, rng, names_styles):
    """n (prompt, subcategory, style or None) from distinct training emoji,
    half of them with the style word."""
    names = sorted({r["name"]: r for r in records if r["split"] == "train"}.items())
    picks = rng.sample(names, min(n, len(names)))
    out = []
    for k, (name, r) in enumerate(picks):
        style = names_styles[k % len(names_styles)] if k % 2 == 0 else None
        out.append((name if style is None else f"{name}, {style}", r["subcategory"], style))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "models", "emoji"))
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--data", default=os.path.join(HERE, "data"))
    p.add_argument("--grids", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", type=int, default=0,
                   help="CI: this many two-row grids, accuracy only; exits 1 below --min_*")
    p.add_argument("--min_subcategory", type=float, default=0.3)
    p.add_argument("--min_style", type=float, default=0.6)
    p.add_argument("--out", default="", help="eval.json path (default: the bundle's)")
    p.add_argument("--sweep", default="",
                   help="guidance scales, e.g. 1,2,3,5: accuracy by scale (Python sampler) "
                        "and exit")
    args = p.parse_args()
    torch.set_num_threads(2)
    sys.path[:0] = [os.path.join(args.build, "python"), os.path.join(ROOT, "clients", "python"),
                    os.path.join(ROOT, "clients", "python", "tests"), HERE]
    import dgrid_client
    from live_stack import LiveStack

    manifest = json.load(open(os.path.join(args.model, "manifest.json")))
    cinfo = json.load(open(os.path.join(args.model, "classifier.json")))
    net = torch.jit.load(os.path.join(args.model, manifest["classifier"])).eval()
    sub_of = {s: i for i, s in enumerate(cinfo["subcategories"])}
    style_of = {s: i for i, s in enumerate(cinfo["styles"])}
    rng = random.Random(args.seed)
    if args.quick:
        records = json.load(open(os.path.join(HERE, "quick_prompts.json")))
    else:
        records = json.load(open(os.path.join(args.data, "meta.json")))["records"]
    n = args.quick or args.grids
    prompts = prompts_for(records, n, rng, cinfo["styles"])
    branch_steps = [0, 30] if args.quick else None   # None: the default preset's rows

    report = {"model": manifest["name"], "version": manifest["version"]}
    if args.sweep:
        sweep = guidance_sweep(args, manifest, net, prompts, sub_of, style_of)
        os.makedirs(os.path.join(args.model, "eval"), exist_ok=True)
        with open(args.out or os.path.join(args.model, "eval", "guidance_sweep.json"), "w") as f:
            json.dump(sweep, f, indent=1)
            f.write("\n")
        return
    if args.quick:
        check_bundle(args, manifest, [p for p, _, _ in prompts])
    grids = []
    t0 = time.time()
    bins = os.path.join(args.build, "bin")
    with LiveStack(args.model, replicas=2, threads=1, bins=bins) as stack:
        with dgrid_client.Client(stack.orchestrator) as client:
            client.wait_ready(120)
            for k, (prompt, _, _) in enumerate(prompts):
                g = client.create_grid(prompt=prompt, seed=args.seed * 100000 + k,
                                       branch_steps=branch_steps, model=manifest["name"])
                grids.append(g)
                if (k + 1) % 10 == 0:
                    print(f"{k + 1}/{len(prompts)} grids ({time.time() - t0:.0f} s)", flush=True)
    seconds = time.time() - t0
    plan = grids[0].plan
    report["sampler"] = {"steps": plan.steps, "eta": plan.eta, "guidance": plan.guidance,
                         "spacing": plan.spacing, "branches": plan.branches,
                         "branch_steps": list(plan.branch_steps)}
    report["grids"] = len(grids)
    report["grid_seconds_mean"] = round(seconds / len(grids), 3)

    # Trunks and the first row's branches are the prompted samples.
    samples, want_sub, want_style = [], [], []
    for g, (_, sub, style) in zip(grids, prompts):
        for cell in (g.trunk,) + g.rows[0].cells:
            samples.append(png_to_tensor(cell.png))
            want_sub.append(sub_of[sub])
            want_style.append(style_of[style] if style else -1)
    samples = torch.stack(samples)
    want_sub, want_style = torch.tensor(want_sub), torch.tensor(want_style)
    got_sub, got_style, feats = classify(net, samples)
    styled = want_style >= 0
    sub_acc, sub_se = grouped_accuracy(got_sub == want_sub, len(grids))
    prompted = {
        "samples": len(samples),
        "prompts": len(grids),
        "subcategory_accuracy": sub_acc,
        "subcategory_accuracy_se": sub_se,
        "se_is": "standard error over prompts (the spread of per-prompt accuracies)",
        "style_accuracy": round((got_style[styled] == want_style[styled]).float().mean().item(), 4),
        "styled_samples": int(styled.sum()),
        "chance_subcategory": round(1 / len(sub_of), 4),
    }
    report["prompted"] = prompted
    print(json.dumps(prompted), flush=True)
    if args.quick:
        ok = (prompted["subcategory_accuracy"] >= args.min_subcategory and
              prompted["style_accuracy"] >= args.min_style)
        print("quick check", "passed" if ok else "FAILED", f"(subcategory >= "
              f"{args.min_subcategory}, style >= {args.min_style})")
        sys.exit(0 if ok else 1)

    # Real images.
    import train_emoji
    data = train_emoji.Data(args.data)
    train_idx, held_idx = torch.tensor(data.train), torch.tensor(data.heldout)
    real_sub = torch.tensor([sub_of[r["subcategory"]] for r in data.records])
    real_style = torch.tensor([style_of[r["style"]] for r in data.records])
    h_sub, h_style, h_feat = classify(net, data.images[held_idx])
    h_acc, h_se = grouped_accuracy(h_sub == real_sub[held_idx], len(held_idx))
    report["classifier"] = {
        "heldout_images": len(held_idx),
        "subcategory_accuracy": h_acc,
        "subcategory_accuracy_se": h_se,
        "style_accuracy": round((h_style == real_style[held_idx]).float().mean().item(), 4),
    }
    prompted["subcategory_vs_reference"] = round(
        prompted["subcategory_accuracy"] / max(1e-9, report["classifier"]["subcategory_accuracy"]),
        3)

    # Autoencoder.
    enc = torch.jit.load(os.path.join(args.model, "vae_encoder.pt")).eval()
    dec = torch.jit.load(os.path.join(args.model, manifest["decoder"]["weights"])).eval()

    def roundtrip(images):
        with torch.no_grad():
            return torch.cat([dec(enc(images[i:i + 128])) for i in range(0, len(images), 128)])

    held = data.images[held_idx]
    rec = roundtrip(held)
    mse = ((rec.clamp(-1, 1) - held) ** 2).flatten(1).mean(1)
    report["autoencoder"] = {
        "heldout_images": len(held),
        "psnr_db": round(train_emoji.psnr(rec, held), 2),
        "psnr_of_mean_mse_db": round(10 * math.log10(4.0 / mse.mean().item()), 2),
    }

    # Frechet distance: samples vs training images, next to the real floor.
    _, _, train_feat = classify(net, data.images[train_idx])
    gen = torch.Generator().manual_seed(args.seed)
    m = min(len(feats), len(h_feat))
    pick = torch.randperm(len(train_idx), generator=gen)
    report["frechet"] = {
        "samples": len(feats),
        "vs_train": round(frechet(feats, train_feat), 3),
        "floor_heldout_vs_train": round(frechet(h_feat, train_feat), 3),
        "floor_images": len(h_feat),
        "samples_matched": m,
        "vs_train_matched": round(frechet(feats[:m], train_feat), 3),
        "train_subset_vs_train_rest": round(
            frechet(train_feat[pick[:m]], train_feat[pick[m:]]), 3),
    }

    # Memorisation: nearest training image in pixels ([0, 1] units, RMS).
    def nearest(images, pool):
        a = (images.flatten(1) + 1) / 2
        b = (pool.flatten(1) + 1) / 2
        d2 = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None, :]
        best, idx = (d2.clamp_min(0) / a.shape[1]).min(1)
        return best.sqrt(), idx

    pool = data.images[train_idx]
    d_sample, _ = nearest(samples, pool)
    d_held, _ = nearest(held, pool)
    sub_pick = pick[:300]
    ae_err = (((roundtrip(pool[sub_pick]).clamp(-1, 1) - pool[sub_pick]) / 2) ** 2
              ).flatten(1).mean(1).sqrt()
    copy = float(ae_err.quantile(0.95))
    report["memorisation"] = {
        "near_copy_threshold_rms": round(copy, 4),
        "threshold_is": "95th percentile of the autoencoder's RMS reconstruction error "
                        "on training images",
        "sample_nearest_rms_median": round(float(d_sample.median()), 4),
        "heldout_nearest_rms_median": round(float(d_held.median()), 4),
        "near_copy_fraction": round(float((d_sample <= copy).float().mean()), 4),
        "heldout_near_copy_fraction": round(float((d_held <= copy).float().mean()), 4),
    }

    # Speciation: every row's branches against their trunk's final image.
    points = []
    trunks = torch.stack([png_to_tensor(g.trunk.png) for g in grids])
    t_sub, t_style, _ = classify(net, trunks)
    for r, step in enumerate(plan.branch_steps):
        branches = torch.stack([png_to_tensor(c.png) for g in grids for c in g.rows[r].cells])
        b_sub, b_style, _ = classify(net, branches)
        per = plan.branches
        ts, tst = t_sub.repeat_interleave(per), t_style.repeat_interleave(per)
        ch_sub = (b_sub != ts).float().reshape(len(grids), per).mean(1)
        ch_style = (b_style != tst).float().reshape(len(grids), per).mean(1)
        points.append({"step": step, "timestep": grids[0].rows[r].timestep,
                       "p_subcategory": round(ch_sub.mean().item(), 4),
                       "p_subcategory_se": round(ch_sub.std().item() / math.sqrt(len(grids)), 4),
                       "p_style": round(ch_style.mean().item(), 4),
                       "p_style_se": round(ch_style.std().item() / math.sqrt(len(grids)), 4)})
    report["speciation"] = {"trunks": len(grids), "branches": plan.branches, "points": points}
    out = args.out or os.path.join(args.model, "eval.json")
    # The plot goes beside the report: <bundle>/eval/ by default.
    plot_dir = os.path.join(os.path.dirname(os.path.abspath(out)), "eval")
    os.makedirs(plot_dir, exist_ok=True)
    speciation_svg(points, os.path.join(plot_dir, "speciation.svg"))
    report["eval_seconds"] = round(time.time() - t0, 1)
    import export_emoji
    report["hardware"] = export_emoji.cpu_model()
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
