#!/usr/bin/env python3
"""A Hugging Face Llama folder with the shapes of a 7B ReLU Llama (ReluLLaMA-7B / ProSparse-Llama-2-7B: hidden 4096,
32 heads, intermediate 11008, vocabulary 32000) but only LAYERS layers, bf16 in shards of at most 2 GB, to time
`relu-sparsity export` per layer on a machine without the real checkpoint. Standard library only; the weights are one
block of 2^20 small random values repeated (they only have to be finite).

    python3 synthetic_checkpoint.py OUT_DIR LAYERS
"""
import json
import os
import random
import struct
import sys

D, HEADS, FF, VOCAB, MAXPOS = 4096, 32, 11008, 32000, 4096
out, layers = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
random.seed(0)
block = b"".join(struct.pack("<f", random.gauss(0, 0.02))[2:] for _ in range(1 << 20))  # bf16 = top half of float32

tensors = [("model.embed_tokens.weight", [VOCAB, D]), ("model.norm.weight", [D]), ("lm_head.weight", [VOCAB, D])]
for i in range(layers):
    p = f"model.layers.{i}."
    tensors += [(p + "input_layernorm.weight", [D]), (p + "post_attention_layernorm.weight", [D])]
    tensors += [(p + f"self_attn.{n}_proj.weight", [D, D]) for n in "qkvo"]
    tensors += [(p + "mlp.gate_proj.weight", [FF, D]), (p + "mlp.up_proj.weight", [FF, D]), (p + "mlp.down_proj.weight", [D, FF])]

shards, current, size = [], [], 0
for name, shape in tensors:
    n = 2 * shape[0] * (shape[1] if len(shape) > 1 else 1)
    if current and size + n > 2_000_000_000:
        shards.append(current)
        current, size = [], 0
    current.append((name, shape, n))
    size += n
shards.append(current)

weight_map = {}
for s, shard in enumerate(shards):
    file = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
    header, offset = {}, 0
    for name, shape, n in shard:
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
        weight_map[name] = file
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(os.path.join(out, file), "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape, n in shard:
            for start in range(0, n, len(block)):
                f.write(block[:min(len(block), n - start)])
with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": sum(n for sh in shards for _, _, n in sh)}, "weight_map": weight_map}, f)
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": D, "intermediate_size": FF,
               "num_hidden_layers": layers, "num_attention_heads": HEADS, "num_key_value_heads": HEADS,
               "max_position_embeddings": MAXPOS, "hidden_act": "relu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
               "tie_word_embeddings": False, "vocab_size": VOCAB, "torch_dtype": "bfloat16"}, f, indent=1)
print(f"{out}: {layers} layers, {len(shards)} shard(s)")
