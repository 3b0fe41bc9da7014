"""Compares two stats.json files on every statistic (paths and producer aside); exits 1 naming the first difference."""
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for k in ("tokens", "sequences", "batches", "layers", "model_sha256", "tokenizer_sha256"):
    if a.get(k) != b.get(k):
        sys.exit(f"{k} differs")
if a["corpus_fingerprint"]["sha256"] != b["corpus_fingerprint"]["sha256"]:
    sys.exit("corpus differs")
print(f"identical: {a['tokens']} tokens, {len(a['layers'])} layers, nonzero {[round(l['nonzero_fraction'], 6) for l in a['layers']]}")
