"""A bundle's manifest.json in Python: the one reader and the one writer.

The contract is proto/dgrid/v1/manifest.proto (docs/bundle-format.md); the
denoiser reads manifests with the same message in C++ (common/manifest_reader).
Every Python producer of bundles (tools/import_diffusers.py, the emoji
exporter, the test fixtures) writes through write_manifest, which refuses a
field the contract does not have, and takes the noise schedule's cumulative
alphas from alphas_cumprod, the schedule's one formula in Python.

    import bundle_manifest as bm
    manifest = {"name": "tiny", "latent_shape": [4, 8, 8], ...}
    bm.write_manifest(os.path.join(out_dir, "manifest.json"), manifest)
    again = bm.read_manifest(os.path.join(out_dir, "manifest.json"))   # == manifest
    abar = bm.alphas_cumprod(manifest["schedule"])                      # float64 [T]

The generated module is dgrid.v1.manifest_pb2 from the build (build/python on
PYTHONPATH); without it, this module generates it once with grpc_tools.protoc
(Debian's python3-grpc-tools) into a temporary folder.
"""

from __future__ import annotations

import atexit
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from typing import Any, Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROTO_DIR = os.path.join(ROOT, "proto")
_cached = None


def manifest_pb2() -> Any:
    """dgrid.v1.manifest_pb2, imported or generated."""
    global _cached
    if _cached is not None:
        return _cached
    try:
        _cached = importlib.import_module("dgrid.v1.manifest_pb2")
        return _cached
    except ImportError:
        pass
    out = tempfile.mkdtemp(prefix="dgrid-manifest-pb2-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", _PROTO_DIR,
                    f"--python_out={out}",
                    os.path.join(_PROTO_DIR, "dgrid", "v1", "manifest.proto")], check=True)
    for package in ("dgrid", os.path.join("dgrid", "v1")):
        open(os.path.join(out, package, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    _cached = importlib.import_module("dgrid.v1.manifest_pb2")
    return _cached


def check_manifest(manifest: Dict[str, Any]) -> Any:
    """The manifest as a ModelManifest message; ValueError naming what the
    contract does not have (an unknown field, a value of the wrong type)."""
    from google.protobuf import json_format
    message = manifest_pb2().ModelManifest()
    try:
        json_format.ParseDict(manifest, message)
    except json_format.ParseError as e:
        raise ValueError(f"manifest: {e}") from None
    # The text a denoiser shows as it is, held to its reader's rules
    # (common/manifest_reader.cc), so that an export it would refuse fails here.
    check_text("description", message.description, 4096, layout=True)
    check_text("data.license", message.data.license, 128)
    prompts = message.conditioning.example_prompts
    if len(prompts) > 64:
        raise ValueError("manifest conditioning.example_prompts: more than 64 prompts")
    for i, prompt in enumerate(prompts):
        check_text(f"conditioning.example_prompts[{i}]", prompt, 4096, prompt=True)
    return message


def check_text(field: str, text: str, max_bytes: int, layout: bool = False,
                prompt: bool = False) -> None:
    """UTF-8 of at most `max_bytes`, without control characters (but line
    breaks and tabs where `layout`), and where a `prompt`, held to a client
    prompt's rules: no noncharacter (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF), at
    most 30 combining marks in a row."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ValueError(f"manifest {field}: is {size} bytes, more than {max_bytes}")
    allowed = "\n\r\t" if layout else ""
    for c in text:
        if (ord(c) < 0x20 and c not in allowed) or ord(c) == 0x7F:
            raise ValueError(f"manifest {field}: holds a control character: {text[:40]!r}")
        if prompt and (0xFDD0 <= ord(c) <= 0xFDEF or ord(c) & 0xFFFE == 0xFFFE):
            raise ValueError(f"manifest {field}: holds the noncharacter U+{ord(c):04X}")
    if prompt:
        # The denoiser's tokenizer takes at most 30 combining marks in a row,
        # counted in each character's full (NFKD) decomposition.
        run = 0
        for c in text:
            for d in unicodedata.normalize("NFKD", c):
                run = run + 1 if unicodedata.combining(d) else 0
                if run > 30:
                    raise ValueError(f"manifest {field}: more than 30 combining marks in a row")


def weights_version(modules: Any, extra: bytes = b"") -> str:
    """A bundle version named by what the served networks compute: the first
    12 hex digits of a SHA-256 over each module's state (tensor names,
    dtypes, shapes and bytes, in order) and `extra` (a vocabulary, a latent
    scale). The orchestrator's cache keys on the version, so retrained
    weights get their own; the same weights get the same one wherever they
    are exported (a TorchScript file also holds its source's path)."""
    import hashlib
    import torch
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{list(t.shape)};".encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    digest.update(extra)
    return digest.hexdigest()[:12]


def write_manifest(path: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """Checks `manifest` against the contract and writes it as JSON (keys in
    the given order, proto field names). Returns it."""
    check_manifest(manifest)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)  # a reader never sees half a manifest
    return manifest


def read_manifest(path: str) -> Dict[str, Any]:
    """A manifest.json as a dict, checked against the contract."""
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    check_manifest(manifest)
    return manifest


def alphas_cumprod(schedule: Dict[str, Any]) -> Any:
    """float64 cumulative alphas (a torch tensor [train_timesteps]) of a
    manifest's schedule, as diffusers builds them: "linear" and
    "scaled_linear" betas from beta_start to beta_end, or
    "squaredcos_cap_v2"."""
    import torch
    n = schedule.get("train_timesteps", 1000)
    kind = schedule.get("beta_schedule", "linear")
    if kind == "linear":
        betas = torch.linspace(schedule["beta_start"], schedule["beta_end"], n,
                               dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(schedule["beta_start"] ** 0.5, schedule["beta_end"] ** 0.5, n,
                               dtype=torch.float64) ** 2
    elif kind == "squaredcos_cap_v2":

        def alpha_bar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999)
                              for i in range(n)], dtype=torch.float64)
    else:
        raise ValueError(f"schedule.beta_schedule: unknown schedule {kind!r}")
    return torch.cumprod(1.0 - betas, dim=0)
