#!/usr/bin/python3
"""Evaluates a model bundle with a judge through the real serving stack.

    PYTHONPATH=build/python /usr/bin/python3 tools/evaluate_bundle.py \\
        --bundle models/fashion-mnist [--trunks 20] [--reference DATA] [--out DIR]

Starts dgrid-denoiser on the bundle and dgrid-orchestrator on loopback (the
binaries in --build/bin), or uses a running pair (--orchestrator and
--denoiser), and measures:

  decision curve  Orchestrator.DecisionCurve, unprompted: per row and judge
                  head P(a branch's label differs from its trunk's), its half
                  step, and the rows' divergence. This is the speciation
                  curve: when the model decides what it draws.
  accuracy        per judge head, how often conditioned samples show what the
                  prompt names. A sample is a grid's trunk or one of its
                  step-0 branches; the denoiser's Judge RPC labels them. A
                  head expects a label when the prompt, or one of its
                  comma-separated parts, is that label (class models: every
                  class name; "ghost, noto": style noto), or when --prompts
                  says so. The standard error is over grids: the samples of a
                  grid share their initial latent and are not independent.
  frechet         with --reference: the Frechet distance between Gaussians
                  fitted to the judge's feature layer (its last output that no
                  head reads) of the samples and of the reference images,
                  beside a real floor: as many reference images against the
                  rest.

Writes DIR/eval.json and DIR/eval.png (the curves with +-1 SE bars); DIR is
<bundle>/eval unless --out says otherwise. training/emoji/evaluate.py calls
evaluate() for the emoji bundle's figures.

--prompts FILE: a JSON list of {"prompt": "...", "expect": {"head": "label"}}
(text models; default: the bundle's example prompts). --reference: a .npy of
uint8 images [N, H, W, C] or [N, H, W], or an IDX file (.gz or not), such as
/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import io
import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BUILD = os.path.join(ROOT, "build")

# Judge RPCs carry at most the replica's --max_trajectories_per_request (256).
JUDGE_BATCH = 128
# Grids of the accuracy run in flight at once; the orchestrator's
# --max_grids_per_client is 16.
ACCURACY_CONCURRENT_GRIDS = 8
# Accuracy grids take seeds from here on, away from the curve's seeds.
ACCURACY_SEED_OFFSET = 1_000_000


def _import_paths(build: str) -> None:
    for p in (os.path.join(build, "python"), os.path.join(ROOT, "clients", "python"),
              os.path.join(ROOT, "bench")):
        if p not in sys.path:
            sys.path.insert(0, p)


# ------------------------------------------------------------------ statistics

def grouped_accuracy(hits: np.ndarray, groups: np.ndarray) -> Dict[str, float]:
    """Accuracy of boolean `hits` and its standard error over `groups` (one id
    per hit): the spread of per-group accuracies, since the samples of one
    group (one grid, one prompt) succeed or fail together."""
    ids = np.unique(groups)
    per = np.array([hits[groups == g].mean() for g in ids])
    # None with one group: JSON has no NaN.
    se = round(float(per.std(ddof=1) / math.sqrt(len(per))), 4) if len(per) > 1 else None
    return {"accuracy": round(float(hits.mean()), 4), "standard_error": se,
            "samples": int(len(hits)), "groups": int(len(ids))}


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature rows a and b."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(ca cb) through the symmetric form sqrt(ca) cb sqrt(ca).
    w, v = np.linalg.eigh(ca)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root @ cb @ root
    tr_root = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    return max(0.0, float(mu @ mu + np.trace(ca) + np.trace(cb) - 2 * tr_root))


# ---------------------------------------------------------------------- images

def decode_png(data: bytes, channels: int) -> np.ndarray:
    """A cell PNG as uint8 [H, W, C]."""
    from PIL import Image
    img = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def read_images(path: str) -> np.ndarray:
    """uint8 [N, H, W, C] from a .npy or an IDX file (gzipped or not)."""
    if path.endswith(".npy"):
        arr = np.load(path)
    else:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
        if data[:2] != b"\0\0" or data[2] != 0x08:
            raise ValueError(f"{path}: not an IDX file of unsigned bytes")
        dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(data[3])]
        arr = np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4):
        raise ValueError(f"{path}: want uint8 images [N, H, W(, C)], got {arr.dtype} {arr.shape}")
    return arr[..., None] if arr.ndim == 3 else arr


class JudgeFeatures:
    """The judge's feature layer, run here with torch on images as the denoiser
    feeds them to the judge (uint8 mapped onto the decoder's value range)."""

    def __init__(self, bundle: str, manifest: Dict[str, Any]) -> None:
        import torch
        self._torch = torch
        judge = manifest["judge"]
        self._module = torch.jit.load(os.path.join(bundle, judge["weights"])).eval()
        self._head_outputs = {int(h.get("output", 0)) for h in judge["heads"]}
        lo, hi = manifest.get("decoder", {}).get("value_range", [-1, 1])
        self._lo, self._scale = float(lo), (float(hi) - float(lo)) / 255.0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.no_grad():
            for i in range(0, len(images), 256):
                x = torch.from_numpy(np.array(images[i:i + 256])).permute(0, 3, 1, 2)
                result = self._module(x.float() * self._scale + self._lo)
                if not isinstance(result, (tuple, list)):
                    raise ValueError("the judge returns one tensor: it has no feature layer")
                free = [k for k in range(len(result)) if k not in self._head_outputs]
                if not free:
                    raise ValueError("every output of the judge is a head: no feature layer")
                out.append(result[free[-1]].flatten(1).double().numpy())
        return np.concatenate(out)


# ----------------------------------------------------------------------- stack

class Stack:
    """The pair on loopback (one denoiser on the bundle, one orchestrator), or
    the addresses of a running one."""

    def __init__(self, bundle: str, build: str, threads: int,
                 orchestrator: str = "", denoiser: str = "") -> None:
        self._procs: List[Any] = []
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        if orchestrator or denoiser:
            if not (orchestrator and denoiser):
                raise ValueError("--orchestrator and --denoiser go together (Judge is a "
                                 "denoiser RPC)")
            self.orchestrator, self.denoiser = orchestrator, denoiser
            return
        from processes import start
        self._tmp = tempfile.TemporaryDirectory(prefix="dgrid-eval-")
        tmp, bins = self._tmp.name, os.path.join(build, "bin")
        try:
            proc, dports = start(
                [f"{bins}/dgrid-denoiser", f"--model_dir={os.path.abspath(bundle)}",
                 "--listen=127.0.0.1:0", "--metrics_addr=", f"--threads={threads}",
                 "--max_batch=128"],
                f"{tmp}/denoiser.ports", f"{tmp}/denoiser.log")
            self._procs.append(proc)
            proc, oports = start(
                [f"{bins}/dgrid-orchestrator", f"--denoisers=127.0.0.1:{dports['grpc']}",
                 "--listen=127.0.0.1:0", "--metrics_addr=", "--grid_timeout_s=3600"],
                f"{tmp}/orchestrator.ports", f"{tmp}/orchestrator.log")
            self._procs.append(proc)
        except BaseException as e:
            # The logs go with the folder: a server that would not start
            # (a bad bundle) says why in their last lines, kept here.
            tail = _log_tails([f"{tmp}/denoiser.log", f"{tmp}/orchestrator.log"])
            self.close()
            if isinstance(e, RuntimeError) and tail:
                raise RuntimeError(f"{e} (the folder is removed; the log ends:)\n{tail}") from None
            raise
        self.denoiser = f"127.0.0.1:{dports['grpc']}"
        self.orchestrator = f"127.0.0.1:{oports['grpc']}"

    def close(self) -> None:
        for p in reversed(self._procs):
            p.terminate()
        for p in self._procs:
            p.wait()
        self._procs = []
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _log_tails(paths: Sequence[str], lines: int = 10) -> str:
    """The last lines of each log that exists and holds something."""
    tails = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text:
            tails.append(f"{os.path.basename(path)}:\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(tails)


class Judge:
    """Denoiser.Judge over a channel: one {head: label} per PNG."""

    def __init__(self, target: str, model: str) -> None:
        import grpc
        from dgrid.v1 import denoiser_pb2, denoiser_pb2_grpc
        self._pb = denoiser_pb2
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 << 20),
                             ("grpc.max_receive_message_length", 64 << 20)])
        self._stub = denoiser_pb2_grpc.DenoiserStub(self._channel)
        self._model = model

    def __call__(self, pngs: Sequence[bytes]) -> List[Dict[str, str]]:
        out: List[Dict[str, str]] = []
        for i in range(0, len(pngs), JUDGE_BATCH):
            request = self._pb.JudgeRequest(
                model=self._model, images=[self._pb.Image(png=p) for p in pngs[i:i + JUDGE_BATCH]])
            response = self._stub.Judge(request, timeout=600)
            out.extend({h.head: h.label for h in image.heads} for image in response.images)
        return out

    def close(self) -> None:
        self._channel.close()


# ---------------------------------------------------------------- measurements

def served_manifest(bundle: str) -> Dict[str, Any]:
    """The bundle's manifest.json as the denoiser reads it: its lowerCamelCase
    keys too, checked against the contract (ValueError), with proto field
    names and image_shape's default ([h, w, C] of latent_shape). Where
    bundle_manifest.read_manifest gives the file's own keys."""
    from google.protobuf import json_format

    import bundle_manifest
    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as f:
        raw = json.load(f)
    message = bundle_manifest.check_manifest(raw)
    manifest = json_format.MessageToDict(message, preserving_proto_field_name=True)
    # protobuf's JSON writes int64 as strings.
    manifest["latent_shape"] = [int(n) for n in manifest["latent_shape"]]
    if manifest.get("image_shape"):
        manifest["image_shape"] = [int(n) for n in manifest["image_shape"]]
    else:
        c, h, w = manifest["latent_shape"]
        manifest["image_shape"] = [h, w, c]
    return manifest


def expected_labels(prompt: str, heads: Sequence[Dict[str, Any]],
                    expect: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Per head, the label the prompt names: the whole prompt or one of its
    comma-separated parts equals it (case aside); `expect` adds or overrides."""
    parts = {prompt.strip().lower()} | {p.strip().lower() for p in prompt.split(",")}
    out = {}
    for h in heads:
        named = [label for label in h["labels"] if label.lower() in parts]
        if len(named) == 1:
            out[h["name"]] = named[0]
    # A head or label the judge lacks scored every sample a miss, or nothing.
    labels = {h["name"]: h["labels"] for h in heads}
    for head, label in (expect or {}).items():
        if head not in labels:
            raise ValueError(f"expect: the judge has no head {head!r} (its heads: "
                             f"{', '.join(labels)})")
        if label not in labels[head]:
            raise ValueError(f"expect: {head} has no label {label!r} (its labels: "
                             f"{', '.join(labels[head][:20])})")
    out.update(expect or {})
    return out


def run_curve(client: Any, model: str, trunks: int, seed: int, **grid: Any) -> Dict[str, Any]:
    """The unprompted decision curve as JSON-ready numbers."""
    started = time.time()
    curve = client.decision_curve(trunks, seed=seed, model=model, **grid)
    seconds = time.time() - started

    def est(e: Any) -> Optional[Dict[str, float]]:
        if e is None:  # one branch per row: no pairwise divergence
            return None
        return {"mean": round(e.mean, 4), "standard_error": round(e.standard_error, 4)}

    heads = {}
    for h in curve.heads:
        heads[h.head] = {
            "p_differs": [est(e) for e in h.p_differs],
            "half_step": None if h.half_step is None else round(h.half_step, 2),
            "half_step_standard_error": round(h.half_step_standard_error, 2),
            "half_step_interval_68": [round(v, 2) for v in h.half_step_interval],
            # The interval's upper end is the last row's step, and it runs on.
            "half_step_hi_after_last_row": h.half_step_hi_after_last_row,
        }
    return {
        "trunks": curve.trunks, "seed": seed, "prompt": curve.plan.prompt,
        "branches": curve.plan.branches,
        "rows": [{"branch_step": r.branch_step, "timestep": r.timestep,
                  "divergence": est(r.divergence),
                  "divergence_to_trunk": est(r.divergence_to_trunk)} for r in curve.rows],
        "heads": heads, "seconds": round(seconds, 1), "model_evals": curve.model_evals,
        "judged_images": curve.judged_images,
    }


def run_accuracy(client: Any, judge: Judge, model: str, heads: Sequence[Dict[str, Any]],
                 prompts: Sequence[Dict[str, Any]], branches: int, seed: int,
                 **grid: Any) -> Dict[str, Any]:
    """One grid per prompt (the trunk and `branches` branches from step 0),
    judged; per head the accuracy over the samples whose prompt names a label.
    Returns the figures and, under "_samples", the PNGs (not for JSON)."""
    started = time.time()

    def one(i: int) -> Any:
        return client.create_grid(prompt=prompts[i]["prompt"], seed=seed + i, model=model,
                                  branch_steps=[0], branches=branches, **grid)

    with concurrent.futures.ThreadPoolExecutor(ACCURACY_CONCURRENT_GRIDS) as pool:
        grids = list(pool.map(one, range(len(prompts))))
    pngs, group, want = [], [], []
    for i, (g, p) in enumerate(zip(grids, prompts)):
        expect = expected_labels(p["prompt"], heads, p.get("expect"))
        for cell in (g.trunk,) + g.rows[0].cells:
            pngs.append(cell.png)
            group.append(i)
            want.append(expect)
    verdicts = judge(pngs)
    group_ids = np.array(group)
    out: Dict[str, Any] = {"grids": len(grids), "samples": len(pngs),
                           "samples_per_grid": branches + 1, "heads": {}}
    for h in heads:
        name = h["name"]
        mask = np.array([name in w for w in want])
        if not mask.any():
            continue
        hits = np.array([v[name] == w.get(name) for v, w in zip(verdicts, want)])[mask]
        figures = grouped_accuracy(hits, group_ids[mask])
        figures["chance"] = round(1 / len(h["labels"]), 4)
        out["heads"][name] = figures
    plan = grids[0].plan
    out["sampler"] = {"steps": plan.steps, "eta": plan.eta, "guidance": plan.guidance,
                      "spacing": plan.spacing}
    out["se_is"] = "standard error over grids (one prompt each; its samples share x_T)"
    out["seconds"] = round(time.time() - started, 1)
    out["_samples"] = pngs
    return out


def frechet_figures(features: JudgeFeatures, samples: np.ndarray, reference: np.ndarray,
                    seed: int) -> Dict[str, Any]:
    """Samples vs the reference, beside the same distance between as many
    reference images and the rest of them (the floor at this sample size)."""
    f_samples, f_ref = features(samples), features(reference)
    pick = np.random.default_rng(seed).permutation(len(f_ref))
    m = len(f_samples)
    out = {"samples": int(m), "reference_images": int(len(f_ref)),
           "feature_dim": int(f_ref.shape[1]),
           "vs_reference": round(frechet(f_samples, f_ref), 3)}
    if len(f_ref) >= 2 * m:
        out["floor_reference_subset_vs_rest"] = round(
            frechet(f_ref[pick[:m]], f_ref[pick[m:]]), 3)
    return out


def cpu_model() -> str:
    from processes import cpu_model as model
    return model()


def evaluate(bundle: str, *, build: str = DEFAULT_BUILD, trunks: int = 20, seed: int = 1000,
             prompts: Optional[Sequence[Dict[str, Any]]] = None, grids_per_class: int = 4,
             branches: int = 3, reference: Optional[np.ndarray] = None,
             orchestrator: str = "", denoiser: str = "", threads: int = 0,
             steps: Optional[int] = None, guidance: Optional[float] = None,
             curve_branch_steps: Optional[Sequence[int]] = None,
             keep_samples: bool = False) -> Dict[str, Any]:
    """The report as a dict. `prompts`: [{"prompt", "expect"?}] (default: the
    class names, each `grids_per_class` times; a text model's example
    prompts). `trunks` 0 skips the curve, an empty `prompts` the accuracy.
    With keep_samples the report's "samples" holds the samples as uint8
    [N, H, W, C] (not JSON)."""
    _import_paths(build)
    from dgrid_client import Client

    manifest = served_manifest(bundle)
    if "judge" not in manifest:
        raise ValueError(f"{bundle}: the bundle has no judge (manifest.json's judge)")
    heads = manifest["judge"]["heads"]
    name = manifest["name"]
    cond = manifest.get("conditioning", {})
    channels = int(manifest["image_shape"][-1])
    if prompts is None:
        if cond.get("class_labels"):
            prompts = [{"prompt": c} for c in cond["class_labels"] for _ in range(grids_per_class)]
        else:
            prompts = [{"prompt": p} for p in cond.get("example_prompts", [])]
    grid: Dict[str, Any] = {}
    if steps is not None:
        grid["steps"] = steps
    if guidance is not None:
        grid["guidance"] = guidance

    started = time.time()
    report: Dict[str, Any] = {"model": name, "version": manifest.get("version", ""),
                              "bundle": os.path.abspath(bundle),
                              "conditioning": "class" if cond.get("class_labels") else "text",
                              "judge_heads": [h["name"] for h in heads]}
    with Stack(bundle, build, threads or os.cpu_count() or 1, orchestrator, denoiser) as stack, \
            Client(stack.orchestrator, default_timeout=7200) as client:
        client.wait_ready(120)
        judge = Judge(stack.denoiser, name)
        try:
            if trunks > 0:
                curve_grid = dict(grid)
                curve_grid.pop("guidance", None)  # unprompted: guidance does nothing
                if curve_branch_steps is not None:
                    curve_grid["branch_steps"] = list(curve_branch_steps)
                report["decision_curve"] = run_curve(client, name, trunks, seed, **curve_grid)
                print(f"[evaluate] decision curve: {trunks} trunks, "
                      f"{report['decision_curve']['seconds']} s", file=sys.stderr, flush=True)
            if prompts:
                accuracy = run_accuracy(client, judge, name, heads, prompts, branches,
                                        seed + ACCURACY_SEED_OFFSET, **grid)
                pngs = accuracy.pop("_samples")
                report["accuracy"] = accuracy
                print(f"[evaluate] accuracy: {accuracy['samples']} samples, "
                      f"{accuracy['seconds']} s", file=sys.stderr, flush=True)
                if reference is not None or keep_samples:
                    samples = np.stack([decode_png(p, channels) for p in pngs])
                    if keep_samples:
                        report["samples"] = samples
                    if reference is not None:
                        report["frechet"] = frechet_figures(
                            JudgeFeatures(bundle, manifest), samples, reference, seed)
        finally:
            judge.close()
    report["seconds"] = round(time.time() - started, 1)
    report["hardware"] = {"cpu": cpu_model(), "cores": os.cpu_count()}
    return report


# ------------------------------------------------------------------------ plot

def plot(report: Dict[str, Any], path: str) -> None:
    """The decision curves (P(differs) per head, and the rows' divergence)
    with +-1 SE bars, and the accuracy in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["decision_curve"]
    steps = [r["branch_step"] for r in curve["rows"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for head, h in curve["heads"].items():
        half = h["half_step"]
        if half is None:
            label = head
        elif h.get("half_step_hi_after_last_row"):
            label = f"{head} (half at {half:.1f}; 68% from {h['half_step_interval_68'][0]:.1f} " \
                    f"to past the last row)"
        else:
            label = f"{head} (half at {half:.1f} ± {h['half_step_standard_error']:.1f})"
        left.errorbar(steps, [p["mean"] for p in h["p_differs"]],
                      yerr=[p["standard_error"] for p in h["p_differs"]],
                      marker="o", capsize=3, label=label)
    left.set(xlabel="branch step", ylabel="P(branch label ≠ trunk's)", ylim=(0, 1.02),
             title="decision curve")
    left.grid(alpha=0.3)
    left.legend()
    for key, label in (("divergence", "between branches"),
                       ("divergence_to_trunk", "branches to trunk")):
        right.errorbar(steps, [r[key]["mean"] for r in curve["rows"]],
                       yerr=[r[key]["standard_error"] for r in curve["rows"]],
                       marker="o", capsize=3, label=label)
    right.set(xlabel="branch step", ylabel="mean RMS pixel distance", ylim=(0, None),
              title="divergence")
    right.grid(alpha=0.3)
    right.legend()
    title = f"{report['model']}: {curve['trunks']} unprompted trunks"
    acc = report.get("accuracy", {}).get("heads", {})
    if acc:
        title += "; accuracy " + ", ".join(
            f"{k} {v['accuracy']:.2f}" + (f" ± {v['standard_error']:.2f}"
                                          if v["standard_error"] is not None else "")
            for k, v in acc.items())
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------ main

def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="the bundle folder (manifest.json)")
    p.add_argument("--build", default=DEFAULT_BUILD, help="build folder (bin/, python/)")
    p.add_argument("--orchestrator", default="", help="a running orchestrator (host:port)")
    p.add_argument("--denoiser", default="", help="a denoiser of that pool, for Judge")
    p.add_argument("--trunks", type=int, default=20, help="decision-curve trunks (0: none)")
    p.add_argument("--seed", type=int, default=1000, help="trunk t of the curve has seed+t")
    p.add_argument("--prompts", default="", help="JSON [{prompt, expect}] for the accuracy")
    p.add_argument("--grids_per_class", type=int, default=4,
                   help="class models: accuracy grids per class")
    p.add_argument("--branches", type=int, default=3,
                   help="step-0 branches per accuracy grid (samples = branches + 1)")
    p.add_argument("--no_accuracy", action="store_true")
    p.add_argument("--reference", default="", help="real images for the Frechet distance")
    p.add_argument("--reference_images", type=int, default=0,
                   help="use the first N reference images (0: all)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: bundle's)")
    p.add_argument("--guidance", type=float, default=None,
                   help="accuracy grids' guidance (default: the bundle's)")
    p.add_argument("--curve_branch_steps", default="",
                   help="the curve's rows, e.g. 0,5,10 (default: the default preset's)")
    p.add_argument("--threads", type=int, default=0, help="denoiser torch threads (0: cores)")
    p.add_argument("--out", default="", help="folder for eval.json and eval.png")
    args = p.parse_args(argv)
    # Inputs before the evaluation's minutes, each error one line: they
    # were tracebacks, and an --out that cannot be made lost the report.
    if not os.path.isfile(os.path.join(args.bundle, "manifest.json")):
        p.error(f"--bundle: no bundle at {args.bundle} (no manifest.json)")
    try:
        curve_branch_steps = ([int(s) for s in args.curve_branch_steps.split(",")]
                              if args.curve_branch_steps else None)
    except ValueError:
        p.error(f"--curve_branch_steps: whole numbers such as 0,5,10, got "
                f"{args.curve_branch_steps!r}")
    out = args.out or os.path.join(args.bundle, "eval")
    try:
        os.makedirs(out, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(f"cannot write in {out}")
    except OSError as e:
        p.error(f"--out: {e}")

    prompts = None
    if args.prompts:
        with open(args.prompts) as f:
            prompts = json.load(f)
    if args.no_accuracy:
        prompts = []
        if args.reference:
            # The Frechet distance compares the accuracy run's samples.
            p.error("--reference needs the accuracy run's samples; drop --no_accuracy")
    reference = None
    if args.reference:
        reference = read_images(args.reference)
        if args.reference_images:
            reference = reference[:args.reference_images]
    report = evaluate(
        args.bundle, build=args.build, trunks=args.trunks, seed=args.seed, prompts=prompts,
        grids_per_class=args.grids_per_class, branches=args.branches, reference=reference,
        orchestrator=args.orchestrator, denoiser=args.denoiser, threads=args.threads,
        steps=args.steps, guidance=args.guidance, curve_branch_steps=curve_branch_steps)
    if "frechet" in report:
        report["frechet"]["reference"] = os.path.abspath(args.reference)
    if "decision_curve" in report:
        plot(report, os.path.join(out, "eval.png"))
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, RuntimeError) as e:
        # A file that cannot be read, a bundle the servers refuse: one line
        # (or the server's log lines), not a traceback.
        sys.exit(f"evaluate_bundle: {e}")
