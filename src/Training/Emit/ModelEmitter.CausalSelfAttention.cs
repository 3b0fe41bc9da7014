using Sparsity.Export;
using Sparsity.Training.Model;
using static TorchSharp.torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Training;

// CausalSelfAttention (Model/CausalSelfAttention.cs) and its Rotary (Model/Rotary.cs): q, k, v from one projection,
// rotated, keys and values repeated per group of heads, scaled scores masked causally (with a cache: by the mask over
// past and new tokens), the softmax-weighted values projected back; or ONNX Runtime's fused MultiHeadAttention.
sealed partial class ModelEmitter
{
    // What every layer's attention shares: the mask of forbidden keys, its fill value, reshape targets and the scale.
    sealed record AttentionInputs(
        string Blocked,
        string NegInf,
        string HeadShape,
        string KvShape,
        string ModelShape,
        string Split,
        string Scale
    );

    string? cos,
        sin;

    AttentionInputs AttentionConstants(string seqLen)
    {
        int hs = c.HeadSize,
            heads = c.Heads,
            kv = c.KeyValueHeads;
        // Causal mask: true where a token must not look: strictly above the diagonal (T, T), or with a cache where key
        // j is after past + i or padding (B, 1, T, past + T).
        string blocked = withPast ? CacheMask(seqLen) : CausalMask(seqLen);
        // With a cache, rows may be all padding (left-padded prompts): float.MinValue keeps them finite where −∞ gives
        // NaN.
        return new AttentionInputs(
            blocked,
            g.Scalar("neg_inf", withPast ? float.MinValue : float.NegativeInfinity),
            g.Longs("head_shape", [4], 0, 0, heads, hs),
            g.Longs("kv_shape", [4], 0, 0, kv, hs),
            g.Longs("model_shape", [3], 0, 0, heads * hs),
            g.Longs("qkv_split", [3], heads * hs, kv * hs, kv * hs),
            g.Scalar("attn_scale", (float)(1.0 / Math.Sqrt(hs)))
        );
    }

    // The rows of the tables TorchSharp computes, gathered by position: (T, hs) broadcast over batch and heads, or with
    // a cache (B, 1, T, hs), each window's positions counted from its mask.
    void RotaryTables(string positions)
    {
        var (cosTable, sinTable) = Rotary.Tables(c, c.SeqLen);
        using (cosTable)
            cos = g.Op(
                "Gather",
                "rope_cos",
                [g.Floats("rope.cos", [c.SeqLen, c.HeadSize], cosTable.data<float>().ToArray()), positions]
            );
        using (sinTable)
            sin = g.Op(
                "Gather",
                "rope_sin",
                [g.Floats("rope.sin", [c.SeqLen, c.HeadSize], sinTable.data<float>().ToArray()), positions]
            );
        if (withPast)
            (cos, sin) = (
                g.Op("Unsqueeze", "rope_cos4", [cos, g.Longs("axis1", [1], 1)]),
                g.Op("Unsqueeze", "rope_sin4", [sin, g.Longs("axis1b", [1], 1)])
            );
    }

    // Layer i's attention of the normed input: its output before the residual add.
    string Attention(string normed, int i, AttentionInputs a)
    {
        string p = $"h.{i}";
        int hs = c.HeadSize,
            heads = c.Heads,
            kv = c.KeyValueHeads;
        var qkv = g.Ops(
            "Split",
            p + ".attn.qkv",
            [Linear(normed, p + ".attn.c_attn", c.DModel, (heads + 2 * kv) * hs, c.AttentionBias), a.Split],
            3,
            OnnxGraph.Int("axis", -1)
        );
        if (fusedAttention)
        {
            // (B, T, D) in, (B, T, D) out: heads, scale 1/sqrt(hs) and the causal mask are the operator's.
            string fused = g.ContribOp(
                "MultiHeadAttention",
                p + ".attn.mha",
                [qkv[0], qkv[1], qkv[2]],
                OnnxGraph.Int("num_heads", c.Heads),
                OnnxGraph.Int("unidirectional", 1)
            );
            return Linear(fused, p + ".attn.c_proj", c.DModel, c.DModel, c.AttentionBias);
        }
        string q = g.Op(
            "Transpose",
            p + ".attn.q",
            [g.Op("Reshape", p + ".attn.q4", [qkv[0], a.HeadShape])],
            OnnxGraph.Ints("perm", 0, 2, 1, 3)
        ); // (B, H, T, hs)
        string k = g.Op(
            "Transpose",
            p + ".attn.k",
            [g.Op("Reshape", p + ".attn.k4", [qkv[1], a.KvShape])],
            OnnxGraph.Ints("perm", 0, 2, 1, 3)
        ); // (B, KV, T, hs)
        string v = g.Op(
            "Transpose",
            p + ".attn.v",
            [g.Op("Reshape", p + ".attn.v4", [qkv[2], a.KvShape])],
            OnnxGraph.Ints("perm", 0, 2, 1, 3)
        );
        if (c.Rotary)
            (q, k) = (Rotate(q, p + ".attn.q"), Rotate(k, p + ".attn.k"));
        if (withPast)
        {
            (k, v) = (
                g.Named(
                    "Concat",
                    ModelExporter.PresentOutput(i, "key"),
                    [ModelExporter.PastInput(i, "key"), k],
                    OnnxGraph.Int("axis", 2)
                ),
                g.Named(
                    "Concat",
                    ModelExporter.PresentOutput(i, "value"),
                    [ModelExporter.PastInput(i, "value"), v],
                    OnnxGraph.Int("axis", 2)
                )
            );
            foreach (string part in new[] { "key", "value" })
                outputs.Add(
                    OnnxGraph.Value(ModelExporter.PresentOutput(i, part), DataType.Float, "batch", kv, "total", hs)
                );
        }
        string kT = g.Op(
            "Transpose",
            p + ".attn.kT",
            [Repeat(k, p + ".attn.k", [0, heads, -1, hs])],
            OnnxGraph.Ints("perm", 0, 1, 3, 2)
        ); // (B, H, hs, T)
        v = Repeat(v, p + ".attn.v", [0, heads, -1, hs]);
        string scores = g.Op(
            "Where",
            p + ".attn.masked",
            [a.Blocked, a.NegInf, g.Op("Mul", p + ".attn.scaled", [g.Op("MatMul", p + ".attn.qk", [q, kT]), a.Scale])]
        );
        string att = g.Op("Softmax", p + ".attn.softmax", [scores], OnnxGraph.Int("axis", -1)); // (B, H, T, T)
        string y = g.Op(
            "Reshape",
            p + ".attn.y",
            [
                g.Op(
                    "Transpose",
                    p + ".attn.yT",
                    [g.Op("MatMul", p + ".attn.av", [att, v])],
                    OnnxGraph.Ints("perm", 0, 2, 1, 3)
                ),
                a.ModelShape,
            ]
        );
        return Linear(y, p + ".attn.c_proj", heads * hs, c.DModel, c.AttentionBias);
    }

    // (B, H, T, hs) rotated: x·cos + rotate_half(x)·sin, rotate_half(x) = [−x₂, x₁].
    string Rotate(string input, string hint)
    {
        int hs = c.HeadSize;
        var halves = g.Ops(
            "Split",
            hint + ".halves",
            [input, g.Longs(hint + ".half", [2], hs / 2, hs / 2)],
            2,
            OnnxGraph.Int("axis", -1)
        );
        string rotated = g.Op(
            "Concat",
            hint + ".rot",
            [g.Op("Neg", hint + ".neg", [halves[1]]), halves[0]],
            OnnxGraph.Int("axis", -1)
        );
        return g.Op(
            "Add",
            hint + ".roped",
            [g.Op("Mul", hint + ".cos", [input, cos!]), g.Op("Mul", hint + ".sin", [rotated, sin!])]
        );
    }

    // (B, KV, ·, ·) → (B, H, ·, ·): each key/value head serves heads / kv query heads in a row, as repeat_interleave.
    string Repeat(string input, string hint, long[] shape)
    {
        if (c.KeyValueHeads == c.Heads)
            return input;
        string expanded = g.Op(
            "Expand",
            hint + ".expand",
            [
                g.Op("Unsqueeze", hint + ".unsq", [input, g.Longs(hint + ".axis", [1], 2)]),
                g.Longs(hint + ".reps", [5], 1, 1, c.Heads / c.KeyValueHeads, 1, 1),
            ]
        );
        return g.Op("Reshape", hint + ".heads", [expanded, g.Longs(hint + ".shape", [4], shape)]);
    }

    // Positions of the new tokens from a mask over past and new tokens: the count of real tokens before each, (B, T).
    string MaskPositions(string seqLen)
    {
        string counted = g.Op(
            "Sub",
            "mask_positions",
            [g.Op("CumSum", "mask_cumsum", ["attention_mask", g.Longs("mask_axis", [], 1)]), g.Longs("one_pos", [], 1)]
        );
        string newTokens = g.Op(
            "Slice",
            "new_positions",
            [
                counted,
                g.Op("Neg", "minus_seq", [g.Op("Unsqueeze", "seq_1d", [seqLen, g.Longs("axis0_pos", [1], 0)])]),
                g.Longs("slice_end", [1], long.MaxValue),
                g.Longs("slice_axis", [1], 1),
            ]
        );
        return g.Op("Max", "positions", [newTokens, g.Longs("zero_pos", [], 0)]); // padding before the first real token: position 0
    }

    // True strictly above the diagonal (T, T): a token never attends to later ones.
    string CausalMask(string seqLen)
    {
        string tt = g.Op(
            "Concat",
            "tt",
            [
                g.Op("Unsqueeze", "t0", [seqLen, g.Longs("axis0", [1], 0)]),
                g.Op("Unsqueeze", "t1", [seqLen, g.Longs("axis0b", [1], 0)]),
            ],
            OnnxGraph.Int("axis", 0)
        );
        string ones = g.Op(
            "ConstantOfShape",
            "ones_tt",
            [tt],
            OnnxGraph.TensorAttribute("value", OnnxGraph.FloatTensor("value", [1], [1f]))
        );
        return g.Op(
            "Cast",
            "future",
            [g.Op("Trilu", "upper", [ones, g.Longs("k1", [], 1)], OnnxGraph.Int("upper", 1))],
            OnnxGraph.Int("to", (long)DataType.Bool)
        );
    }

    // True where new token i must not read key j: j > past + i, or j is padding. (B, 1, T, total).
    string CacheMask(string seqLen)
    {
        string total = g.Op(
            "Gather",
            "total_len",
            [g.Op("Shape", "mask_shape", ["attention_mask"]), g.Longs("one_total", [], 1)],
            OnnxGraph.Int("axis", 0)
        );
        string past = g.Op("Sub", "past_len", [total, seqLen]);
        string queries = g.Op(
            "Unsqueeze",
            "query_pos",
            [g.Op("Range", "query_range", [past, total, g.Longs("step_q", [], 1)]), g.Longs("axis_q", [1], 1)]
        ); // (T, 1)
        string keys = g.Op(
            "Unsqueeze",
            "key_pos",
            [
                g.Op("Range", "key_range", [g.Longs("zero_k", [], 0), total, g.Longs("step_k", [], 1)]),
                g.Longs("axis_k", [1], 0),
            ]
        ); // (1, total)
        string later = g.Op("Greater", "later_keys", [keys, queries]); // (T, total)
        string padding = g.Op(
            "Unsqueeze",
            "padding_keys",
            [g.Op("Equal", "mask_zero", ["attention_mask", g.Longs("zero_m", [], 0)]), g.Longs("axes_m", [2], 1, 2)]
        ); // (B, 1, 1, total)
        return g.Op("Or", "blocked", [later, padding]);
    }
}
