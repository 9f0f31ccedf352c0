"""The emoji bundle's networks: a KL autoencoder (f = 4), a small text
encoder, and a UNet with cross-attention to the text at 16x16 and 8x8.

Everything here is traceable by torch.jit.trace with any batch size: no
Python branches on shapes, no int(x.shape[...]).
"""
import math
import unicodedata

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE = 64
LATENT_CHANNELS = 4
LATENT = 16


def groups(channels):
    return 8 if channels % 8 == 0 else 1


class Res(nn.Module):
    """GroupNorm-SiLU-conv twice, an optional time embedding added between."""

    def __init__(self, cin, cout, temb=0):
        super().__init__()
        self.n1 = nn.GroupNorm(groups(cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout) if temb else None
        self.n2 = nn.GroupNorm(groups(cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb=None):
        h = self.c1(F.silu(self.n1(x)))
        if self.t is not None:
            h = h + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


# ---------------------------------------------------------------- autoencoder

class Encoder(nn.Module):
    def __init__(self, widths=(32, 64, 96)):
        super().__init__()
        a, b, c = widths
        self.inp = nn.Conv2d(3, a, 3, padding=1)
        self.r1 = Res(a, a)
        self.d1 = nn.Conv2d(a, b, 3, stride=2, padding=1)   # 32x32
        self.r2 = Res(b, b)
        self.d2 = nn.Conv2d(b, c, 3, stride=2, padding=1)   # 16x16
        self.r3 = Res(c, c)
        self.r4 = Res(c, c)
        self.n = nn.GroupNorm(groups(c), c)
        self.out = nn.Conv2d(c, 2 * LATENT_CHANNELS, 3, padding=1)

    def forward(self, x):
        h = self.r1(self.inp(x))
        h = self.r2(self.d1(h))
        h = self.r4(self.r3(self.d2(h)))
        moments = self.out(F.silu(self.n(h)))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(self, widths=(32, 64, 96)):
        super().__init__()
        a, b, c = widths
        self.inp = nn.Conv2d(LATENT_CHANNELS, c, 3, padding=1)
        self.r1 = Res(c, c)
        self.r2 = Res(c, c)
        self.u1 = nn.Conv2d(c, b, 3, padding=1)              # after 2x: 32x32
        self.r3 = Res(b, b)
        self.u2 = nn.Conv2d(b, a, 3, padding=1)              # after 2x: 64x64
        self.r4 = Res(a, a)
        self.n = nn.GroupNorm(groups(a), a)
        self.out = nn.Conv2d(a, 3, 3, padding=1)

    def forward(self, z):
        h = self.r2(self.r1(self.inp(z)))
        h = self.r3(self.u1(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        h = self.r4(self.u2(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        return self.out(F.silu(self.n(h)))


class Autoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()


class ScaledDecoder(nn.Module):
    """What the bundle ships: latent (already divided by latent_scale by the
    engine) to an image in [-1, 1]."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, z):
        return self.decoder(z).clamp(-1.0, 1.0)


class MeanEncoder(nn.Module):
    """Image in [-1, 1] to the posterior mean (unscaled): for evaluation."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        return self.encoder(x)[0]


# --------------------------------------------------------------- text encoder

def split_words(text):
    """The `words` tokenizer's split, as the C++ one does it: NFC, whitespace
    collapsed, lower case, then runs of letters, of digits, and of other
    visible characters."""
    text = " ".join(unicodedata.normalize("NFC", text).split()).lower()
    out, run, kind = [], "", None
    for ch in text:
        cat = unicodedata.category(ch)
        k = None if ch.isspace() else ("L" if cat[0] == "L" else "N" if cat[0] == "N" else "O")
        if k != kind and run:
            out.append(run)
            run = ""
        kind = k
        if k is not None:
            run += ch
    if run:
        out.append(run)
    return out


class Vocab:
    PAD, BOS, EOS, UNK = 0, 1, 2, 3
    SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]

    def __init__(self, words, max_length):
        self.words = list(self.SPECIAL) + sorted(set(words) - set(self.SPECIAL))
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.max_length = max_length

    def encode(self, text):
        ids = [self.ids.get(w, self.UNK) for w in split_words(text)][: self.max_length - 2]
        ids = [self.BOS] + ids + [self.EOS]
        return ids + [self.PAD] * (self.max_length - len(ids))


class TextEncoder(nn.Module):
    def __init__(self, vocab_size, max_length, dim=64, layers=2, heads=4):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(1, max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids):
        return self.norm(self.layers(self.embed(ids) + self.pos))


# ----------------------------------------------------------------------- UNet

class Attention(nn.Module):
    """Attention of image positions to a context (cross) or to themselves."""

    def __init__(self, channels, context_dim=None, heads=1):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups(channels), channels)
        self.q = nn.Linear(channels, channels, bias=False)
        kv_dim = context_dim or channels
        self.k = nn.Linear(kv_dim, channels, bias=False)
        self.v = nn.Linear(kv_dim, channels, bias=False)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x, context=None):
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)               # [B, hw, C]
        src = seq if context is None else context
        q, k, v = self.q(seq), self.k(src), self.v(src)
        d = c // self.heads

        def split(t):
            return t.reshape(t.shape[0], t.shape[1], self.heads, d).transpose(1, 2)

        att = torch.softmax((split(q) * (1.0 / math.sqrt(d))) @ split(k).transpose(-1, -2), dim=-1)
        out = (att @ split(v)).transpose(1, 2).reshape(seq.shape)
        return x + self.proj(out).transpose(1, 2).reshape(x.shape)


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32,
                                                          device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class UNet(nn.Module):
    def __init__(self, context_dim=64, widths=(48, 96), temb=192):
        super().__init__()
        a, b = widths
        self.tdim = widths[0]
        self.time = nn.Sequential(nn.Linear(a, temb), nn.SiLU(), nn.Linear(temb, temb))
        # The mean of the context over its positions joins the time embedding:
        # a global "what is drawn" signal in every residual block, beside the
        # cross-attention's per-position one.
        self.pooled = nn.Sequential(nn.Linear(context_dim, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.inp = nn.Conv2d(LATENT_CHANNELS, a, 3, padding=1)
        self.down16 = Res(a, a, temb)
        self.x16 = Attention(a, context_dim)
        self.down = nn.Conv2d(a, b, 3, stride=2, padding=1)
        self.down8 = Res(b, b, temb)
        self.x8 = Attention(b, context_dim, heads=2)
        self.mid = Res(b, b, temb)
        self.self8 = Attention(b, heads=2)
        self.midx8 = Attention(b, context_dim, heads=2)
        self.up8 = Res(2 * b, b, temb)
        self.upx8 = Attention(b, context_dim, heads=2)
        self.up = nn.Conv2d(b, a, 3, padding=1)
        self.up16 = Res(2 * a, a, temb)
        self.upx16 = Attention(a, context_dim)
        self.norm = nn.GroupNorm(groups(a), a)
        self.out = nn.Conv2d(a, LATENT_CHANNELS, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, t, context):
        e = self.time(timestep_embedding(t, self.tdim)) + self.pooled(context.mean(dim=1))
        h16 = self.x16(self.down16(self.inp(x), e), context)
        h8 = self.x8(self.down8(self.down(h16), e), context)
        m = self.midx8(self.self8(self.mid(h8, e)), context)
        u8 = self.upx8(self.up8(torch.cat([m, h8], dim=1), e), context)
        u16 = self.up(F.interpolate(u8, scale_factor=2.0, mode="nearest"))
        u16 = self.upx16(self.up16(torch.cat([u16, h16], dim=1), e), context)
        return self.out(F.silu(self.norm(u16)))


def parameters(module):
    return sum(p.numel() for p in module.parameters())
