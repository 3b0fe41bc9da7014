#!/usr/bin/env python3
"""GPU benchmark helpers for an OPT-125M-shaped ReLU model (Hugging Face OPTForCausalLM from a config, no download).

  python3 opt125m.py export DIR   # DIR/opt125m.onnx (torch.onnx TorchScript exporter) and DIR/ids.txt (generated token ids)
  python3 opt125m.py torch DIR    # PyTorch 2.x on CUDA over the same windows: bare forward and forward hooks, fp32 and bf16

The ids corpus: 100 documents of 2,560 ids (seeded), i.e. 1,000 windows of 256 = 256,000 tokens, no padding.
Speed does not depend on the weights, so the model keeps its seeded random initialisation.
"""
import json
import sys
import time

import torch
from transformers import OPTConfig, OPTForCausalLM

DOCS, DOC_LEN, SEQ = 100, 2560, 256


def model():
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                       max_position_embeddings=2048, word_embed_proj_dim=768, activation_function="relu", dropout=0.0)
    return OPTForCausalLM(config).eval()


def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(4, 50272, (DOCS, DOC_LEN), generator=g)


class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def export(out):
    m = model()
    example = torch.randint(4, 50272, (2, 16))
    axes = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(Logits(m), (example, torch.ones_like(example)), f"{out}/opt125m.onnx", dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes}, do_constant_folding=True)
    with open(f"{out}/ids.txt", "w") as f:
        for row in ids().tolist():
            f.write(" ".join(map(str, row)) + "\n")


def bench_torch(out, batch):
    windows = ids().reshape(-1, SEQ)  # the windows analyze cuts from ids.txt, in the same order
    results = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "batch": batch, "seq": SEQ, "tokens": windows.numel()}
    for dtype in [torch.float32, torch.bfloat16]:
        m = model().to("cuda", dtype)
        acts = [layer.activation_fn for layer in m.model.decoder.layers]
        for mode in ["bare", "hooks"]:
            per_unit = [torch.zeros(3072, dtype=torch.long, device="cuda") for _ in acts]
            active_pairs = [torch.zeros((), dtype=torch.long, device="cuda") for _ in acts]
            per_token_hist = [torch.zeros(3073, dtype=torch.long, device="cuda") for _ in acts]
            hooks = []
            if mode == "hooks":
                def hook(i):
                    def f(module, inputs, output):  # counts on the GPU, as analyze computes them: per unit, per token
                        a = output.reshape(-1, 3072) > 0
                        per_unit[i] += a.sum(0)
                        per_token = a.sum(1)
                        active_pairs[i] += per_token.sum()
                        per_token_hist[i] += torch.bincount(per_token, minlength=3073)
                    return f
                hooks = [a.register_forward_hook(hook(i)) for i, a in enumerate(acts)]
            with torch.no_grad():
                for w in range(3):  # warm-up
                    m(input_ids=windows[:batch].cuda(), attention_mask=torch.ones(batch, SEQ, dtype=torch.long, device="cuda"), use_cache=False)
                for t in per_unit + active_pairs + per_token_hist:
                    t.zero_()
                torch.cuda.synchronize()
                start = time.perf_counter()
                for b in range(0, windows.shape[0], batch):
                    x = windows[b:b + batch].cuda(non_blocking=True)
                    m(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            for h in hooks:
                h.remove()
            key = f"{mode}_{str(dtype).split('.')[-1]}"
            results[key] = {"seconds": seconds, "tokens_per_second": windows.numel() / seconds}
            if mode == "hooks":
                results[key]["nonzero_fraction"] = [float(p) / (windows.numel() * 3072) for p in active_pairs]
            print(key, results[key], flush=True)
        del m
        torch.cuda.empty_cache()
    with open(f"{out}/pytorch_b{batch}.json", "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "export":
        export(sys.argv[2])
    else:
        bench_torch(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 16)
