#!/usr/bin/env python3
"""Exports a Stable-Diffusion-class model as a Diffusion Grid text bundle.

  import_diffusers.py --model PATH --out_dir DIR [--family sd|sdxl] [--config DIR]
                      [--original_config YAML] [--dtype fp32|fp16] [--device cpu|cuda]
                      [--name NAME] [--version V] [--steps 50] [--guidance G] [--eta 0]
                      [--spacing leading|trailing|linspace] [--license L] [--max_batch 64]

PATH is a diffusers pipeline folder (DiffusionPipeline.from_pretrained: SD
1.x, SD 2.x or SDXL) or one checkpoint file (from_single_file of the
--family's pipeline; offline with --config, a diffusers-format folder of the
same architecture holding its configs and tokenizers, and for diffusers
versions that read it --original_config, which needs omegaconf). The script
traces the UNet, the VAE decoder and the text encoder(s) with
torch.jit.trace, copies the tokenizer's vocab.json and merges.txt, writes
manifest.json from the pipeline's scheduler config and the VAE's
scaling_factor, then loads the bundle back and runs one guided DDIM step on
"a photo" as a self-check. The format is described in docs/bundle-format.md.

It needs diffusers and transformers (pip install diffusers transformers
safetensors), which only `main` imports. fp16 needs --device cuda: diffusers'
graphs cast to the dtype they were traced in, and CPU torch lacks fp16 kernels.
A bundle traced on CUDA is served on CUDA.

SDXL-class models: export_bundle(..., extra={...}) writes the manifest's
conditioning.extra (proto/dgrid/v1/manifest.proto's ExtraConditioning, with
its field names as keys):
  pooled_dim P > 0      text_encoder(...) -> (context [B,L,D], pooled [B,P]),
                        and the UNet takes pooled [B,P] after the context
  size_ids true         the UNet takes time_ids [B,6] last: original height,
                        width, crop top, left, target height, width
  second_pad_id N       text_encoder(ids, ids2), ids2 being ids padded with N
                        after the first EOS (the engine builds it)
  zeros_for_empty_negative, default_size [H, W]
so the UNet is called unet(x, t, context[, pooled][, time_ids]). sample()
conditions such a bundle as the engine does. `main` wraps an SDXL pipeline's
two text encoders as one module (_SDXLText) and its UNet's added_cond_kwargs.

What is tested, and what is not: `export_bundle`, `load_bundle`, `sample`,
`read_tokenizer_config` and `schedule_from_diffusers` take plain torch modules
and dicts; tools/import_diffusers_test.py tests them, and
tests/fixtures/make_text_fixture.py and make_sdxl_fixture.py build the test
bundles with them. `main`, the diffusers glue, cannot be tested against
diffusers in this repository: neither diffusers nor transformers is
installed where its tests run. The test runs it on a stand-in pipeline built
from this file's assumptions about their API. Outside the repository, against
diffusers 0.30.3 and transformers 4.45.0.dev0 on tiny random-weight SD 1.x,
SD 2.x (v-prediction) and SDXL pipelines, the served bundles' final latents
agreed with the pipelines' to about 1e-6 relative (README, "Bring your
model").
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bundle_manifest  # noqa: E402  (beside this file)

UNET_FILE = "unet.pt"
TEXT_ENCODER_FILE = "text_encoder.pt"
DECODER_FILE = "vae_decoder.pt"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"

# What the engine's DDIM reproduces. A scheduler config asking for more is
# refused rather than exported into a bundle that samples differently.
_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
_SPACINGS = ("leading", "trailing", "linspace")
# diffusers' DDIMScheduler defaults, for keys a config leaves out: the
# engine's DDIM is DDIMScheduler.from_config(pipe.scheduler.config).
_DIFFUSERS_DEFAULTS = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
    "beta_schedule": "linear", "prediction_type": "epsilon", "steps_offset": 0,
    "set_alpha_to_one": True, "timestep_spacing": "leading", "clip_sample": True,
}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


# conditioning.extra's fields, at the values an unset field means.
_EXTRA_DEFAULTS = {"pooled_dim": 0, "size_ids": False, "second_pad_id": None,
                   "zeros_for_empty_negative": False, "default_size": None}


class BundleShapeError(ValueError):
    """The parts of a bundle disagree about a shape."""


def _shape(t):
    return list(t.shape)


def _as_tuple(output):
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def _first(output):
    # A text encoder may return (context, pooled); the bundle keeps context.
    return output[0] if isinstance(output, (tuple, list)) else output


# The bundle's interface is float32 whatever the weights are: each wrapper
# casts its float inputs to the weights' dtype through `_ref` (type_as stays
# a graph input, so it follows a later .half()) and returns float32.
class DenoiserPart(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.register_buffer("_ref", torch.zeros(()))

    def forward(self, x, t, context, *conditioning):
        # conditioning: pooled [B,P] and time_ids [B,6], where extra has them.
        ref = self._ref
        return self.unet(x.type_as(ref), t, context.type_as(ref),
                         *(c.type_as(ref) for c in conditioning)).float()


class TextEncoderPart(torch.nn.Module):
    """ids (and ids2 where extra.second_pad_id is set) -> context, or
    (context, pooled) when `pooled`."""

    def __init__(self, text_encoder, pooled=False):
        super().__init__()
        self.text_encoder = text_encoder
        self.pooled = pooled

    def forward(self, *ids):
        output = self.text_encoder(*ids)
        if not self.pooled:
            return _first(output).float()
        if not isinstance(output, (tuple, list)) or len(output) < 2:
            got = type(output).__name__ if not isinstance(output, torch.Tensor) else \
                f"a tensor {_shape(output)}"
            raise BundleShapeError(f"text encoder: gives {got}; with extra.pooled_dim it must "
                                   "give a tuple (context [B, L, D], pooled [B, P])")
        return output[0].float(), output[1].float()


class DecoderPart(torch.nn.Module):
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder
        self.register_buffer("_ref", torch.zeros(()))

    def forward(self, z):
        return self.decoder(z.type_as(self._ref)).float()


# ---------------------------------------------------------------- inputs

def extra_settings(extra):
    """Every field of conditioning.extra, from `extra` (a dict keyed by the
    proto's field names, or None), unset fields at their defaults.

    Raises ValueError naming a key or value the engine would refuse.
    """
    extra = extra or {}
    unknown = sorted(set(extra) - set(_EXTRA_DEFAULTS))
    if unknown:
        raise ValueError(f"extra: unknown keys {unknown}; it takes {sorted(_EXTRA_DEFAULTS)}")
    s = dict(_EXTRA_DEFAULTS)
    s.update({k: v for k, v in extra.items() if v is not None})
    s["pooled_dim"] = int(s["pooled_dim"])
    if s["pooled_dim"] < 0:
        raise ValueError(f"extra: pooled_dim must be >= 0, got {s['pooled_dim']}")
    if s["second_pad_id"] is not None:
        s["second_pad_id"] = int(s["second_pad_id"])
        if s["second_pad_id"] < 0:
            raise ValueError(f"extra: second_pad_id must be >= 0, got {s['second_pad_id']}")
    if s["default_size"] is not None:
        size = [int(v) for v in s["default_size"]]
        if not s["size_ids"] or len(size) != 2 or min(size) < 1:
            raise ValueError(f"extra: default_size {list(s['default_size'])} must be [height, "
                             "width], both >= 1, and needs size_ids")
        s["default_size"] = size
    return s


def second_ids(ids, eos_id, pad_id):
    """The second tokenizer's ids [B, L] as the engine builds them: ids with
    every position after the first EOS set to pad_id (SDXL pads with "!", 0)."""
    eos = (ids == eos_id).long()
    after_eos = (eos.cumsum(1) - eos) > 0
    return torch.where(after_eos, torch.full_like(ids, pad_id), ids)


def encoder_inputs(ids, eos_id, extra):
    """The text encoder's inputs for ids: (ids,), or (ids, ids2) where
    extra (extra_settings) has a second_pad_id."""
    if extra["second_pad_id"] is None:
        return (ids,)
    return (ids, second_ids(ids, eos_id, extra["second_pad_id"]))


def time_ids(size, default_size):
    """SDXL's add_time_ids, float [6], as the engine's TimeIds makes them.

    size holds original height and width, crop top and left, target height
    and width (None: all 0); a size of 0 is default_size's [H, W].
    """
    size = [0] * 6 if size is None else list(size)
    if len(size) != 6:
        raise ValueError(f"size: needs 6 numbers (original h, w, crop top, left, target h, w), "
                         f"got {size}")
    h, w = default_size
    return torch.tensor([s or d for s, d in zip(size, (h, w, 0, 0, h, w))],
                        dtype=torch.float32)


def _default_size(extra, image_shape):
    return extra["default_size"] or list(image_shape[:2])


def read_vocab_size(tokenizer_dir):
    """1 + the largest id in tokenizer_dir/vocab.json."""
    with open(os.path.join(tokenizer_dir, VOCAB_FILE), encoding="utf-8") as f:
        vocab = json.load(f)
    return 1 + max(vocab.values())


def read_tokenizer_config(tokenizer_dir):
    """The manifest's tokenizer settings from a Hugging Face CLIP tokenizer folder.

    Token strings come from tokenizer_config.json (or special_tokens_map.json)
    and are mapped to ids through vocab.json: SD 1.x pads with <|endoftext|>
    (49407), SD 2.x with "!" (0).
    """
    def load(name):
        path = os.path.join(tokenizer_dir, name)
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    config = load("tokenizer_config.json")
    special = load("special_tokens_map.json")
    vocab = load(VOCAB_FILE)
    if not vocab:
        raise FileNotFoundError(f"{os.path.join(tokenizer_dir, VOCAB_FILE)} is missing or empty")

    def token_id(key, fallback):
        token = config.get(key) or special.get(key) or fallback
        if isinstance(token, dict):  # {"__type": "AddedToken", "content": ...}
            token = token["content"]
        if token not in vocab:
            raise ValueError(f"{tokenizer_dir}: {key} {token!r} is not in {VOCAB_FILE}")
        return vocab[token]

    max_length = config.get("model_max_length", 77)
    if not isinstance(max_length, int) or not 2 <= max_length <= 1024:
        # transformers writes a huge sentinel when no length is set.
        max_length = 77
    bos = token_id("bos_token", "<|startoftext|>")
    eos = token_id("eos_token", "<|endoftext|>")
    return {"kind": "clip_bpe", "bos_id": bos, "eos_id": eos,
            "pad_id": token_id("pad_token", "<|endoftext|>"), "max_length": max_length}


def schedule_from_diffusers(config):
    """(manifest schedule, spacing) from a scheduler config in diffusers' key names."""
    # A loaded scheduler's config holds every argument of its class: those its
    # JSON left out at that class's defaults, listed in `_use_default_values`.
    # from_config drops them when it builds another scheduler (the DDIM or
    # Euler ancestral a user compares with), so they are unset here too:
    # PNDM's default spacing or set_alpha_to_one is not DDIM's.
    defaulted = set(config.get("_use_default_values") or ())
    config = {k: v for k, v in config.items() if k not in defaulted}
    c = dict(_DIFFUSERS_DEFAULTS)
    c.update({k: v for k, v in config.items() if v is not None})
    refused = []
    if config.get("trained_betas") is not None:
        refused.append("trained_betas")
    # DDIM clips x0 to [-1, 1] unless told not to, which no latent model wants.
    if config.get("clip_sample") is None:
        refused.append("clip_sample unset (DDIMScheduler's default is true; "
                       "set it to false if the model does not clip)")
    # Options that change the sampler (the Euler schedulers' sigma spacings
    # among them: the engine's Euler ancestral takes sigma from the training
    # table at its timesteps, interpolated at linspace's fractions).
    for key in ("clip_sample", "thresholding", "rescale_betas_zero_snr", "use_karras_sigmas",
                "use_exponential_sigmas", "use_beta_sigmas"):
        if config.get(key):
            refused.append(f"{key}=true")
    # Schedulers of no beta schedule (EDM's sigmas, flow matching): their
    # configs lack the beta keys, and the defaults below would stand in.
    class_name = str(config.get("_class_name", ""))
    if "EDM" in class_name or "FlowMatch" in class_name or "sigma_data" in config:
        refused.append(f"a scheduler without betas ({class_name or 'sigma_data set'})")
    # Consistency-distilled models (LCM, TCD) sample by their own rule.
    if class_name.startswith(("LCM", "TCD")):
        refused.append(f"{class_name} (a consistency model's sampler)")
    if config.get("timestep_type", "discrete") != "discrete":
        refused.append(f"timestep_type={config['timestep_type']!r}")
    # The Euler schedulers' sigma interpolation and last sigma.
    if config.get("interpolation_type", "linear") != "linear":
        refused.append(f"interpolation_type={config['interpolation_type']!r}")
    if config.get("final_sigmas_type", "zero") != "zero":
        refused.append(f"final_sigmas_type={config['final_sigmas_type']!r}")
    if c["beta_schedule"] not in _BETA_SCHEDULES:
        refused.append(f"beta_schedule={c['beta_schedule']!r}")
    if c["prediction_type"] not in _PREDICTION_TYPES:
        refused.append(f"prediction_type={c['prediction_type']!r}")
    if c["timestep_spacing"] not in _SPACINGS:
        refused.append(f"timestep_spacing={c['timestep_spacing']!r}")
    # Without the key DDIMScheduler.from_config spaces timesteps "leading",
    # diffusers' Euler schedulers "linspace".
    if config.get("timestep_spacing") is None and not refused:
        warnings.warn("scheduler config: timestep_spacing is unset; the bundle's default is "
                      "'leading', as diffusers' DDIMScheduler.from_config reads it, where "
                      "EulerAncestralDiscreteScheduler.from_config would use 'linspace': ask "
                      "for spacing linspace with the euler_ancestral sampler to match that")
    if refused:
        raise ValueError("scheduler config: the engine's DDIM does not support " +
                         ", ".join(refused) + f" (it supports beta_schedule {_BETA_SCHEDULES}, "
                         f"prediction_type {_PREDICTION_TYPES}, timestep_spacing {_SPACINGS}); "
                         "a spacing is set with --spacing; for the rest, edit the config if the "
                         "model allows it")
    try:
        schedule = {
            "beta_schedule": c["beta_schedule"],
            "beta_start": float(c["beta_start"]),
            "beta_end": float(c["beta_end"]),
            "train_timesteps": int(c["num_train_timesteps"]),
            "prediction_type": c["prediction_type"],
            "steps_offset": int(c["steps_offset"]),
            "set_alpha_to_one": bool(c["set_alpha_to_one"]),
        }
    except (TypeError, ValueError) as e:
        raise ValueError(f"scheduler config: a number is not one ({e})") from None
    check_schedule_ranges(schedule)
    return schedule, c["timestep_spacing"]


def check_schedule_ranges(schedule):
    """The manifest reader's ranges (common/manifest_reader.cc): a schedule
    past them was exported, self-checked "ok", and refused by the denoiser."""
    lo = 0.0 if schedule["beta_schedule"] == "squaredcos_cap_v2" else 1e-8
    start, end, trained = schedule["beta_start"], schedule["beta_end"], schedule["train_timesteps"]
    if not lo <= end <= 0.999:
        raise ValueError(f"scheduler config: beta_end must be in [{lo:g}, 0.999], got {end}")
    if not lo <= start <= end:
        raise ValueError(f"scheduler config: beta_start needs {lo:g} <= beta_start <= beta_end "
                         f"({end}), got {start}")
    if not 2 <= trained <= 100000:
        raise ValueError(f"scheduler config: num_train_timesteps must be in [2, 100000], got "
                         f"{trained}")
    if not 0 <= schedule["steps_offset"] < trained:
        raise ValueError(f"scheduler config: steps_offset must be in [0, num_train_timesteps), "
                         f"got {schedule['steps_offset']}")
    last = float(bundle_manifest.alphas_cumprod(schedule)[-1])
    if not last >= 1e-20:
        raise ValueError(f"scheduler config: alpha-bar at the last training timestep is {last:g}, "
                         "below 1e-20: samples would overflow; lower beta_end or "
                         "num_train_timesteps")


def _token_rows(tokenizer, vocab_size, batch, generator):
    """[batch, L] ids framed as a tokenizer frames them: BOS, words, EOS, padding.

    Row 0 is the empty prompt; row 1 holds the largest id, so a vocabulary
    larger than the text encoder's embedding fails here, not at serving time.
    """
    length = tokenizer["max_length"]
    ids = torch.full((batch, length), tokenizer["pad_id"], dtype=torch.long)
    ids[:, 0] = tokenizer["bos_id"]
    for row in range(batch):
        words = 0 if row == 0 else min(length - 2, 3 + 5 * row)
        if words:
            ids[row, 1:1 + words] = torch.randint(0, vocab_size, (words,), generator=generator)
        if row == 1:
            ids[row, 1] = vocab_size - 1
        ids[row, 1 + words] = tokenizer["eos_id"]
    return ids


def _timesteps(batch, schedule, timestep_dtype):
    t = torch.linspace(schedule["train_timesteps"] - 1, 0, batch).round().long()
    return t.float() if timestep_dtype == "float" else t


def _time_id_rows(batch, default_size, generator):
    """[batch, 6] random sizes and crops up to twice default_size: a traced
    graph must not have baked in the values it was traced with."""
    top = 2 * max(default_size) + 1
    return torch.randint(0, top, (batch, 6), generator=generator).float()


# ---------------------------------------------------------------- checks

def check_parts(unet, decoder, text_encoder, text_inputs, *, latent_shape, image_shape, schedule,
                timestep_dtype="long", context_dim=None, generator=None, extra=None):
    """Runs the eager wrappers once; raises BundleShapeError naming the shapes.

    text_inputs is (ids,), or (ids, ids2) (encoder_inputs); extra is
    extra_settings' dict, None for none. Returns the context width D.
    """
    extra = extra or extra_settings(None)
    ids = text_inputs[0]
    batch, length = ids.shape
    try:
        encoding = _as_tuple(text_encoder(*text_inputs))
    except BundleShapeError:
        raise
    except Exception as e:
        named = ", ".join(f"{n} {_shape(i)}" for n, i in zip(("ids", "ids2"), text_inputs))
        raise BundleShapeError(f"text encoder: forward({named}) failed: {e}") from e
    context = encoding[0]
    if context.dim() != 3 or _shape(context)[:2] != [batch, length]:
        raise BundleShapeError(f"text encoder: gives context {_shape(context)} for ids "
                               f"{_shape(ids)}; it must give [B, L, D] = [{batch}, {length}, D]")
    width = context.shape[2]
    if context_dim is not None and width != context_dim:
        raise BundleShapeError(f"text encoder gives context {_shape(context)}, but the UNet "
                               f"takes context [{batch}, {length}, {context_dim}]")
    # The UNet's inputs after x and t, named for the messages.
    conditioning = [("context", context)]
    sources = [f"context from the text encoder {_shape(context)}"]
    pooled_dim = extra["pooled_dim"]
    if pooled_dim:
        pooled = encoding[1]
        if _shape(pooled) != [batch, pooled_dim]:
            raise BundleShapeError(f"text encoder: gives pooled {_shape(pooled)} for ids "
                                   f"{_shape(ids)}; extra.pooled_dim {pooled_dim} needs "
                                   f"[{batch}, {pooled_dim}]")
        conditioning.append(("pooled", pooled))
        sources.append(f"pooled from the text encoder, extra.pooled_dim {pooled_dim}")
    if extra["size_ids"]:
        size = time_ids(None, _default_size(extra, image_shape))
        conditioning.append(("time_ids", size.repeat(batch, 1).to(context.device)))
        sources.append(f"time_ids {size.tolist()} per row, extra.size_ids")

    x = torch.randn([batch] + list(latent_shape), generator=generator).to(context.device)
    t = _timesteps(batch, schedule, timestep_dtype).to(context.device)
    try:
        out = unet(x, t, *(value for _, value in conditioning))
    except Exception as e:
        named = ", ".join(f"{n} {_shape(v)}" for n, v in [("x", x), ("t", t)] + conditioning)
        raise BundleShapeError(
            f"unet: forward({named}) failed (latent_shape {list(latent_shape)}, "
            f"{', '.join(sources)}): {e}") from e
    if not isinstance(out, torch.Tensor) or _shape(out) != _shape(x):
        got = _shape(out) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BundleShapeError(f"unet: gives {got} for x {_shape(x)}; the model output "
                               f"must have x's shape (latent_shape {list(latent_shape)})")

    h, w, c = image_shape
    want = [batch, c, h, w]
    try:
        image = decoder(x)
    except Exception as e:
        raise BundleShapeError(f"vae decoder: forward(z {_shape(x)}) failed "
                               f"(latent_shape {list(latent_shape)}): {e}") from e
    if _shape(image) != want:
        raise BundleShapeError(f"vae decoder: gives {_shape(image)} for z {_shape(x)}; "
                               f"image_shape {list(image_shape)} needs {want}")
    return width


def _verify_traced(path, eager, inputs_by_batch, tolerance, device):
    """The saved graph at other batch sizes must match the module it was traced
    from, in each output (a tensor, or a tuple such as (context, pooled))."""
    def shapes(outputs):
        listed = [_shape(o) for o in outputs]
        return listed[0] if len(listed) == 1 else tuple(listed)

    name = os.path.basename(path)
    loaded = torch.jit.load(path, map_location=device)
    for inputs in inputs_by_batch:
        batch = inputs[0].shape[0]
        with torch.no_grad():
            want = _as_tuple(eager(*inputs))
            try:
                got = _as_tuple(loaded(*inputs))
            except Exception as e:
                raise BundleShapeError(f"{name}: the traced graph fails at batch {batch}: "
                                       f"{e}") from e
        if shapes(got) != shapes(want):
            raise BundleShapeError(f"{name}: gives {shapes(got)} at batch {batch}, the module "
                                   f"{shapes(want)}")
        for g, w in zip(got, want):
            module_finite = bool(torch.isfinite(w).all())
            if not (module_finite and torch.isfinite(g).all()):
                raise BundleShapeError(f"{name}: the traced graph gives non-finite values at "
                                       f"batch {batch}, the module does not" if module_finite else
                                       f"{name}: gives non-finite values at batch {batch} (the "
                                       "module too: an fp16 overflow, say), not a tracing problem")
            diff = (g - w).abs().max().item()
            if not diff <= tolerance * (1.0 + w.abs().max().item()):
                raise BundleShapeError(f"{name}: at batch {batch} the traced graph differs from "
                                       f"the module by {diff:.3g}; tracing baked in a "
                                       "shape-dependent branch")


# ---------------------------------------------------------------- export

def trace_part(module, example_inputs, path, *, dtype="fp32", device="cpu", verify_inputs=()):
    """Traces one wrapped part, saves it to `path` and checks the saved graph.

    fp16 where the device has no fp16 kernels (CPU) traces in fp32 and
    converts the saved module: right only for modules that make no float
    tensors of their own (diffusers' do: export those on CUDA). The fp32
    graph is the one checked then.
    """
    device = torch.device(device)
    cast_after = dtype == "fp16" and device.type == "cpu"
    module = module.eval().to(device=device, dtype=torch.float32 if cast_after else _DTYPES[dtype])
    example_inputs = tuple(i.to(device) for i in example_inputs)
    verify_inputs = [tuple(i.to(device) for i in inputs) for inputs in verify_inputs]
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example_inputs, check_trace=False)
    # A Python branch on a shape or a value becomes a constant of the graph:
    # the checks at other batch sizes below are what catch a wrong one.
    batches = ", ".join(str(inputs[0].shape[0]) for inputs in verify_inputs)
    seen = set()
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning) and (w.filename, w.lineno) not in seen:
            seen.add((w.filename, w.lineno))
            print(f"{os.path.basename(path)}: tracer warning at {w.filename}:{w.lineno}: "
                  f"{str(w.message).splitlines()[0]} (the graph is checked at batches "
                  f"{batches})", file=sys.stderr)
    torch.jit.save(traced, path)
    tolerance = 1e-4 if dtype == "fp32" or cast_after else 2e-2
    _verify_traced(path, module, verify_inputs, tolerance, device)
    if cast_after:  # a loaded copy: the traced module shares the eager one's tensors
        torch.jit.save(torch.jit.load(path).half(), path)
    return traced


def manifest_dict(*, name, version, description, latent_shape, image_shape, schedule, spacing,
                  tokenizer, context_dim, example_prompts, latent_scale, value_range,
                  timestep_dtype, defaults, license, source, extra=None):
    """manifest.json's content, with proto/dgrid/v1/manifest.proto's field names.

    extra (export_bundle's) becomes conditioning.extra, with the keys it sets.
    """
    d = {"steps": 50, "eta": 0.0, "guidance": 7.5}
    d.update(defaults or {})
    d["spacing"] = spacing
    tok = {"kind": tokenizer.get("kind", "clip_bpe"), "vocab": VOCAB_FILE, "merges": MERGES_FILE,
           "bos_id": tokenizer["bos_id"], "eos_id": tokenizer["eos_id"],
           "pad_id": tokenizer["pad_id"], "max_length": tokenizer["max_length"]}
    manifest = {
        "name": name,
        "version": version,
        "description": description,
        "latent_shape": list(latent_shape),
        "image_shape": list(image_shape),
        "weights": UNET_FILE,
        "timestep_dtype": timestep_dtype,
        "schedule": schedule,
        "conditioning": {
            "kind": "text",
            "example_prompts": list(example_prompts),
            "text_encoder": {"weights": TEXT_ENCODER_FILE, "context_dim": context_dim},
            "tokenizer": tok,
        },
        "decoder": {"kind": "torchscript", "weights": DECODER_FILE,
                    "value_range": list(value_range), "latent_scale": latent_scale},
        "defaults": d,
        "data": {"license": license},
    }
    if source:
        manifest["data"]["source"] = source
    if extra is not None:
        settings = extra_settings(extra)
        manifest["conditioning"]["extra"] = {k: v for k, v in settings.items()
                                             if extra.get(k) is not None}
    return manifest


def _trace_parts(parts, out_dir, text_inputs, other_text_inputs, *, latent_shape, schedule,
                 timestep_dtype, latent_scale, dtype, device, generator, extra, default_size,
                 decode_batches):
    """Traces each part at batch 2 and checks the saved graph at the other
    batch sizes: text_inputs are the encoder's inputs (encoder_inputs) at
    batch 2, other_text_inputs those at the others (the encoder's and the
    UNet's); decode_batches the decoder's."""
    def path(f):
        return os.path.join(out_dir, f)

    text = parts[TEXT_ENCODER_FILE]
    trace_part(text, text_inputs, path(TEXT_ENCODER_FILE), dtype=dtype, device=device,
               verify_inputs=other_text_inputs)
    # (context,) or (context, pooled) per batch size
    encodings = [tuple(e.cpu() for e in _as_tuple(text(*(i.to(device) for i in inputs))))
                 for inputs in [text_inputs] + other_text_inputs]

    def unet_inputs(encoding):
        b = encoding[0].shape[0]
        inputs = (torch.randn([b] + list(latent_shape), generator=generator),
                  _timesteps(b, schedule, timestep_dtype)) + encoding
        if extra["size_ids"]:
            inputs += (_time_id_rows(b, default_size, generator),)
        return inputs

    def latents(b):
        return (torch.randn([b] + list(latent_shape), generator=generator) / latent_scale,)

    trace_part(parts[UNET_FILE], unet_inputs(encodings[0]), path(UNET_FILE), dtype=dtype,
               device=device, verify_inputs=[unet_inputs(e) for e in encodings[1:]])
    trace_part(parts[DECODER_FILE], latents(2), path(DECODER_FILE), dtype=dtype, device=device,
               verify_inputs=[latents(b) for b in decode_batches])


def export_bundle(unet, decoder, text_encoder, tokenizer_dir, scheduler_config, out_dir, *,
                  name, version, latent_shape, image_shape, tokenizer=None,
                  example_prompts=(), dtype="fp32", description="", license="", source=None,
                  latent_scale=1.0, value_range=(-1.0, 1.0), defaults=None, context_dim=None,
                  timestep_dtype="long", device="cpu", seed=0, extra=None, max_batch=64):
    """Writes a text bundle to out_dir and returns its manifest (a dict).

    unet(x [B,C,h,w], t [B], context [B,L,D]) -> model output [B,C,h,w]
    decoder(z [B,C,h,w]) -> image [B,c,H,W] in value_range (z already divided
        by latent_scale: the engine does that)
    text_encoder(ids [B,L] long) -> context [B,L,D], or a tuple whose first
        element is the context
    extra (SDXL-style; the module doc): a dict with conditioning.extra's
        keys, written to the manifest. With it the parts are
        unet(x, t, context[, pooled [B,P]][, time_ids [B,6]]) and
        text_encoder(ids[, ids2]) -> context, or (context, pooled [B,P])
        where pooled_dim is P. None: SD 1.x/2.x, no extra.
    tokenizer_dir holds vocab.json and merges.txt; `tokenizer` is
        {"kind": "clip_bpe", "bos_id", "eos_id", "pad_id", "max_length"}, read
        from tokenizer_dir's tokenizer_config.json when None.
    scheduler_config uses diffusers' key names (num_train_timesteps,
        timestep_spacing, ...); `defaults` may set steps, eta, guidance.
    context_dim, when given, is the width the UNet takes (diffusers:
        unet.config.cross_attention_dim); a text encoder giving another
        width is refused before the UNet runs.
    max_batch is the largest batch the engine may run the parts at (its
        --max_batch defaults to 64): the traced encoder and UNet are checked
        at batches 1, 3 and max_batch, the decoder at 1, 3 and
        min(max_batch, 32) (the engine decodes at most 32 at once), and the
        manifest records it, so the engine runs no larger batch. Tracing
        fixes branches on shapes as constants (diffusers' upsampler tests
        batch >= 64): lower it only for a model too large to check there.

    The modules are moved to `device` (and, on CUDA, to `dtype`) in place, as
    nn.Module.to does. Raises BundleShapeError, naming the shapes, when the
    parts disagree, or when a saved graph does not match its module at
    another batch size than the one it was traced at.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if not isinstance(max_batch, int) or max_batch < 2:
        raise ValueError(f"max_batch must be an int of at least 2 (a guided step runs two rows), "
                         f"got {max_batch!r}")
    check_label("version", version, may_be_empty=True)
    if len(latent_shape) != 3 or len(image_shape) != 3 or image_shape[2] not in (1, 3):
        raise ValueError(f"latent_shape {list(latent_shape)} must be [C, h, w] and image_shape "
                         f"{list(image_shape)} [H, W, C] with C 1 or 3")
    if tokenizer is None:
        tokenizer = read_tokenizer_config(tokenizer_dir)
    if tokenizer.get("kind", "clip_bpe") != "clip_bpe":
        raise ValueError("export_bundle writes clip_bpe tokenizers only")
    for f in (VOCAB_FILE, MERGES_FILE):
        if not os.path.exists(os.path.join(tokenizer_dir, f)):
            raise FileNotFoundError(f"tokenizer: {os.path.join(tokenizer_dir, f)} not found")
    schedule, spacing = schedule_from_diffusers(scheduler_config)
    # The manifest's default steps, 50 unless given (manifest_dict).
    check_steps(schedule["train_timesteps"], (defaults or {}).get("steps", 50), spacing,
                schedule["steps_offset"])
    settings = extra_settings(extra)

    g = torch.Generator().manual_seed(seed)
    vocab_size = read_vocab_size(tokenizer_dir)

    def text_inputs(batch):
        ids = _token_rows(tokenizer, vocab_size, batch, g)
        return encoder_inputs(ids, tokenizer["eos_id"], settings)

    inputs = text_inputs(2)
    parts = {UNET_FILE: DenoiserPart(unet), DECODER_FILE: DecoderPart(decoder),
             TEXT_ENCODER_FILE: TextEncoderPart(text_encoder, pooled=settings["pooled_dim"] > 0)}
    # fp16 cannot run on the CPU: the shapes are checked in fp32 there.
    cuda_fp16 = dtype == "fp16" and torch.device(device).type == "cuda"
    for m in parts.values():
        m.eval().to(device=device, dtype=_DTYPES[dtype] if cuda_fp16 else torch.float32)
    with torch.no_grad():
        width = check_parts(parts[UNET_FILE], parts[DECODER_FILE], parts[TEXT_ENCODER_FILE],
                            tuple(i.to(device) for i in inputs), latent_shape=latent_shape,
                            image_shape=image_shape, schedule=schedule,
                            timestep_dtype=timestep_dtype, context_dim=context_dim, generator=g,
                            extra=settings)

    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(manifest_path):  # a failed export must not leave an old manifest
        os.remove(manifest_path)
    for f in (VOCAB_FILE, MERGES_FILE):
        shutil.copyfile(os.path.join(tokenizer_dir, f), os.path.join(out_dir, f))
    other_inputs = [text_inputs(b) for b in sorted({1, 3, max_batch})]
    with torch.no_grad():
        _trace_parts(parts, out_dir, inputs, other_inputs,
                     latent_shape=latent_shape, schedule=schedule, timestep_dtype=timestep_dtype,
                     latent_scale=latent_scale, dtype=dtype, device=device, generator=g,
                     extra=settings, default_size=_default_size(settings, image_shape),
                     decode_batches=sorted({1, 3, min(max_batch, 32)}))

    manifest = manifest_dict(
        name=name, version=version, description=description, latent_shape=latent_shape,
        image_shape=image_shape, schedule=schedule, spacing=spacing, tokenizer=tokenizer,
        context_dim=width, example_prompts=example_prompts, latent_scale=latent_scale,
        value_range=value_range, timestep_dtype=timestep_dtype, defaults=defaults,
        license=license, source=source, extra=extra)
    manifest["max_batch"] = max_batch
    return bundle_manifest.write_manifest(manifest_path, manifest)


# ---------------------------------------------------------------- sampling

class Bundle:
    """A text bundle loaded back: manifest dict plus its three TorchScript parts.

    extra is conditioning.extra with every field (extra_settings), and
    default_size the [H, W] that a size of 0 stands for.
    """

    def __init__(self, bundle_dir, device="cpu"):
        self.manifest = bundle_manifest.read_manifest(os.path.join(bundle_dir, "manifest.json"))
        m = self.manifest
        self.unet = torch.jit.load(os.path.join(bundle_dir, m["weights"]), map_location=device)
        self.text_encoder = torch.jit.load(
            os.path.join(bundle_dir, m["conditioning"]["text_encoder"]["weights"]),
            map_location=device)
        self.decoder = torch.jit.load(os.path.join(bundle_dir, m["decoder"]["weights"]),
                                      map_location=device)
        self.device = torch.device(device)
        self.extra = extra_settings(m["conditioning"].get("extra"))
        self.default_size = _default_size(self.extra, m["image_shape"])

    def encode(self, ids):
        """(context,) or (context, pooled) for padded ids [B, L], as the engine
        calls the text encoder (the second ids built here)."""
        tokenizer = self.manifest["conditioning"]["tokenizer"]
        output = self.text_encoder(*encoder_inputs(ids.to(self.device), tokenizer["eos_id"],
                                                   self.extra))
        return _as_tuple(output)[:2 if self.extra["pooled_dim"] else 1]

    def empty_prompt_ids(self, batch):
        """[batch, L]: "" as the engine pads it: BOS, EOS, then padding."""
        tokenizer = self.manifest["conditioning"]["tokenizer"]
        ids = torch.full((batch, tokenizer["max_length"]), tokenizer["pad_id"], dtype=torch.long)
        ids[:, 0] = tokenizer["bos_id"]
        ids[:, 1] = tokenizer["eos_id"]
        return ids


def load_bundle(bundle_dir, device="cpu"):
    return Bundle(bundle_dir, device)


# The schedule's one formula in Python (tools/bundle_manifest.py).
alphas_cumprod = bundle_manifest.alphas_cumprod


def check_label(field, text, may_be_empty=False):
    """A name or version as the manifest reader takes it (CheckLabel in
    common/manifest_reader.cc): at most 128 bytes of UTF-8 (empty only where
    `may_be_empty`: a version) without control characters. ValueError naming
    the field."""
    text = str(text)
    size = len(text.encode("utf-8", "surrogatepass"))
    least = 0 if may_be_empty else 1
    if (not least <= size <= 128 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
            or any(0xD800 <= ord(c) <= 0xDFFF for c in text)):  # bytes that were no UTF-8
        raise ValueError(f"{field} must be {least} to 128 bytes of UTF-8 without control "
                         f"characters, got {text[:40]!r}{'...' if size > 40 else ''} ({size} bytes)")


def check_steps(train_timesteps, steps, spacing, offset):
    """The step count the manifest reader takes for this schedule
    (TimestepsProblem in common/timesteps.cc): leading spacing's first
    timestep, (steps - 1) * (T // steps) + offset, must be below T.
    ValueError naming --steps."""
    if not 1 <= steps <= train_timesteps:
        raise ValueError(f"--steps must be in [1, {train_timesteps}], got {steps}")
    if spacing == "leading":
        first = (steps - 1) * (train_timesteps // steps) + offset
        if first > train_timesteps - 1:
            # The most below `steps` that fit, as the reader names them.
            fit = next((n for n in range(steps - 1, 0, -1)
                        if (n - 1) * (train_timesteps // n) + offset <= train_timesteps - 1), 0)
            raise ValueError(f"--steps: {steps} leading steps with steps_offset {offset} would "
                             f"reach timestep {first} of a schedule that ends at "
                             f"{train_timesteps - 1}; "
                             + (f"{fit} steps fit (the most below {steps})" if fit else
                                "no step count fits") + ", or give --spacing trailing or linspace")


def ddim_timesteps(train_timesteps, steps, spacing, offset):
    """diffusers' DDIM timesteps, clamped to [0, T-1] as common/timesteps.h does."""
    if spacing == "leading":
        ratio = train_timesteps // steps
        ts = [i * ratio + offset for i in reversed(range(steps))]
    elif spacing == "linspace":
        # np.linspace(0, T - 1, steps).round() reversed: k * ((T - 1) / (steps
        # - 1)), the last T - 1 itself; halves rounded to even.
        last = steps - 1
        ts = [0 if k == 0 else train_timesteps - 1 if k == last else
              round(k * ((train_timesteps - 1) / last)) for k in reversed(range(steps))]
    else:
        # np.round(np.arange(T, 0, -T / steps)) - 1 as numpy computes it: the
        # i-th value is T + i * ((T - T / steps) - T), halves rounded to even.
        start = float(train_timesteps)
        delta = (start - start / steps) - start
        ts = [round(start + i * delta) - 1 for i in range(steps)]
    return [min(max(t, 0), train_timesteps - 1) for t in ts]


def ddim_step(schedule, ac, t, steps, x, out, z, eta):
    """diffusers' DDIMScheduler.step; returns (x_prev, x0)."""
    prev_t = t - schedule["train_timesteps"] // steps
    final = 1.0 if schedule.get("set_alpha_to_one", True) else float(ac[0])
    a_t = float(ac[t])
    a_prev = float(ac[prev_t]) if prev_t >= 0 else final
    kind = schedule.get("prediction_type", "epsilon")
    if kind == "epsilon":
        eps = out
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    elif kind == "sample":
        x0 = out
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
    else:
        x0 = math.sqrt(a_t) * x - math.sqrt(1 - a_t) * out
        eps = math.sqrt(a_t) * out + math.sqrt(1 - a_t) * x
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = eta * math.sqrt(max(variance, 0.0))
    direction = math.sqrt(max(1 - a_prev - std * std, 0.0)) * eps
    return math.sqrt(a_prev) * x0 + direction + std * z, x0


def sample(bundle, cond_ids, uncond_ids, *, steps=None, guidance=None, eta=None, seed=0,
           run_steps=None, size=None, x_T=None, spacing=None):
    """Guided DDIM in Python on a loaded bundle: (latent, image), both float32.

    cond_ids and uncond_ids are [B, L] token ids (the negative prompt's, or
    the empty prompt's for plain classifier-free guidance). uncond_ids None
    is the empty negative prompt as the engine takes it: zeros (context and
    pooled) where extra.zeros_for_empty_negative, else the ids of "". size
    (extra.size_ids only) is the 6 size ids every row gets (time_ids; 0 is
    the default size, None all defaults). run_steps stops after that many of
    the `steps` steps; spacing (None: the bundle's) is "leading",
    "trailing" or "linspace". The engine's noise comes from Philox, so this matches
    it in law, not sample by sample; with eta 0 and the engine's x_T given
    as `x_T` ([B, C, h, w]), step by step.
    """
    m = bundle.manifest
    d = m.get("defaults", {})
    steps = steps or d.get("steps", 50)
    guidance = d.get("guidance", 1.0) if guidance is None else guidance
    eta = d.get("eta", 0.0) if eta is None else eta
    schedule = m["schedule"]
    ac = alphas_cumprod(schedule)
    spacing = spacing or d.get("spacing", "leading")
    ts = ddim_timesteps(schedule["train_timesteps"], steps, spacing,
                        schedule.get("steps_offset", 0))[:run_steps]
    g = torch.Generator().manual_seed(seed)
    dev = bundle.device
    batch = cond_ids.shape[0]
    extra = bundle.extra
    if size is not None and not extra["size_ids"]:
        raise ValueError("size: this bundle takes no size ids (conditioning.extra.size_ids)")
    with torch.no_grad():
        # The UNet's inputs after x and t, conditional rows then unconditional:
        # context[, pooled][, time_ids].
        if uncond_ids is None and extra["zeros_for_empty_negative"]:
            conditioning = [torch.cat([e, torch.zeros_like(e)]) for e in bundle.encode(cond_ids)]
        else:
            if uncond_ids is None:
                uncond_ids = bundle.empty_prompt_ids(batch)
            conditioning = list(bundle.encode(torch.cat([cond_ids, uncond_ids])))
        if extra["size_ids"]:
            conditioning.append(time_ids(size, bundle.default_size).repeat(2 * batch, 1).to(dev))
        x = torch.randn([batch] + m["latent_shape"], generator=g)
        if x_T is not None:
            x = x_T.clone().float()
        for t in ts:
            tt = torch.full((2 * batch,), t, dtype=torch.long)
            if m.get("timestep_dtype") == "float":
                tt = tt.float()
            out = bundle.unet(torch.cat([x, x]).to(dev), tt.to(dev), *conditioning).cpu()
            cond, uncond = out[:batch], out[batch:]
            out = uncond + guidance * (cond - uncond)
            x, _ = ddim_step(schedule, ac, t, steps, x, out,
                             torch.randn(x.shape, generator=g), eta)
        scale = m["decoder"].get("latent_scale") or 1.0
        image = bundle.decoder((x / scale).to(dev)).cpu()
    return x, image


# ---------------------------------------------------------------- diffusers glue

_FAMILIES = ("sd", "sdxl")


def _load_pipeline(model, torch_dtype, *, family=None, config=None, original_config=None):
    """A diffusers pipeline from a folder, or from one checkpoint file.

    A file needs its family (sd: SD 1.x/2.x, sdxl), and offline the
    pipeline's configs: `config`, a diffusers-format folder of the same
    architecture (model_index.json, each component's config, the tokenizers),
    and for diffusers versions that read one, `original_config`, the
    checkpoint's original YAML (this needs omegaconf). With `config` nothing
    is fetched (local_files_only) and no safety checker is loaded."""
    try:
        # pylint: disable=import-outside-toplevel
        from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
    except ImportError as e:
        sys.exit(f"import_diffusers: {e}; it needs pip install diffusers transformers safetensors")

    if not os.path.isfile(model):
        return DiffusionPipeline.from_pretrained(model, torch_dtype=torch_dtype)
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    kwargs = {"torch_dtype": torch_dtype}
    if config:
        kwargs.update(config=config, local_files_only=True)
    if original_config:
        kwargs["original_config"] = original_config
    if cls is StableDiffusionPipeline:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    return cls.from_single_file(model, **kwargs)


class _DiffusersUNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, context):
        return self.unet(x, t, encoder_hidden_states=context, return_dict=False)[0]


class _DiffusersUNetXL(torch.nn.Module):
    """SDXL's UNet: the pooled text embedding and the size ids go in as
    added_cond_kwargs (text_embeds, time_ids)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, context, pooled, time_ids):
        return self.unet(x, t, encoder_hidden_states=context,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
                         return_dict=False)[0]


class _DiffusersDecoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        try:
            return self.vae.decode(z, return_dict=False)[0]
        except TypeError:  # diffusers without return_dict on decode
            return self.vae.decode(z).sample


class _CLIPText(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, ids):
        return self.text_encoder(ids, return_dict=False)[0]  # last_hidden_state


class _SDXLText(torch.nn.Module):
    """SDXL's two text encoders as one module, as StableDiffusionXLPipeline's
    encode_prompt uses them: the context is both encoders' penultimate hidden
    states side by side (768 + 1280), the pooled embedding the second's
    projected output (text_embeds). ids2 are the second tokenizer's ids."""

    def __init__(self, text_encoder, text_encoder_2):
        super().__init__()
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2

    def forward(self, ids, ids2):
        first = self.text_encoder(ids, output_hidden_states=True, return_dict=True)
        second = self.text_encoder_2(ids2, output_hidden_states=True, return_dict=True)
        context = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        return context, second.text_embeds


def added_tokens(tokenizer_dir):
    """Tokens a saved tokenizer adds beyond vocab.json (textual inversion),
    which the bundle's BPE tokenizer would not know: from added_tokens.json
    and tokenizer_config.json's added_tokens_decoder."""
    with open(os.path.join(tokenizer_dir, VOCAB_FILE), encoding="utf-8") as f:
        vocab = json.load(f)
    found = {}
    path = os.path.join(tokenizer_dir, "added_tokens.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            found.update({str(t): int(i) for t, i in json.load(f).items()})
    path = os.path.join(tokenizer_dir, "tokenizer_config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            decoder = json.load(f).get("added_tokens_decoder") or {}
        found.update({str(v.get("content")): int(i) for i, v in decoder.items()
                      if isinstance(v, dict)})
    return sorted(t for t, i in found.items() if t not in vocab and i >= len(vocab))


def check_vae(config, dtype, sdxl):
    """Refuses, by name, a VAE the bundle would decode wrongly: one that
    un-normalizes latents with a mean and std (the bundle carries a scaling
    factor alone), or an SDXL one that diffusers' SDXL pipeline upcasts
    because it overflows in fp16 (the SD pipeline decodes in the model's
    dtype whatever the flag says)."""
    for key in ("latents_mean", "latents_std"):
        if getattr(config, key, None) is not None:
            raise ValueError(f"the VAE config's {key} is set: it normalizes latents per channel "
                             "(an EDM-style pipeline); the bundle format has scaling_factor only")
    if sdxl and dtype == "fp16" and getattr(config, "force_upcast", False):
        raise ValueError("--dtype fp16: the VAE config's force_upcast is set (it overflows in "
                         "fp16, and diffusers decodes it in fp32); export with --dtype fp32")


def _is_sdxl(pipe):
    return getattr(pipe, "text_encoder_2", None) is not None


def _sdxl_parts(pipe, image_shape):
    """(text encoder, UNet, extra) of an SDXL pipeline; refuses what the
    bundle format cannot carry, by name."""
    if pipe.text_encoder is None or pipe.unet.config.addition_embed_type != "text_time":
        raise ValueError("SDXL: only base pipelines with both text encoders and "
                         "addition_embed_type 'text_time' (a refiner is not supported)")
    if getattr(pipe.config, "requires_aesthetics_score", False):
        raise ValueError("SDXL: requires_aesthetics_score (a refiner's 5 time ids) is not supported")
    if pipe.tokenizer.get_vocab() != pipe.tokenizer_2.get_vocab():
        raise ValueError("SDXL: the two tokenizers' vocabularies differ; the bundle carries one")
    extra = {
        "pooled_dim": int(pipe.text_encoder_2.config.projection_dim),
        "size_ids": True,
        "second_pad_id": int(pipe.tokenizer_2.pad_token_id),
        "zeros_for_empty_negative": bool(getattr(pipe.config, "force_zeros_for_empty_prompt",
                                                 True)),
        "default_size": [image_shape[0], image_shape[1]],
    }
    return _SDXLText(pipe.text_encoder, pipe.text_encoder_2), _DiffusersUNetXL(pipe.unet), extra


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="pipeline folder, hub id or checkpoint file")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--family", choices=_FAMILIES, default=None,
                   help="a checkpoint file's family: sd (1.x, 2.x) or sdxl; a pipeline says it")
    p.add_argument("--config", default=None,
                   help="a checkpoint file: a diffusers-format folder with its pipeline's "
                        "configs and tokenizers, read instead of fetching them")
    p.add_argument("--original_config", default=None,
                   help="a checkpoint file: its original YAML config (diffusers versions "
                        "that read one; needs omegaconf)")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--name", default=None)
    p.add_argument("--version", default="1")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=None,
                   help="diffusers' guidance_scale: default 7.5 (SD), 5.0 (SDXL); at most 1 "
                        "is the prompt alone (a Turbo model's 0.0), written as 1")
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--spacing", choices=_SPACINGS, default=None,
                   help="overrides the scheduler config's timestep_spacing")
    p.add_argument("--license", default="", help="the model's licence, e.g. creativeml-openrail-m")
    p.add_argument("--max_batch", type=int, default=64,
                   help="the largest batch the graphs are checked at and the engine runs, "
                        "2 to 65536 (the engine's --max_batch defaults to 64)")
    args = p.parse_args(argv)
    if args.dtype == "fp16" and not args.device.startswith("cuda"):
        p.error("--dtype fp16 needs --device cuda")
    if os.path.isfile(args.model) and args.family is None:
        p.error("--family sd or sdxl is needed for a checkpoint file")
    # A pipeline folder (or hub id) carries its own configs and class: these
    # went unread. A path that names nothing (a mistyped checkpoint) is said
    # as such, not taken for a hub id.
    if not os.path.isfile(args.model):
        given = [f"--{k}" for k in ("family", "config", "original_config") if getattr(args, k)]
        if given and not os.path.exists(args.model) and (
                args.model.startswith(("/", ".", "~")) or args.model.count("/") > 1 or
                args.model.endswith((".safetensors", ".ckpt", ".bin", ".pt"))):
            p.error(f"--model {args.model}: no such file or folder")
        if given:
            p.error(f"{', '.join(given)}: for a checkpoint file; {args.model} is not one but a "
                    "pipeline (a folder or hub id), which names its own class and configs")
    # The manifest reader's ranges (docs/bundle-format.md), before minutes of
    # export: a bundle past them was written, self-checked "ok", and then
    # refused by the denoiser.
    if args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    if not 0 <= args.eta <= 1:
        p.error(f"--eta must be in [0, 1], got {args.eta}")
    if args.guidance is not None and not 0 <= args.guidance <= 100:
        p.error(f"--guidance must be in [0, 100], got {args.guidance}")
    if not 2 <= args.max_batch <= 65536:
        p.error(f"--max_batch must be in [2, 65536] (a guided step runs two rows), got "
                f"{args.max_batch}")
    try:
        check_label("--version", args.version, may_be_empty=True)
        bundle_manifest.check_text("--license", args.license, 128)
    except ValueError as e:
        p.error(str(e))
    if os.path.isdir(args.out_dir) and os.listdir(args.out_dir):
        p.error(f"--out_dir {args.out_dir} is not empty: give a new folder (a bundle's old "
                "files would stay beside the new ones)")
    if os.path.lexists(args.out_dir) and not os.path.isdir(args.out_dir):
        p.error(f"--out_dir {args.out_dir} is a file, not a folder")
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        p.error(f"--device: {args.device!r} is no torch device (cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch has no CUDA device")
    # Made (or found empty) before the minutes of loading, so an unwritable
    # place is said at once; a failed or interrupted export empties it again
    # (it left some parts and no manifest, which the next run refused as
    # not empty). The manifest is written last, so no denoiser serves a part.
    existed = os.path.isdir(args.out_dir)
    try:
        os.makedirs(args.out_dir, exist_ok=True)
        if not os.access(args.out_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        p.error(f"--out_dir {args.out_dir}: cannot write there ({e.strerror})")
    try:
        _export(p, args)
    except BaseException:  # a refusal (SystemExit) and Ctrl-C included
        _clear(args.out_dir, keep_folder=existed)
        raise


def _clear(out_dir, keep_folder):
    """Removes what a failed export wrote in `out_dir` (empty before it)."""
    if not keep_folder:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for entry in os.listdir(out_dir):
        path = os.path.join(out_dir, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def _export(p, args):
    """main's export into --out_dir."""
    pipe = _load_pipeline(args.model, _DTYPES[args.dtype], family=args.family,
                          config=args.config, original_config=args.original_config)
    try:
        check_vae(pipe.vae.config, args.dtype, _is_sdxl(pipe))
    except ValueError as e:
        p.error(str(e))
    latent_scale = float(getattr(pipe.vae.config, "scaling_factor", 1.0))
    if not 1e-4 <= latent_scale <= 1e4:  # the manifest reader's range; no NaN passes
        p.error(f"vae/config.json: scaling_factor must be in [0.0001, 10000], got {latent_scale}")
    # diffusers' SD pipelines pass a mask where the config asks (SDXL's never
    # do).
    config = getattr(pipe.text_encoder, "config", None)
    if (not _is_sdxl(pipe) and config is not None and
            getattr(config, "use_attention_mask", False)):
        p.error("text_encoder/config.json: use_attention_mask is set (diffusers then passes "
                "the prompt's mask), which the engine does not pass; not exported")
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    size = pipe.unet.config.sample_size
    if isinstance(size, int) and size > 0:
        h, w = size, size
    elif (isinstance(size, (list, tuple)) and len(size) == 2 and
          all(isinstance(v, int) and v > 0 for v in size)):
        h, w = size
    else:
        p.error(f"unet/config.json: sample_size must be a positive int or [height, width], "
                f"got {size!r}")
    latent_shape = [pipe.unet.config.in_channels, h, w]
    image_shape = [h * vae_scale, w * vae_scale, 3]
    # A per-block list of widths is left to the UNet's own check.
    cross = pipe.unet.config.cross_attention_dim
    context_dim = cross if isinstance(cross, int) else None
    # A checkpoint file's name without its extension; a folder's whole
    # ("RealVisXL_V4.0").
    base = os.path.basename(os.path.normpath(args.model))
    name = args.name or (os.path.splitext(base)[0] if os.path.isfile(args.model) or
                         base.endswith((".safetensors", ".ckpt")) else base)
    try:
        name_bytes = len(name.encode())
    except UnicodeEncodeError:  # a byte of a path that is not UTF-8
        name_bytes = 0
    if (not name or name in (".", "..") or not 0 < name_bytes <= 128 or
            any(ord(c) < 0x20 or c == "\x7f" for c in name)):
        p.error(f"the model's name {name!r} (from --name or --model) must be 1 to 128 bytes "
                "without control characters; give --name")
    try:
        trained = int(pipe.scheduler.config.get("num_train_timesteps", 1000))
    except (TypeError, ValueError):
        p.error(f"scheduler config: num_train_timesteps must be a whole number, got "
                f"{pipe.scheduler.config.get('num_train_timesteps')!r}")
    if args.steps > trained:
        p.error(f"--steps must be at most the scheduler's {trained} training timesteps, "
                f"got {args.steps}")
    prompts = ["a photo of an astronaut riding a horse on mars",
               "a watercolor painting of a lighthouse at dusk",
               "a bowl of fruit on a wooden table, studio lighting"]
    scheduler_config = dict(pipe.scheduler.config)
    if args.spacing:
        # Given, so no longer one the config took from its class's defaults.
        scheduler_config["timestep_spacing"] = args.spacing
        scheduler_config["_use_default_values"] = [
            k for k in scheduler_config.get("_use_default_values") or () if k != "timestep_spacing"]
    # The schedule and the step count as the denoiser will read them, before
    # minutes of export (its warnings come again from export_bundle).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            schedule, spacing = schedule_from_diffusers(scheduler_config)
        check_steps(schedule["train_timesteps"], args.steps, spacing, schedule["steps_offset"])
    except ValueError as e:
        p.error(str(e))
    # An LCM-distilled UNet reads a guidance embedding (timestep_cond) that
    # diffusers passes and the traced graph would silently go without.
    if getattr(pipe.unet.config, "time_cond_proj_dim", None) is not None:
        p.error("the UNet takes a guidance embedding (time_cond_proj_dim is set: an "
                "LCM-distilled model), which the engine does not pass; not exported")
    if _is_sdxl(pipe):
        try:
            text_encoder, unet, extra = _sdxl_parts(pipe, image_shape)
        except ValueError as e:
            p.error(str(e))
        guidance = 5.0 if args.guidance is None else args.guidance
    else:
        text_encoder, unet, extra = _CLIPText(pipe.text_encoder), _DiffusersUNet(pipe.unet), None
        guidance = 7.5 if args.guidance is None else args.guidance
    # diffusers guides only above 1 and runs the prompt alone at or below it;
    # the engine blends at every value but 1 (0 is the unconditional pass).
    guidance = max(guidance, 1.0)
    with tempfile.TemporaryDirectory() as tok_dir:
        pipe.tokenizer.save_pretrained(tok_dir)
        try:
            added = added_tokens(tok_dir)
        except (OSError, ValueError) as e:
            p.error(f"tokenizer: cannot read its saved vocabulary ({e})")
        if added:
            p.error(f"tokenizer: {len(added)} added token(s) beyond vocab.json (textual "
                    f"inversion?), e.g. {added[0]!r}, which the bundle's tokenizer would split "
                    "into pieces; not exported")
        try:
            manifest = export_bundle(
                unet, _DiffusersDecoder(pipe.vae), text_encoder,
                tok_dir, scheduler_config, args.out_dir, name=name, version=args.version,
                latent_shape=latent_shape, image_shape=image_shape, example_prompts=prompts,
                dtype=args.dtype, description=f"{name}, exported by tools/import_diffusers.py",
                license=args.license, latent_scale=latent_scale,
                defaults={"steps": args.steps, "eta": args.eta, "guidance": guidance},
                context_dim=context_dim, device=args.device, extra=extra,
                max_batch=args.max_batch, timestep_dtype="float")
        except (ValueError, OSError, RuntimeError) as e:
            # BundleShapeError is a ValueError; torch's own failures (a
            # trace, memory, a full disk on save) are RuntimeErrors. The
            # tokenizer's files are the pipeline's, not this temporary copy's.
            p.error(str(e).replace(tok_dir, "the pipeline's tokenizer"))
    print(json.dumps(manifest["conditioning"]["tokenizer"]), manifest["schedule"])

    # Self-check: the saved files, one guided DDIM step on "a photo".
    bundle = load_bundle(args.out_dir, args.device)
    tok = pipe.tokenizer
    max_length = manifest["conditioning"]["tokenizer"]["max_length"]

    def ids(text):
        return tok([text], padding="max_length", max_length=max_length, truncation=True,
                   return_tensors="pt").input_ids

    latent, image = sample(bundle, ids("a photo"), None, run_steps=1)
    if not (torch.isfinite(latent).all() and torch.isfinite(image).all()):
        # A denoiser would serve the bundle as it is: main removes it.
        sys.exit("self-check: one step gave non-finite values; the bundle is removed, so no "
                 "denoiser serves it")
    print(f"self-check: one step ok, latent {_shape(latent)}, image {_shape(image)} in "
          f"[{image.min().item():.3f}, {image.max().item():.3f}]; bundle in {args.out_dir}")


if __name__ == "__main__":
    main()
