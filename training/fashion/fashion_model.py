"""The Fashion-MNIST bundle's networks and data, shared by train_fashion.py
and its tests.

    data = load_split("/usr/share/datasets/fashion-mnist", "train")
    unet = UNet()                       # 667 201 parameters, 32/64/64 channels
    eps = unet(x, t, cond)              # x [B,1,28,28] in [-1,1], t [B], cond [B]
    logits, features = Classifier()(x)  # the bundle's judge

The UNet's signature is the bundle's (docs/bundle-format.md): cond is a class
index, or NUM_CLASSES (the manifest's null_label) for the unconditional
prediction that classifier-free guidance needs. Both modules script with
torch.jit.script, and the archives load in the C++ denoiser.
"""
import gzip
import math
import os
import struct
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
CLASS_LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                "bag", "ankle boot"]
FEATURES = 128  # the classifier's feature width


# ----------------------------------------------------------------------- data

def _read_idx(path, magic, dims):
    """One IDX file (gzip or plain) as (shape, bytes); ValueError naming the
    file when the magic, the dimensions or the length are wrong (a truncated
    download, a corrupt stream)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: {e}") from None
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"{path}: {len(raw)} bytes, shorter than its header")
    got = struct.unpack(">I", raw[:4])[0]
    if got != magic:
        raise ValueError(f"{path}: magic {got:#x}, expected {magic:#x}")
    shape = struct.unpack(">" + "I" * dims, raw[4:header])
    if any(d == 0 or d > 10_000_000 for d in shape):
        raise ValueError(f"{path}: bad dimensions {shape}")
    want = header + math.prod(shape)
    if len(raw) != want:
        raise ValueError(f"{path}: {len(raw)} bytes, its header promises {want}")
    return shape, raw[header:]


def load_split(data_dir, split, limit=0):
    """(images uint8 [N,1,H,W], labels int64 [N]) of `split` ("train" or
    "t10k"); `limit` > 0 keeps the first `limit`."""
    (n, h, w), pixels = _read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"),
                                  0x803, 3)
    (m,), labels = _read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"), 0x801, 1)
    if m != n:
        raise ValueError(f"{data_dir}: {split} has {n} images but {m} labels")
    images = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(n, 1, h, w)
    labels = torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()
    if int(labels.max()) >= NUM_CLASSES:
        raise ValueError(f"{data_dir}: {split} has label {int(labels.max())} >= {NUM_CLASSES}")
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    return images.clone(), labels.clone()


def to_unit_range(pixels):
    """uint8 0..255 -> float32 in [-1, 1], the bundle's value range."""
    return pixels.float() * (2.0 / 255.0) - 1.0


# ---------------------------------------------------------------------- UNet

def _zero(module):
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


class ResBlock(nn.Module):
    """norm, conv, + (time, class) embedding, norm, conv; the last conv
    starts at zero, so every block starts as the identity and the untrained
    network's output is small."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.groups = groups
        self.n1 = nn.GroupNorm(groups, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.n2 = nn.GroupNorm(groups, cout)
        self.c2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class DownLevel(nn.Module):
    """A residual block, whose output is the level's skip, then (except at
    the lowest level) a stride-2 conv."""

    def __init__(self, cin: int, ch: int, emb_dim: int, groups: int, downsample: bool):
        super().__init__()
        self.block = ResBlock(cin, ch, emb_dim, groups)
        self.downsample = downsample
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if downsample else nn.Identity()

    def forward(self, x, emb) -> Tuple[torch.Tensor, torch.Tensor]:
        skip = self.block(x, emb)
        return (self.conv(skip) if self.downsample else skip), skip


class UpLevel(nn.Module):
    """A residual block over (x, the level's skip), then (except at the top)
    a conv down to the next level's channels at this resolution and nearest
    upsampling to the next skip's size: a quarter of the cost of
    upsample-then-conv, the largest single cost at 28x28; the next block's
    convs smooth the 2x2 blocks."""

    def __init__(self, cin: int, ch: int, cout: int, emb_dim: int, groups: int, upsample: bool):
        super().__init__()
        self.block = ResBlock(cin, ch, emb_dim, groups)
        self.upsample = upsample
        self.conv = nn.Conv2d(ch, cout, 3, padding=1) if upsample else nn.Identity()

    def forward(self, x, skip, emb, height: int, width: int):
        x = self.block(torch.cat([x, skip], 1), emb)
        if self.upsample:
            x = F.interpolate(self.conv(x), size=[height, width], mode="nearest")
        return x


class UNet(nn.Module):
    """Class-conditional epsilon UNet: 32/64/64 channels at 28 -> 14 -> 7,
    one residual block per level and a middle one, GroupNorm(8) + SiLU,
    sinusoidal timestep and class embeddings, no attention."""

    def __init__(self, channels=(32, 64, 64), num_classes=NUM_CLASSES, groups=8,
                 time_features=32):
        super().__init__()
        c0 = channels[0]
        emb_dim = 4 * c0
        self.half = time_features // 2
        self.time1 = nn.Linear(time_features, emb_dim)
        self.time2 = nn.Linear(emb_dim, emb_dim)
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)  # the last row: null label
        nn.init.normal_(self.class_emb.weight, std=0.02)
        self.inp = nn.Conv2d(1, c0, 3, padding=1)
        levels = len(channels)
        self.down = nn.ModuleList()
        cin = c0
        for i, ch in enumerate(channels):
            self.down.append(DownLevel(cin, ch, emb_dim, groups, i + 1 < levels))
            cin = ch
        self.mid = ResBlock(cin, cin, emb_dim, groups)
        self.up = nn.ModuleList()
        for k in reversed(range(levels)):
            ch = channels[k]
            cout = channels[k - 1] if k > 0 else ch
            self.up.append(UpLevel(cin + ch, ch, cout, emb_dim, groups, k > 0))
            cin = cout
        self.out_norm = nn.GroupNorm(groups, cin)
        self.out = _zero(nn.Conv2d(cin, 1, 3, padding=1))

    def forward(self, x, t, cond):
        freqs = torch.exp(torch.arange(self.half, dtype=torch.float32, device=x.device)
                          * (-math.log(10000.0) / self.half))
        a = t.to(x.device).float()[:, None] * freqs[None, :]
        emb = self.time2(F.silu(self.time1(torch.cat([torch.sin(a), torch.cos(a)], 1))))
        emb = F.silu(emb + self.class_emb(cond.to(x.device)))
        x = self.inp(x)
        skips: List[torch.Tensor] = []
        for level in self.down:
            x, skip = level(x, emb)
            skips.append(skip)
        x = self.mid(x, emb)
        for j, level in enumerate(self.up):
            k = len(skips) - 1 - j
            size = skips[max(k - 1, 0)].shape
            x = level(x, skips[k], emb, size[2], size[3])
        return self.out(F.silu(self.out_norm(x)))


# ---------------------------------------------------------------- classifier

class Classifier(nn.Module):
    """The evaluation classifier and the bundle's judge: conv 32 @28, pool,
    conv 64 @14, pool, conv 64 @7, fc 128 (the features), fc 10. About a
    fifth of the denoiser's cost per image and over 90% on the test split.

        forward(img [B,1,28,28] in [-1, 1]) -> (logits [B,10], features [B,128])
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, FEATURES)
        self.fc2 = nn.Linear(FEATURES, NUM_CLASSES)
        self.dropout = nn.Dropout(0.3)  # on the features, in training only

    def features(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.relu(self.conv3(h))
        return F.relu(self.fc1(torch.flatten(h, 1)))

    def forward(self, x):
        f = self.features(x)
        return self.fc2(self.dropout(f)), f


def parameters(module):
    return sum(p.numel() for p in module.parameters())
