#!/usr/bin/env python3
"""The GPU decoding benchmark's models (issue 38), built on the GPU host: no weights are available offline, so they are
trained here, briefly, from scratch on the Brown corpus, then exported with a key/value cache by torch.onnx (dynamo) in
fp16, and timed in PyTorch for the baseline.

  python3 decode1b.py tokenize DIR           # DIR/brown/{train,heldout}.txt -> DIR/{train,heldout}_ids.txt (DIR/tok: the
                                             # byte-level BPE of 32,000 ids this project learned on Brown)
  python3 decode1b.py selftest DIR           # a tiny Llama: train, export with the cache, ONNX Runtime (CPU) = PyTorch
  python3 decode1b.py train FAMILY DIR       # resumable (DIR/FAMILY/ckpt.pt); ends with DIR/FAMILY/hf (fp16 safetensors)
  python3 decode1b.py export FAMILY DIR      # DIR/FAMILY.onnx (+ .onnx.data), fp16, inputs input_ids, attention_mask,
                                             # position_ids, past_key_values.{i}.key/value; outputs logits, present.*
  python3 decode1b.py generate FAMILY DIR    # PyTorch model.generate baselines -> DIR/FAMILY-pytorch.json
  python3 decode1b.py all DIR                # all of the above for llama1b then opt125m

FAMILY: llama1b = the gated-ReLU Llama of 24 x 2,048, d_ff 5,504, 16 heads, vocabulary 32,000 (1.35B parameters),
trained with an L1 penalty on its gate activations (ProSparse's recipe) whose weight adapts until at most ~10 % of units
fire per token; opt125m = OPT-125M's shape (12 x 768, d_ff 3,072, plain ReLU, vocabulary 50,272), trained without a
penalty. Text quality does not matter here; activity and size do.
"""
import json
import math
import os
import sys
import time

import torch

SEED = 0
SEQ, BATCH = 512, 16
PROMPT, NEW = 64, 128

FAMILIES = {
    "llama1b": dict(kind="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5504, num_hidden_layers=24,
                    num_attention_heads=16, num_key_value_heads=16),
    "opt125m": dict(kind="opt", vocab_size=50272, hidden_size=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12),
    "tiny": dict(kind="llama", vocab_size=32000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4),
}
# Training: L1 only for the gated Llamas; the weight grows 1.3x every 10 steps while activity is above TARGET.
TRAIN = {
    "llama1b": dict(l1=True, min_steps=200, max_steps=900, minutes=5.0, lr=3e-4),
    "opt125m": dict(l1=False, min_steps=300, max_steps=300, minutes=2.0, lr=6e-4),
    "tiny": dict(l1=True, min_steps=3, max_steps=3, minutes=1.0, lr=1e-3),
}
TARGET = 0.10


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def build(family):
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM
    torch.manual_seed(SEED)
    s = dict(FAMILIES[family])
    kind = s.pop("kind")
    if kind == "llama":
        m = LlamaForCausalLM(LlamaConfig(**s, hidden_act="relu", max_position_embeddings=2048, tie_word_embeddings=False,
                                         pad_token_id=0, bos_token_id=1, eos_token_id=2))
        acts = [l.mlp.act_fn for l in m.model.layers]
    else:
        m = OPTForCausalLM(OPTConfig(**s, max_position_embeddings=2048, word_embed_proj_dim=s["hidden_size"],
                                     activation_function="relu", dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2))
        acts = [l.activation_fn for l in m.model.decoder.layers]
    return m, acts


def read_ids(path):
    with open(path) as f:
        return [[int(t) for t in line.split()] for line in f if line.strip()]


def tokenize(d):
    from tokenizers import ByteLevelBPETokenizer
    tok = ByteLevelBPETokenizer(f"{d}/tok/vocab.json", f"{d}/tok/merges.txt")
    for part in ["train", "heldout"]:
        with open(f"{d}/brown/{part}.txt") as f:
            docs = [l.rstrip("\n") for l in f if l.strip()]
        enc = tok.encode_batch(docs)
        with open(f"{d}/{part}_ids.txt", "w") as f:
            for e in enc:
                f.write(" ".join(map(str, e.ids)) + "\n")
        n = sum(len(e.ids) for e in enc)
        log(f"{part}: {len(docs)} documents, {n} tokens, largest id {max(max(e.ids) for e in enc if e.ids)}")


def batches(d, device):
    eos = json.load(open(f"{d}/tok/vocab.json")).get("<|endoftext|>", 2)  # between documents
    flat = []
    for doc in read_ids(f"{d}/train_ids.txt"):
        flat += doc + [eos]
    data = torch.tensor(flat, dtype=torch.long)
    g = torch.Generator().manual_seed(SEED)
    while True:
        starts = torch.randint(0, len(data) - SEQ - 1, (BATCH,), generator=g)
        yield torch.stack([data[s:s + SEQ] for s in starts]).to(device, non_blocking=True)


def train(family, d):
    out = f"{d}/{family}"
    os.makedirs(out, exist_ok=True)
    cfg = TRAIN[family]
    if os.path.exists(f"{out}/hf/config.json"):
        log(f"{family}: already trained")
        return
    m, acts = build(family)
    m = m.cuda().train()
    opt = torch.optim.AdamW(m.parameters(), lr=cfg["lr"], betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    step, lam = 0, 5e-2
    if os.path.exists(f"{out}/ckpt.pt"):
        ck = torch.load(f"{out}/ckpt.pt", map_location="cuda")
        m.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, lam = ck["step"], ck["lam"]
        log(f"{family}: resumed at step {step}")
    captured = []
    hooks = [a.register_forward_hook(lambda mod, i, o: captured.append(o)) for a in acts]
    data = batches(d, "cuda")
    for _ in range(step):
        next(data)  # same windows as an uninterrupted run
    started, recent = time.time(), []
    logf = open(f"{out}/train.jsonl", "a")
    while True:
        ids = next(data)
        for g in opt.param_groups:
            g["lr"] = cfg["lr"] * min(1.0, (step + 1) / 20)
        captured.clear()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            ce = m(input_ids=ids, labels=ids).loss
            l1 = sum(a.float().mean() for a in captured)
            active = torch.stack([(a > 0).float().mean() for a in captured])
        loss = ce + (lam * l1 if cfg["l1"] else 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        step += 1
        recent.append(active.mean().item())
        recent = recent[-20:]
        if cfg["l1"] and step % 10 == 0:
            a = sum(recent[-10:]) / len(recent[-10:])
            lam = lam * 1.3 if a > TARGET else lam / 1.3 if a < 0.8 * TARGET else lam
        if step % 10 == 0 or step == 1:
            rec = dict(step=step, ce=round(ce.item(), 4), l1=round(l1.item(), 4), lam=lam,
                       active=round(recent[-1], 4), active_max_layer=round(active.max().item(), 4),
                       seconds=round(time.time() - started, 1))
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            log(family, rec)
        minutes = (time.time() - started) / 60
        done = step >= cfg["max_steps"] or minutes > cfg["minutes"] or (
            step >= cfg["min_steps"] and (not cfg["l1"] or sum(recent) / len(recent) <= TARGET * 1.2))
        if done or step % 100 == 0:
            torch.save(dict(model=m.state_dict(), opt=opt.state_dict(), step=step, lam=lam), f"{out}/ckpt.pt")
        if done:
            break
    for h in hooks:
        h.remove()
    m.half().save_pretrained(f"{out}/hf")
    log(f"{family}: trained {step} steps, last active fraction {recent[-1]:.4f}, saved {out}/hf")


def load_hf(family, d, dtype=torch.float16):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(f"{d}/{family}/hf", dtype=dtype).eval()


def kv(cache, i):
    if hasattr(cache, "layers"):
        return cache.layers[i].keys, cache.layers[i].values
    return cache.key_cache[i], cache.value_cache[i]


class WithPast(torch.nn.Module):
    """HF-style cache inputs and outputs as plain tensors, as Optimum's and this project's exports name them."""

    def __init__(self, m):
        super().__init__()
        self.m = m
        self.n = m.config.num_hidden_layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache
        cache = DynamicCache()
        for i in range(self.n):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     past_key_values=cache, use_cache=True)
        present = []
        for i in range(self.n):
            present += list(kv(out.past_key_values, i))
        return (out.logits, *present)


def export(family, d, m=None, path=None):
    m = m if m is not None else load_hf(family, d)
    path = path or f"{d}/{family}.onnx"
    c = m.config
    heads = getattr(c, "num_key_value_heads", c.num_attention_heads)
    hs = c.hidden_size // c.num_attention_heads
    dtype = next(m.parameters()).dtype
    ids = torch.randint(3, 1000, (2, 16))
    past = [torch.randn(2, heads, 3, hs, dtype=dtype) for _ in range(2 * c.num_hidden_layers)]
    pos = (torch.arange(16) + 3)[None].expand(2, 16).contiguous()
    args = (ids, torch.ones(2, 19, dtype=torch.long), pos, *past)
    names = ["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{i}.{k}" for i in range(c.num_hidden_layers) for k in ("key", "value")]
    outs = ["logits"] + [f"present.{i}.{k}" for i in range(c.num_hidden_layers) for k in ("key", "value")]
    DYN = torch.export.Dim.DYNAMIC
    # forward(input_ids, attention_mask, position_ids, *past): the cache's shapes are one nested tuple
    shapes = ({0: DYN, 1: DYN}, {0: DYN, 1: DYN}, {0: DYN, 1: DYN}, tuple({0: DYN, 2: DYN} for _ in past))
    # torch.onnx's dynamo exporter as users run it; if it fails on this transformers release, its eager attention, then
    # the TorchScript exporter, each failure logged (the benchmark needs a graph; the log says which one it got).
    attempts = [("dynamo", None), ("dynamo, eager attention", "eager"), ("torchscript", None)]
    for how, attention in attempts:
        started = time.time()
        try:
            if attention:
                m.set_attn_implementation(attention)
            with torch.no_grad():
                if how.startswith("dynamo"):
                    torch.onnx.export(WithPast(m), args, path, dynamo=True, input_names=names, output_names=outs,
                                      dynamic_shapes=shapes, external_data=True)
                else:
                    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
                           "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
                    dyn.update({n: {0: "batch", 2: "past"} for n in names[3:]})
                    dyn.update({n: {0: "batch", 2: "total"} for n in outs[1:]})
                    torch.onnx.export(WithPast(m), args, path, dynamo=False, input_names=names, output_names=outs,
                                      dynamic_axes=dyn, opset_version=17, do_constant_folding=True)
            log(f"{family}: exported {path} ({how}) in {time.time() - started:.0f} s")
            with open(path + ".exporter", "w") as f:
                f.write(how + "\n")
            break
        except Exception as e:
            log(f"{family}: export ({how}) failed after {time.time() - started:.0f} s: {type(e).__name__}: {str(e).splitlines()[0][:400]}")
    else:
        raise RuntimeError(f"{family}: no exporter produced a graph")
    return path


def prompt_ids(d):
    first = read_ids(f"{d}/heldout_ids.txt")[0]
    assert len(first) >= PROMPT, "the first held-out document is shorter than the prompt"
    return first[:PROMPT]


def generate(family, d, runs=3):
    m = load_hf(family, d).cuda()
    m.generation_config.eos_token_id = None  # 128 new tokens always, as decode-bench
    m.generation_config.pad_token_id = 0
    ids = torch.tensor([prompt_ids(d)], device="cuda")
    result = dict(family=family, gpu=torch.cuda.get_device_name(), torch=torch.__version__, prompt_tokens=PROMPT,
                  new_tokens=NEW, dtype="float16", parameters=sum(p.numel() for p in m.parameters()),
                  weight_bytes=sum(p.numel() * p.element_size() for p in m.parameters()), runs={})
    import transformers
    result["transformers"] = transformers.__version__

    def timed(n, **kw):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = m.generate(ids, max_new_tokens=n, do_sample=False, **kw)
        torch.cuda.synchronize()
        return time.perf_counter() - t, out[0, PROMPT:].tolist()

    for name, kw, n in [("dynamic cache", {}, runs), ("static cache", dict(cache_implementation="static"), 2)]:
        try:
            timed(NEW, **kw)  # warm-up
            firsts, fulls, tokens = [], [], None
            for _ in range(n):
                firsts.append(timed(1, **kw)[0])
                s, tokens = timed(NEW, **kw)
                fulls.append(s)
            decode_ms = sorted(1000 * (f - p) / (NEW - 1) for f, p in zip(fulls, firsts))
            result["runs"][name] = dict(prefill_seconds=sorted(firsts), decode_ms_per_token=decode_ms,
                                        tokens_per_second=1000 / decode_ms[len(decode_ms) // 2], tokens=tokens)
            log(f"{family} PyTorch generate, {name}: {decode_ms[len(decode_ms) // 2]:.2f} ms/token")
        except Exception as e:  # recorded, not fatal: the other baseline still stands
            result["runs"][name] = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
            log(f"{family} PyTorch generate, {name} failed: {result['runs'][name]['error']}")
    # Why eager decoding is slow: CUDA kernels per new token and their summed time, from PyTorch's profiler over a
    # generation of 1 and of 9 new tokens (the difference is 8 decode steps).
    try:
        from torch.profiler import ProfilerActivity, profile
        counts = {}
        for n in (1, 9):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                timed(n)
            ev = [e for e in prof.events() if e.device_type.name == "CUDA"]
            counts[n] = (len(ev), sum(e.device_time for e in ev) / 1000)
        result["profile_per_token"] = dict(kernels=(counts[9][0] - counts[1][0]) / 8,
                                           kernel_ms=(counts[9][1] - counts[1][1]) / 8)
        log(f"{family} PyTorch profile per decode token: {result['profile_per_token']}")
    except Exception as e:
        result["profile_per_token"] = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    with open(f"{d}/{family}-pytorch.json", "w") as f:
        json.dump(result, f, indent=1)


def selftest(d):
    import numpy as np
    import onnxruntime as ort
    os.makedirs(f"{d}/tiny", exist_ok=True)
    m, _ = build("tiny")
    m = m.half().float().eval()  # weights exactly representable in fp16
    path = export("tiny", d, m.half(), f"{d}/tiny/tiny.onnx")
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    c = m.config
    heads, hs = c.num_key_value_heads, c.hidden_size // c.num_attention_heads
    ids = torch.randint(3, 1000, (1, 12))
    ref = m.float()(input_ids=ids).logits[0].detach().numpy()
    feed = {"input_ids": ids[:, :8].numpy(), "attention_mask": np.ones((1, 8), np.int64),
            "position_ids": np.arange(8)[None].astype(np.int64)}
    for i in range(c.num_hidden_layers):
        for k in ("key", "value"):
            feed[f"past_key_values.{i}.{k}"] = np.zeros((1, heads, 0, hs), np.float16)
    outs = s.run(None, feed)
    got = [outs[0][0]]
    for t in range(8, 12):  # one token at a time through the cache
        feed = {"input_ids": ids[:, t:t + 1].numpy(), "attention_mask": np.ones((1, t + 1), np.int64),
                "position_ids": np.array([[t]], np.int64)}
        for i in range(c.num_hidden_layers):
            feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = outs[1 + 2 * i], outs[2 + 2 * i]
        outs = s.run(None, feed)
        got.append(outs[0][0])
    got = np.concatenate(got).astype(np.float32)
    err = float(np.abs(got - ref).max() / max(1.0, np.abs(ref).max()))
    log(f"selftest: ONNX Runtime with the cache vs PyTorch fp32, max relative difference {err:.2e}; inputs "
        f"{[i.name for i in s.get_inputs()][:4]}, {len(s.get_outputs())} outputs")
    assert err < 2e-2, "the exported cache graph does not match PyTorch"


def main():
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "tokenize":
        tokenize(rest[0])
    elif cmd == "selftest":
        selftest(rest[0])
    elif cmd == "train":
        train(rest[0], rest[1])
    elif cmd == "export":
        export(rest[0], rest[1])
    elif cmd == "generate":
        generate(rest[0], rest[1])
    elif cmd == "all":
        d = rest[0]
        if not os.path.exists(f"{d}/train_ids.txt"):
            tokenize(d)
        for family in ["llama1b", "opt125m"]:
            train(family, d)
            if not os.path.exists(f"{d}/{family}.onnx"):
                export(family, d)
        log("exports done")
        for family in ["llama1b", "opt125m"]:
            generate(family, d)
        log("all done")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
