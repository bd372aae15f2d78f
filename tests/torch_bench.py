#!/usr/bin/env python3
"""PyTorch's side of issue 3's comparison: the llava-1m training step of `pulse bench train`
(same config, batch 8 x 64 merged positions, an image per row, loss on every token, global
norm clipping at 1.0, AdamW), timed in PyTorch on this machine, so that the two can be run
back to back (`make bench-torch`). Not a test and not part of pulse: it needs Debian's
python3-torch (1.13 on bookworm) and is skipped without it.

The model is written out here (CLIP-style vision tower, 2-layer GELU projector, Llama decoder
with RoPE and SwiGLU) at the sizes of the config; its math is that of docs/model.md, but it
is used only for timing, never to check pulse's numbers (tests/ref_llava.py does that).

usage: torch_bench.py [CONFIG.json (default llava-1m)] [--batch B] [--seq T] [--threads N[,N...]] [--seconds S]
prints, per thread count, "torch full: N tokens/s (median step ms, best step ms)" and the
same for LoRA (r 8, alpha 16, on the Llama linears).
"""
import json
import math
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch_bench: PyTorch is not installed (Debian: apt-get install python3-torch); skipped")
    sys.exit(0)


def arg(name, default):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


class LoraLinear(nn.Module):
    """y = x W^T (+ b) + (alpha / r) (x A^T) B^T, W frozen when the adapter is on."""

    def __init__(self, din, dout, bias):
        super().__init__()
        self.base = nn.Linear(din, dout, bias=bias)
        self.A = None

    def add_lora(self, r, alpha):
        self.A = nn.Parameter(torch.randn(r, self.base.in_features) * 0.01)
        self.B = nn.Parameter(torch.zeros(self.base.out_features, r))
        self.scale = alpha / r

    def forward(self, x):
        y = self.base(x)
        if self.A is not None:
            y = y + (x @ self.A.t() @ self.B.t()) * self.scale
        return y


class VisionLayer(nn.Module):
    def __init__(self, d, i, h, eps):
        super().__init__()
        self.h = h
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.ln2 = nn.LayerNorm(d, eps=eps)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1 = nn.Linear(d, i)
        self.fc2 = nn.Linear(i, d)

    def forward(self, x):
        n, t, d = x.shape
        hd = d // self.h
        y = self.ln1(x)
        q, k, v = (f(y).view(n, t, self.h, hd).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(n, t, d))
        y = self.fc1(self.ln2(x))
        return x + self.fc2(y * torch.sigmoid(1.702 * y))


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class DecoderLayer(nn.Module):
    def __init__(self, d, i, h, hkv, eps):
        super().__init__()
        self.h, self.hkv = h, hkv
        hd = d // h
        self.n1 = RMSNorm(d, eps)
        self.n2 = RMSNorm(d, eps)
        self.q = LoraLinear(d, d, False)
        self.k = LoraLinear(d, hkv * hd, False)
        self.v = LoraLinear(d, hkv * hd, False)
        self.o = LoraLinear(d, d, False)
        self.gate = LoraLinear(d, i, False)
        self.up = LoraLinear(d, i, False)
        self.down = LoraLinear(i, d, False)

    def forward(self, x, cos, sin, mask):
        b, t, d = x.shape
        hd = d // self.h
        y = self.n1(x)
        q = self.q(y).view(b, t, self.h, hd).transpose(1, 2)
        k = self.k(y).view(b, t, self.hkv, hd).transpose(1, 2)
        v = self.v(y).view(b, t, self.hkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.hkv != self.h:
            k = k.repeat_interleave(self.h // self.hkv, dim=1)
            v = v.repeat_interleave(self.h // self.hkv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
        a = torch.softmax(s, dim=-1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        y = self.n2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class Llava(nn.Module):
    def __init__(self, c):
        super().__init__()
        tc, vc = c["text_config"], c["vision_config"]
        self.d, self.heads = tc["hidden_size"], tc["num_attention_heads"]
        self.theta = tc.get("rope_theta", 10000.0)
        dv, self.p = vc["hidden_size"], vc["patch_size"]
        self.np = (vc["image_size"] // self.p) ** 2
        eps_v = vc.get("layer_norm_eps", 1e-5)
        self.patch = nn.Conv2d(vc.get("num_channels", 3), dv, self.p, self.p, bias=False)
        self.cls = nn.Parameter(torch.randn(dv) * 0.02)
        self.pos = nn.Parameter(torch.randn(self.np + 1, dv) * 0.02)
        self.pre = nn.LayerNorm(dv, eps=eps_v)
        nv = vc["num_hidden_layers"]
        layer = c.get("vision_feature_layer", -2)
        self.nv_used = nv + 1 + layer if layer < 0 else layer
        self.vlayers = nn.ModuleList(VisionLayer(dv, vc["intermediate_size"], vc["num_attention_heads"], eps_v)
                                     for _ in range(self.nv_used))
        self.proj1 = nn.Linear(dv, self.d)
        self.proj2 = nn.Linear(self.d, self.d)
        self.embed = nn.Embedding(tc["vocab_size"], self.d)
        self.layers = nn.ModuleList(DecoderLayer(self.d, tc["intermediate_size"], self.heads,
                                                 tc.get("num_key_value_heads", self.heads), tc.get("rms_norm_eps", 1e-5))
                                    for _ in range(tc["num_hidden_layers"]))
        self.norm = RMSNorm(self.d, tc.get("rms_norm_eps", 1e-5))
        self.lm_head = nn.Linear(self.d, tc["vocab_size"], bias=False)

    def forward(self, pixels, ids, targets):
        n = pixels.shape[0]
        pe = self.patch(pixels).flatten(2).transpose(1, 2)                  # [n, Np, Dv]
        x = torch.cat((self.cls.expand(n, 1, -1), pe), dim=1) + self.pos
        x = self.pre(x)
        for layer in self.vlayers:
            x = layer(x)
        feat = self.proj2(F.gelu(self.proj1(x[:, 1:])))                     # CLS dropped
        e = self.embed(ids)                                                  # [B, n_text, D]
        x = torch.cat((e[:, :1], feat, e[:, 2:]), dim=1)                    # <image> -> patches
        b, t, _ = x.shape
        hd = self.d // self.heads
        inv = 1.0 / (self.theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        ang = torch.outer(torch.arange(t, dtype=torch.float32), inv)
        ang = torch.cat((ang, ang), dim=-1)
        cos, sin = ang.cos(), ang.sin()
        mask = torch.full((t, t), float("-inf")).triu(1)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1))


def time_steps(model, params, batch, secs):
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    times = []
    start = None
    while True:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(*batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        t1 = time.perf_counter()
        if start is None:          # first step: allocations
            start = t1
            continue
        times.append(t1 - t0)
        if t1 - start >= secs and len(times) >= 3:
            return times


# llava-1m (../shared/bench/llava-1m.json), pulse's config_default()
LLAVA_1M = {
    "image_token_index": 3, "vision_feature_layer": -1,
    "text_config": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "num_key_value_heads": 4, "rms_norm_eps": 1e-5, "rope_theta": 10000.0},
    "vision_config": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "image_size": 32, "patch_size": 8, "num_channels": 3, "layer_norm_eps": 1e-5},
}


def main():
    cfg = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else None
    c = json.load(open(cfg)) if cfg else LLAVA_1M
    cfg = cfg or "llava-1m (built in)"
    B, T = int(arg("--batch", 8)), int(arg("--seq", 64))
    threads = [int(s) for s in arg("--threads", "1,2").split(",")]
    secs = float(arg("--seconds", 3.0))
    torch.manual_seed(2)
    vc = c["vision_config"]
    np_ = (vc["image_size"] // vc["patch_size"]) ** 2
    n_text = T - np_ + 1
    V = c["text_config"]["vocab_size"]
    ids = torch.randint(4, V, (B, n_text))
    ids[:, 0] = 1
    ids[:, 1] = c.get("image_token_index", 3)
    targets = torch.cat((ids[:, :1], torch.full((B, np_), -100), ids[:, 2:]), dim=1)
    pixels = torch.randn(B, vc.get("num_channels", 3), vc["image_size"], vc["image_size"])
    batch = (pixels, ids, targets)
    print(f"torch {torch.__version__}: batch {B} x {T} merged positions (image + text), config {cfg}")
    for nth in threads:
        torch.set_num_threads(nth)
        torch.manual_seed(1)
        model = Llava(c)
        for mode in ("full", "lora"):
            if mode == "lora":
                for p in model.parameters():
                    p.requires_grad_(False)
                for layer in model.layers:
                    for lin in (layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down):
                        lin.add_lora(8, 16.0)
            params = [p for p in model.parameters() if p.requires_grad]
            times = sorted(time_steps(model, params, batch, secs))
            med = times[len(times) // 2]
            print(f"torch {mode}: {B * T / med:.0f} tokens/s at {nth} threads "
                  f"(median step {1e3 * med:.1f} ms, best {1e3 * times[0]:.1f} ms, {len(times)} steps)")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
