"""Writes models/emoji: the traced parts, the word list and the manifest.

Called by train_emoji.py's `export` stage. The denoiser, text encoder and
decoder are traced and checked at other batch sizes by
tools/import_diffusers.py's trace_part, the same check every text bundle gets.
"""
import json
import os
import platform
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import import_diffusers as bundles  # noqa: E402

import emoji_model as em  # noqa: E402

# Prompts the explorer and ListModels offer; each names an emoji of the data.
EXAMPLE_PROMPTS = [
    "grinning face, noto",
    "face with tears of joy, twemoji",
    "red apple, noto",
    "rocket",
    "ghost, twemoji",
    "slice of pizza, noto",
]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def forward_ms_per_image(unet, context_dim, max_length, batch=32, repeats=20):
    x = torch.randn(batch, em.LATENT_CHANNELS, em.LATENT, em.LATENT)
    t = torch.randint(0, 1000, (batch,))
    c = torch.randn(batch, max_length, context_dim)
    with torch.no_grad():
        for _ in range(3):
            unet(x, t, c)
        start = time.perf_counter()
        for _ in range(repeats):
            unet(x, t, c)
    return (time.perf_counter() - start) / repeats / batch * 1e3


def write_bundle(args, data, ae, latents, vocab, text, unet, classifier, cstate):
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    names = {r["name"] for r in data.records}
    for p in EXAMPLE_PROMPTS:
        name = p.split(",")[0]
        assert name in names, f"example prompt {p!r}: no emoji is called {name!r}"

    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        for w in vocab.words:
            f.write(w + "\n")

    g = torch.Generator().manual_seed(args.seed)
    L, D = args.max_length, args.context_dim

    def ids(b):
        rows = [vocab.encode(data.records[int(i)]["name"])
                for i in torch.randint(len(data.records), (b,), generator=g)]
        return torch.tensor(rows)

    text = text.eval()
    unet = unet.eval()
    bundles.trace_part(text, (ids(2),), os.path.join(out, "text_encoder.pt"),
                       verify_inputs=[(ids(1),), (ids(3),)])

    def unet_inputs(b):
        with torch.no_grad():
            context = text(ids(b))
        return (torch.randn(b, em.LATENT_CHANNELS, em.LATENT, em.LATENT, generator=g),
                torch.randint(0, 1000, (b,), generator=g), context)

    traced_unet = bundles.trace_part(unet, unet_inputs(2), os.path.join(out, "unet.pt"),
                                     verify_inputs=[unet_inputs(1), unet_inputs(3)])

    def z(b):
        return (torch.randn(b, em.LATENT_CHANNELS, em.LATENT, em.LATENT, generator=g),)

    bundles.trace_part(em.ScaledDecoder(ae.decoder), z(2), os.path.join(out, "vae_decoder.pt"),
                       verify_inputs=[z(1), z(3)])

    def img(b):
        return (torch.rand(b, 3, em.IMAGE, em.IMAGE, generator=g) * 2 - 1,)

    bundles.trace_part(em.MeanEncoder(ae.encoder), img(2), os.path.join(out, "vae_encoder.pt"),
                       verify_inputs=[img(1), img(3)])
    classifier = classifier.eval()
    with torch.no_grad():
        traced = torch.jit.trace(classifier, img(2))
    torch.jit.save(traced, os.path.join(out, "classifier.pt"))
    with open(os.path.join(out, "classifier.json"), "w") as f:
        json.dump({"input": "image [B, 3, 64, 64] in [-1, 1]",
                   "outputs": ["subcategory logits", "style logits", "features [B, 128]"],
                   "subcategories": data.subcategories, "styles": data.styles,
                   "heldout_subcategory_accuracy": round(cstate["heldout_subcategory_accuracy"], 4),
                   "heldout_style_accuracy": round(cstate["heldout_style_accuracy"], 4)},
                  f, indent=1)
        f.write("\n")

    state = torch.load(os.path.join(args.run, "diffusion.ckpt"))
    ae_state = torch.load(os.path.join(args.run, "ae.ckpt"))
    styles = data.meta["styles"]
    licence = " AND ".join(f"{s['license']} ({s['art']} art)" for s in styles)
    params = sum(em.parameters(m) for m in (text, unet, ae.decoder))
    # The trainer runs on the CPU wherever it runs (a visible GPU is not the
    # hardware that trained it).
    hardware = cpu_model()
    manifest = {
        "name": "emoji",
        # New weights, a new version: the orchestrator's cache keys on it.
        # The served parts and what else shapes a cached cell: the words and
        # the latent scale.
        "version": args.version or bundles.bundle_manifest.weights_version(
            [text, unet, ae.decoder],
            ("\n".join(vocab.words) + f"\n{latents['latent_scale']:.6f}").encode()),
        "description": ("Text-to-image latent diffusion on 64x64 emoji (Noto and Twemoji art), "
                        "trained by training/emoji/train_emoji.py: KL autoencoder f=4 "
                        "(4x16x16 latents), a 2-layer text transformer over the caption "
                        "words, and an epsilon UNet with cross-attention at 16x16 and 8x8."),
        "latent_shape": [em.LATENT_CHANNELS, em.LATENT, em.LATENT],
        "image_shape": [em.IMAGE, em.IMAGE, 3],
        "weights": "unet.pt",
        "timestep_dtype": "float",
        "schedule": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                     "train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1,
                     "set_alpha_to_one": False},
        "conditioning": {
            "kind": "text",
            "example_prompts": EXAMPLE_PROMPTS,
            "text_encoder": {"weights": "text_encoder.pt", "context_dim": D},
            "tokenizer": {"kind": "words", "vocab": "vocab.txt", "bos_id": vocab.BOS,
                          "eos_id": vocab.EOS, "pad_id": vocab.PAD, "unk_id": vocab.UNK,
                          "max_length": L},
        },
        "decoder": {"kind": "torchscript", "weights": "vae_decoder.pt", "value_range": [-1.0, 1.0],
                    "latent_scale": round(latents["latent_scale"], 6)},
        "defaults": {"steps": 50, "eta": 1.0, "guidance": args.guidance, "spacing": "leading"},
        "data": {
            "dataset": ("emoji-datasource-google " + data.meta["packages"]["emoji-datasource-google"]
                        + ", emoji-datasource-twitter "
                        + data.meta["packages"]["emoji-datasource-twitter"]
                        + ", emojibase-data " + data.meta["packages"]["emojibase-data"]
                        + " (npm; packages sha256 " + data.meta["packages_sha256"][:16] + ")"),
            "license": licence,
            "source": ", ".join(s["source"] for s in styles),
        },
        "training": {
            "command": "training/emoji/fetch.sh && /usr/bin/python3 training/emoji/train_emoji.py all",
            "epochs": int(state["step"] * args.batch / max(1, len(data.train))),
            "seed": str(args.seed),
            "final_loss": round(state.get("final_loss") or 0.0, 4),
            "hardware": hardware + ", fp32",
            "train_seconds": int(state.get("seconds", 0) + ae_state.get("seconds", 0)),
            "parameters": str(params),
            "ms_per_image_forward_b32": round(
                forward_ms_per_image(traced_unet, D, L), 3),
        },
        "classifier": "classifier.pt",
        # The classifier returns (subcategory logits, style logits, features).
        "judge": {"weights": "classifier.pt", "heads": [
            {"name": "subcategory", "output": 0, "labels": data.subcategories},
            {"name": "style", "output": 1, "labels": data.styles}]},
    }
    bundles.bundle_manifest.write_manifest(manifest_path, manifest)
    # CI's quick check prompts these (training emoji, one per subcategory
    # where there are enough), so it needs no dataset.
    rng = __import__("random").Random(args.seed)
    by_sub = {}
    for r in data.records:
        if r["split"] == "train":
            by_sub.setdefault(r["subcategory"], []).append(r)
    quick = [{"name": rng.choice(v)["name"], "subcategory": k, "split": "train"}
             for k, v in sorted(by_sub.items()) if len(v) >= 8]
    with open(os.path.join(HERE, "quick_prompts.json"), "w", encoding="utf-8") as f:
        json.dump(quick, f, indent=0, ensure_ascii=False)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"wrote {out}: {size / 1e6:.1f} MB")
