#!/usr/bin/python3
"""Evaluates the emoji bundle: tools/evaluate_bundle.py's measurements through
the real serving path, plus what only this bundle's training data can tell.

    /usr/bin/python3 training/emoji/evaluate.py [--model models/emoji] [--grids 300]

tools/evaluate_bundle.py starts a dgrid-denoiser and a dgrid-orchestrator
from build/bin on loopback and measures, for prompts that name emoji of the
training data (half of them with a style word):

  prompted      per judge head (subcategory; style where the prompt names
                one) the fraction of samples, a grid's trunk and its step-0
                branches, that the Judge RPC labels as the prompt asks, with
                a standard error over prompts
  frechet       Frechet distance on the judge's feature layer, samples vs
                the training images, next to as many training images vs the
                rest
  decision curve  the unprompted decision curve (--trunks): per row and head
                P(a branch's label differs from its trunk's) and its half step

and this script adds, from training/emoji/data (training/emoji/fetch.sh):

  classifier    the judge's accuracy on the held-out real images: the reference
  autoencoder   reconstruction PSNR on the held-out images
  memorisation  each sample's RMS pixel distance to its nearest training
                image; a near-copy is closer than the autoencoder's own
                95th-percentile reconstruction error of training images

Writes eval.json into the bundle folder and eval/eval.png (the curves).

`--quick N` is CI's check: N one-row grids, accuracy only, no data needed.
`--sweep 2,3,4` measures the prompted accuracy at each guidance scale.
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path[:0] = [os.path.join(ROOT, "tools"), HERE]
import evaluate_bundle  # noqa: E402


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


# ---------------------------------------------------------------------- main

def prompts_for(records, n, rng, styles):
    """n prompts for distinct training emoji, every other one with a style
    word (alternating between the styles): [{"prompt", "expect"}]. The
    subcategory is the emoji's; the style the tool reads from the prompt."""
    names = sorted({r["name"]: r for r in records if r["split"] == "train"}.items())
    picks = rng.sample(names, min(n, len(names)))
    out = []
    for k, (name, r) in enumerate(picks):
        style = styles[(k // 2) % len(styles)] if k % 2 == 0 else None
        out.append({"prompt": name if style is None else f"{name}, {style}",
                    "expect": {"subcategory": r["subcategory"]}})
    return out


def as_u8(images):
    """[N, 3, H, W] in [-1, 1] to uint8 [N, H, W, 3], as the engine decodes."""
    return ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def real_image_figures(args, manifest, data, samples, report):
    """What needs the training data besides the Frechet distance: the judge on
    held-out real images, the autoencoder, memorisation."""
    import train_emoji
    heads = {h["name"]: h for h in manifest["judge"]["heads"]}
    net = torch.jit.load(os.path.join(args.model, manifest["judge"]["weights"])).eval()
    train_idx, held_idx = torch.tensor(data.train), torch.tensor(data.heldout)
    held = data.images[held_idx]
    with torch.no_grad():
        out = net(held)
    ones = np.arange(len(held_idx))  # one group per image: they are independent
    report["classifier"] = {"heldout_images": len(held_idx)}
    for name in ("subcategory", "style"):
        labels = heads[name]["labels"]
        want = np.array([labels.index(data.records[i][name]) for i in data.heldout])
        got = out[heads[name]["output"]].argmax(1).numpy()
        report["classifier"][name] = evaluate_bundle.grouped_accuracy(got == want, ones)
    prompted = report["accuracy"]["heads"]["subcategory"]
    prompted["vs_reference"] = round(
        prompted["accuracy"] / max(1e-9, report["classifier"]["subcategory"]["accuracy"]), 3)

    enc = torch.jit.load(os.path.join(args.model, "vae_encoder.pt")).eval()
    dec = torch.jit.load(os.path.join(args.model, manifest["decoder"]["weights"])).eval()

    def roundtrip(images):
        with torch.no_grad():
            return torch.cat([dec(enc(images[i:i + 128])) for i in range(0, len(images), 128)])

    rec = roundtrip(held)
    mse = ((rec.clamp(-1, 1) - held) ** 2).flatten(1).mean(1)
    report["autoencoder"] = {
        "heldout_images": len(held),
        "psnr_db": round(train_emoji.psnr(rec, held), 2),
        "psnr_of_mean_mse_db": round(10 * math.log10(4.0 / mse.mean().item()), 2),
    }

    # Memorisation: nearest training image in pixels ([0, 1] units, RMS).
    def nearest(images, pool):
        a = (images.flatten(1) + 1) / 2
        b = (pool.flatten(1) + 1) / 2
        d2 = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None, :]
        return (d2.clamp_min(0) / a.shape[1]).min(1).values.sqrt()

    pool = data.images[train_idx]
    d_sample, d_held = nearest(samples, pool), nearest(held, pool)
    pick = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(args.seed))[:300]
    ae_err = (((roundtrip(pool[pick]).clamp(-1, 1) - pool[pick]) / 2) ** 2
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


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "models", "emoji"))
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--data", default=os.path.join(HERE, "data"))
    p.add_argument("--grids", type=int, default=300, help="prompts: one grid each")
    p.add_argument("--trunks", type=int, default=100, help="decision-curve trunks")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", type=int, default=0,
                   help="CI: this many one-row grids, accuracy only; exits 1 below --min_*")
    p.add_argument("--min_subcategory", type=float, default=0.3)
    p.add_argument("--min_style", type=float, default=0.6)
    p.add_argument("--out", default="", help="eval.json path (default: the bundle's)")
    p.add_argument("--sweep", default="",
                   help="guidance scales, e.g. 2,3,4,5: prompted accuracy by scale, and exit")
    args = p.parse_args()
    torch.set_num_threads(2)

    with open(os.path.join(args.model, "manifest.json")) as f:
        manifest = json.load(f)
    styles = next(h["labels"] for h in manifest["judge"]["heads"] if h["name"] == "style")
    if args.quick:
        with open(os.path.join(HERE, "quick_prompts.json")) as f:
            records = json.load(f)
    else:
        with open(os.path.join(args.data, "meta.json")) as f:
            records = json.load(f)["records"]
    prompts = prompts_for(records, args.quick or args.grids, random.Random(args.seed), styles)
    # Four step-0 branches and the trunk: five samples per prompt.
    common = dict(build=args.build, seed=args.seed * 100000, prompts=prompts, branches=4)

    if args.sweep:
        sweep = []
        for g in [float(v) for v in args.sweep.split(",")]:
            r = evaluate_bundle.evaluate(args.model, trunks=0, guidance=g, **common)
            row = {"guidance": g, "samples": r["accuracy"]["samples"], **r["accuracy"]["heads"]}
            print(json.dumps(row), flush=True)
            sweep.append(row)
        os.makedirs(os.path.join(args.model, "eval"), exist_ok=True)
        with open(args.out or os.path.join(args.model, "eval", "guidance_sweep.json"), "w") as f:
            json.dump(sweep, f, indent=1)
            f.write("\n")
        return
    if args.quick:
        check_bundle(args, manifest, [p["prompt"] for p in prompts])
        report = evaluate_bundle.evaluate(args.model, trunks=0, **common)
        heads = report["accuracy"]["heads"]
        print(json.dumps(report["accuracy"]), flush=True)
        ok = (heads["subcategory"]["accuracy"] >= args.min_subcategory and
              heads["style"]["accuracy"] >= args.min_style)
        print("quick check", "passed" if ok else "FAILED", f"(subcategory >= "
              f"{args.min_subcategory}, style >= {args.min_style})")
        sys.exit(0 if ok else 1)

    import train_emoji
    t0 = time.time()
    data = train_emoji.Data(args.data)
    report = evaluate_bundle.evaluate(
        args.model, trunks=args.trunks, reference=as_u8(data.images[torch.tensor(data.train)]),
        keep_samples=True, **common)
    samples = torch.from_numpy(report.pop("samples")).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    real_image_figures(args, manifest, data, samples, report)
    report["eval_seconds"] = round(time.time() - t0, 1)
    out = args.out or os.path.join(args.model, "eval.json")
    # The plot goes beside the report: <bundle>/eval/ by default.
    plot_dir = os.path.join(os.path.dirname(os.path.abspath(out)), "eval")
    os.makedirs(plot_dir, exist_ok=True)
    if "decision_curve" in report:  # --trunks 0 runs none
        evaluate_bundle.plot(report, os.path.join(plot_dir, "eval.png"))
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
