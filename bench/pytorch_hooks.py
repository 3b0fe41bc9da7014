#!/usr/bin/env python3
"""PyTorch forward-hook reference for `relu-sparsity bench` (never part of the tool's runtime or tests).

What a researcher would otherwise write: rebuild the model in PyTorch, load the checkpoint's
safetensors weights, register forward hooks on the MLP activations and count, per layer, active
units per token, per sequence and per batch, and tokens per unit. Reads the same pre-tokenized
batches the .NET contenders run on (int64: ids [n, B, T] then attention masks [n, B, T]).
Each timed repeat includes building the model and loading the weights, as the .NET contenders do.

Usage: pytorch_hooks.py --checkpoint DIR --batches FILE --count N --batch-size B --seq-len T
                        --threads K --repeats R --out result.json
"""
import argparse
import json
import math
import platform
import struct
import sys
import time

import numpy as np
import torch
from torch import nn


def load_safetensors(path):
    # The format is an 8-byte header length, a JSON header, then raw little-endian tensors.
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        tensors[name] = torch.from_numpy(np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"]).copy())
    return tensors


class Activation(nn.Module):
    """ReLU times the unit mask: the MLP hidden layer the hooks observe."""

    def __init__(self, d_ff):
        super().__init__()
        self.register_buffer("unit_mask", torch.ones(d_ff))

    def forward(self, x):
        return torch.relu(x) * self.unit_mask


class Mlp(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.act = Activation(d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


class Attention(nn.Module):
    def __init__(self, d_model, heads):
        super().__init__()
        self.c_attn = nn.Linear(d_model, 3 * d_model)
        self.c_proj = nn.Linear(d_model, d_model)
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        hs = c // self.heads
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, hs).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        future = torch.ones(t, t, dtype=torch.bool).triu(1)
        att = torch.softmax(att.masked_fill(future, float("-inf")), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, d_model, heads, d_ff):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = Mlp(d_model, d_ff)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ReluTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg["vocab_size"], cfg["d_model"])
        self.wpe = nn.Embedding(cfg["seq_len"], cfg["d_model"])
        self.h = nn.ModuleList(Block(cfg["d_model"], cfg["heads"], cfg["d_ff"]) for _ in range(cfg["layers"]))
        self.ln_f = nn.LayerNorm(cfg["d_model"])
        self.lm_head = None if cfg["tied_embeddings"] else nn.Linear(cfg["d_model"], cfg["vocab_size"], bias=False)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.wte.weight.t() if self.lm_head is None else self.lm_head(x)


class UnitUse:
    """The same counts as LayerUnitUse: histograms of units per token/sequence/batch, tokens per unit."""

    def __init__(self, d_ff):
        self.d_ff = d_ff
        self.per_token = torch.zeros(d_ff + 1, dtype=torch.int64)
        self.per_sequence = torch.zeros(d_ff + 1, dtype=torch.int64)
        self.per_batch = torch.zeros(d_ff + 1, dtype=torch.int64)
        self.tokens_per_unit = torch.zeros(d_ff, dtype=torch.int64)

    def add(self, hidden, real):
        active = (hidden > 0) & real.unsqueeze(-1)  # (B, T, d_ff)
        self.per_token += torch.bincount(active.sum(-1)[real], minlength=self.d_ff + 1)
        self.per_sequence += torch.bincount(active.any(1).sum(-1)[real.any(1)], minlength=self.d_ff + 1)
        batch_units = active.sum((0, 1))
        self.tokens_per_unit += batch_units
        self.per_batch[int((batch_units > 0).sum())] += 1

    @staticmethod
    def mean(histogram):
        n = int(histogram.sum())
        return float((histogram * torch.arange(len(histogram))).sum()) / n if n else 0.0


def build(checkpoint):
    with open(f"{checkpoint}/config.json") as f:
        cfg = json.load(f)["model"]
    if cfg.get("top_k", 0) not in (0, cfg["d_ff"]):
        raise SystemExit("Top-k checkpoints are not mirrored by this reference.")
    model = ReluTransformer(cfg)
    weights = load_safetensors(f"{checkpoint}/model.safetensors")
    state = {name: weights.get(name, tensor) for name, tensor in model.state_dict().items()}
    for layer in range(cfg["layers"]):  # TorchSharp keeps the mask as mlp.unit_mask; here it sits on the activation
        key = f"h.{layer}.mlp.unit_mask"
        if key in weights:
            state[f"h.{layer}.mlp.act.unit_mask"] = weights[key]
    missing = [n for n in model.state_dict() if n not in weights and not n.endswith("unit_mask")]
    if missing:
        raise SystemExit(f"weights missing from the checkpoint: {missing[:3]}")
    model.load_state_dict(state)
    return model.eval(), cfg


def run(args, ids, masks, hooks=True):
    model, cfg = build(args.checkpoint)
    if not hooks:  # the same forward with nothing observed: what the hooks cost
        with torch.inference_mode():
            for b in range(args.count):
                model(ids[b])
        return None
    uses = [UnitUse(cfg["d_ff"]) for _ in range(cfg["layers"])]
    current = {}
    for layer, block in enumerate(model.h):
        block.mlp.act.register_forward_hook(lambda _m, _i, out, use=uses[layer]: use.add(out, current["real"]))
    with torch.inference_mode():
        for b in range(args.count):
            current["real"] = masks[b] == 1
            model(ids[b])
    return uses


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("--checkpoint", "--batches", "--out"):
        p.add_argument(name, required=True)
    for name in ("--count", "--batch-size", "--seq-len", "--threads", "--repeats"):
        p.add_argument(name, type=int, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    shape = (args.count, args.batch_size, args.seq_len)
    raw = torch.from_numpy(np.fromfile(args.batches, dtype="<i8"))
    ids, masks = raw[: np.prod(shape)].view(shape), raw[np.prod(shape):].view(shape)

    run(args, ids, masks)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        uses = run(args, ids, masks)
        seconds.append(time.perf_counter() - start)
    bare = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run(args, ids, masks, hooks=False)
        bare.append(time.perf_counter() - start)
    result = {
        "bare_seconds": bare,
        "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "seconds": seconds, "tokens": int(uses[0].per_token.sum()),
        "layers": [{"active_pairs": int(u.tokens_per_unit.sum()), "per_token_mean": UnitUse.mean(u.per_token),
                    "per_sequence_mean": UnitUse.mean(u.per_sequence), "per_batch_mean": UnitUse.mean(u.per_batch)} for u in uses],
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
