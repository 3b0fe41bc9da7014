using Onnx;
using Sparsity.Export;
using Sparsity.Training.Model;
using static TorchSharp.torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Training;

/// <summary>What the exported graph returns besides (or instead of) the logits.</summary>
public enum ExportVariant
{
    /// <summary>logits [batch, seq, vocab] and each layer's MLP hidden activations mlp_hidden.{i} [batch, seq, d_ff].</summary>
    Dense,
    /// <summary>
    /// Statistics reduced inside the runtime, honouring attention_mask [batch, seq] (1 = real token):
    /// active_units.{i} [batch, seq] (active units per token, 0 on padding),
    /// units_per_sequence.{i} [batch] (distinct units active in each window) and
    /// unit_tokens.{i} [d_ff] (over the batch). Only these compact tensors leave the runtime.
    /// </summary>
    Stats,
}

/// <summary>
/// Writes a <see cref="ReluTransformer"/> (any <see cref="ModelConfig"/>: GPT-2, OPT or Llama style) as an ONNX graph
/// (opset 17) that computes what the TorchSharp forward computes. Input <c>input_ids</c> int64 [batch, seq], both dynamic.
/// MatMul weights are stored [in, out] under their safetensors names.
/// </summary>
public static class ModelExporter
{
    /// <summary>Cache input of layer <paramref name="layer"/> (<paramref name="part"/> key or value), [batch, kv_heads, past, head_size].</summary>
    public static string PastInput(int layer, string part) => $"past_key_values.{layer}.{part}";
    /// <summary>Cache output of layer <paramref name="layer"/>: the past with this call's keys or values appended.</summary>
    public static string PresentOutput(int layer, string part) => $"present.{layer}.{part}";

    // Positions of the new tokens from a mask over past and new tokens: the count of real tokens before each, (B, T).
    static string MaskPositions(GraphWriter g, string seqLen)
    {
        string counted = g.Op("Sub", "mask_positions", [g.Op("CumSum", "mask_cumsum", ["attention_mask", g.Longs("mask_axis", [], 1)]), g.Longs("one_pos", [], 1)]);
        string newTokens = g.Op("Slice", "new_positions", [counted, g.Op("Neg", "minus_seq", [g.Op("Unsqueeze", "seq_1d", [seqLen, g.Longs("axis0_pos", [1], 0)])]),
            g.Longs("slice_end", [1], long.MaxValue), g.Longs("slice_axis", [1], 1)]);
        return g.Op("Max", "positions", [newTokens, g.Longs("zero_pos", [], 0)]); // padding before the first real token: position 0
    }

    // True strictly above the diagonal (T, T): a token never attends to later ones.
    static string CausalMask(GraphWriter g, string seqLen)
    {
        string tt = g.Op("Concat", "tt", [g.Op("Unsqueeze", "t0", [seqLen, g.Longs("axis0", [1], 0)]), g.Op("Unsqueeze", "t1", [seqLen, g.Longs("axis0b", [1], 0)])], OnnxGraph.Int("axis", 0));
        string ones = g.Op("ConstantOfShape", "ones_tt", [tt], OnnxGraph.TensorAttribute("value", OnnxGraph.FloatTensor("value", [1], [1f])));
        return g.Op("Cast", "future", [g.Op("Trilu", "upper", [ones, g.Longs("k1", [], 1)], OnnxGraph.Int("upper", 1))], OnnxGraph.Int("to", (long)DataType.Bool));
    }

    // True where new token i must not read key j: j > past + i, or j is padding. (B, 1, T, total).
    static string CacheMask(GraphWriter g, string seqLen)
    {
        string total = g.Op("Gather", "total_len", [g.Op("Shape", "mask_shape", ["attention_mask"]), g.Longs("one_total", [], 1)], OnnxGraph.Int("axis", 0));
        string past = g.Op("Sub", "past_len", [total, seqLen]);
        string queries = g.Op("Unsqueeze", "query_pos", [g.Op("Range", "query_range", [past, total, g.Longs("step_q", [], 1)]), g.Longs("axis_q", [1], 1)]); // (T, 1)
        string keys = g.Op("Unsqueeze", "key_pos", [g.Op("Range", "key_range", [g.Longs("zero_k", [], 0), total, g.Longs("step_k", [], 1)]), g.Longs("axis_k", [1], 0)]); // (1, total)
        string later = g.Op("Greater", "later_keys", [keys, queries]); // (T, total)
        string padding = g.Op("Unsqueeze", "padding_keys", [g.Op("Equal", "mask_zero", ["attention_mask", g.Longs("zero_m", [], 0)]), g.Longs("axes_m", [2], 1, 2)]); // (B, 1, 1, total)
        return g.Op("Or", "blocked", [later, padding]);
    }

    /// <summary>Name of the hidden-activation output of layer <paramref name="layer"/> (dense variant).</summary>
    public static string HiddenOutput(int layer) => $"mlp_hidden.{layer}";
    /// <summary>
    /// Builds the graph for <paramref name="model"/>. <paramref name="fusedAttention"/> writes each layer's attention as
    /// one ONNX Runtime <c>com.microsoft.MultiHeadAttention</c> node (causal: <c>unidirectional</c>) instead of its
    /// MatMul, mask, Softmax and MatMul; the same logits, runnable only by ONNX Runtime.
    /// </summary>
    public static ModelProto Export(ReluTransformer model, ExportVariant variant, float threshold = 0f, bool fusedAttention = false) =>
        Export(model.Config, WeightsOf(model), variant, threshold, fusedAttention);

    /// <summary>The model's parameters and buffers by state-dict name, as <see cref="Export(ModelConfig, Func{string, Tensor?}, ExportVariant, float, bool, ExternalData.SideFile?, bool)"/> reads them.</summary>
    public static Func<string, Tensor?> WeightsOf(ReluTransformer model)
    {
        var weights = model.named_parameters().Select(p => (p.name, (Tensor)p.parameter))
            .Concat(model.named_buffers()).ToDictionary(p => p.Item1, p => p.Item2);
        return name => weights.TryGetValue(name, out var t) ? t.detach() : null;
    }

    /// <summary>
    /// Builds the graph of a model with configuration <paramref name="c"/> whose tensors <paramref name="weight"/> returns
    /// by state-dict name (null when absent; an absent unit_mask keeps every unit), one at a time: each is copied into the
    /// graph, or with <paramref name="spill"/> straight into its side file, and disposed, so a checkpoint larger than
    /// memory can be exported with peak memory near its largest tensor.
    /// </summary>
    public static ModelProto Export(ModelConfig c, Func<string, Tensor?> weight, ExportVariant variant, float threshold = 0f,
        bool fusedAttention = false, ExternalData.SideFile? spill = null, bool withPast = false)
    {
        if (withPast && (variant != ExportVariant.Dense || fusedAttention))
            throw new UserInputException("--with-past writes the dense decoder (logits, mlp_hidden.{i} and the cache); it does not combine with --variant stats or --fused-attention.");
        if (fusedAttention && (c.Rotary || c.KeyValueHeads != c.Heads || c.HeadSize * c.Heads != c.DModel))
            throw new UserInputException("--fused-attention covers multi-head attention with learned positions; this model has rotary or grouped-query attention: export it without the option.");
        float[] Read(string name, bool transpose)
        {
            // Streaming: release the previous tensor's arrays before reading the next, so peak memory is set by the largest tensor.
            if (spill != null) GC.Collect();
            using var scope = NewDisposeScope();
            var t = weight(name) ?? throw new UserInputException($"The checkpoint has no tensor {name}.");
            var cpu = (transpose ? t.cpu().t() : t.cpu()).to_type(ScalarType.Float32).contiguous();
            return cpu.data<float>().ToArray();
        }
        float[] W(string name) => Read(name, false);
        float[] WT(string name) => Read(name, true);

        var g = new GraphWriter(new GraphProto { Name = "relu_transformer" }) { Spill = spill };
        g.Graph.Input.Add(OnnxGraph.Value("input_ids", DataType.Int64, "batch", "seq"));
        if (variant == ExportVariant.Stats) g.Graph.Input.Add(OnnxGraph.Value("attention_mask", DataType.Int64, "batch", "seq"));
        int hs = c.HeadSize, heads = c.Heads, kv = c.KeyValueHeads;
        if (withPast)
        {
            // Optimum / ONNX Runtime GenAI names: the mask covers past and new tokens; positions come from it.
            g.Graph.Input.Add(OnnxGraph.Value("attention_mask", DataType.Int64, "batch", "total"));
            for (int i = 0; i < c.Layers; i++)
                foreach (string part in new[] { "key", "value" }) g.Graph.Input.Add(OnnxGraph.Value(PastInput(i, part), DataType.Float, "batch", kv, "past", hs));
        }

        string wte = g.Floats("wte.weight", [c.VocabSize, c.DModel], W("wte.weight"));
        string seqLen = g.Op("Gather", "seq_len", [g.Op("Shape", "ids_shape", ["input_ids"]), g.Longs("one", [], 1)], OnnxGraph.Int("axis", 0));
        string positions = withPast ? MaskPositions(g, seqLen) : g.Op("Range", "positions", [g.Longs("zero", [], 0), seqLen, g.Longs("step", [], 1)]);
        string x = g.Op("Gather", "tok_emb", [wte, "input_ids"]);
        string? cos = null, sin = null;
        if (c.Rotary)
        {
            // The rows of the tables TorchSharp computes, gathered by position: (T, hs) broadcast over batch and heads, or
            // with a cache (B, 1, T, hs), each window's positions counted from its mask.
            var (cosTable, sinTable) = Rotary.Tables(c, c.SeqLen);
            using (cosTable) cos = g.Op("Gather", "rope_cos", [g.Floats("rope.cos", [c.SeqLen, c.HeadSize], cosTable.data<float>().ToArray()), positions]);
            using (sinTable) sin = g.Op("Gather", "rope_sin", [g.Floats("rope.sin", [c.SeqLen, c.HeadSize], sinTable.data<float>().ToArray()), positions]);
            if (withPast) (cos, sin) = (g.Op("Unsqueeze", "rope_cos4", [cos, g.Longs("axis1", [1], 1)]), g.Op("Unsqueeze", "rope_sin4", [sin, g.Longs("axis1b", [1], 1)]));
        }
        else x = g.Op("Add", "embed", [x, g.Op("Gather", "pos_emb", [g.Floats("wpe.weight", [c.SeqLen, c.DModel], W("wpe.weight")), positions])]);

        // Causal mask: true where a token must not look: strictly above the diagonal (T, T), or with a cache where key j is
        // after past + i or padding (B, 1, T, past + T).
        string blocked = withPast ? CacheMask(g, seqLen) : CausalMask(g, seqLen);
        // With a cache, rows may be all padding (left-padded prompts): float.MinValue keeps them finite where −∞ gives NaN.
        string negInf = g.Scalar("neg_inf", withPast ? float.MinValue : float.NegativeInfinity);
        string headShape = g.Longs("head_shape", [4], 0, 0, heads, hs);
        string kvShape = g.Longs("kv_shape", [4], 0, 0, kv, hs);
        string modelShape = g.Longs("model_shape", [3], 0, 0, heads * hs);
        string split = g.Longs("qkv_split", [3], heads * hs, kv * hs, kv * hs);
        string scale = g.Scalar("attn_scale", (float)(1.0 / Math.Sqrt(hs)));

        string Norm(string input, string prefix)
        {
            string w = g.Floats(prefix + ".weight", [c.DModel], W(prefix + ".weight"));
            if (!c.RmsNorm)
                return g.Op("LayerNormalization", prefix, [input, w, g.Floats(prefix + ".bias", [c.DModel], W(prefix + ".bias"))],
                    OnnxGraph.Int("axis", -1), OnnxGraph.Float("epsilon", (float)c.NormEpsilon));
            // x · 1/sqrt(mean(x²) + eps) · w, as RmsNorm computes it (opset 17 has no RMSNormalization).
            string meanSquare = g.Op("ReduceMean", prefix + ".ms", [g.Op("Mul", prefix + ".sq", [input, input])], OnnxGraph.Ints("axes", -1), OnnxGraph.Int("keepdims", 1));
            string inverse = g.Op("Reciprocal", prefix + ".inv", [g.Op("Sqrt", prefix + ".rms", [g.Op("Add", prefix + ".eps", [meanSquare, g.Scalar(prefix + ".epsilon", (float)c.NormEpsilon)])])]);
            return g.Op("Mul", prefix, [g.Op("Mul", prefix + ".normed", [input, inverse]), w]);
        }
        string Linear(string input, string prefix, long fanIn, long fanOut, bool bias)
        {
            string product = g.Op("MatMul", prefix + ".matmul", [input, g.Floats(prefix + ".weight", [fanIn, fanOut], WT(prefix + ".weight"))]);
            return bias ? g.Op("Add", prefix, [product, g.Floats(prefix + ".bias", [fanOut], W(prefix + ".bias"))]) : product;
        }
        // (B, H, T, hs) rotated: x·cos + rotate_half(x)·sin, rotate_half(x) = [−x₂, x₁].
        string Rotate(string input, string hint)
        {
            var halves = g.Ops("Split", hint + ".halves", [input, g.Longs(hint + ".half", [2], hs / 2, hs / 2)], 2, OnnxGraph.Int("axis", -1));
            string rotated = g.Op("Concat", hint + ".rot", [g.Op("Neg", hint + ".neg", [halves[1]]), halves[0]], OnnxGraph.Int("axis", -1));
            return g.Op("Add", hint + ".roped", [g.Op("Mul", hint + ".cos", [input, cos!]), g.Op("Mul", hint + ".sin", [rotated, sin!])]);
        }
        // (B, KV, ·, ·) → (B, H, ·, ·): each key/value head serves heads / kv query heads in a row, as repeat_interleave.
        string Repeat(string input, string hint, long[] shape)
        {
            if (kv == heads) return input;
            string expanded = g.Op("Expand", hint + ".expand", [g.Op("Unsqueeze", hint + ".unsq", [input, g.Longs(hint + ".axis", [1], 2)]), g.Longs(hint + ".reps", [5], 1, 1, heads / kv, 1, 1)]);
            return g.Op("Reshape", hint + ".heads", [expanded, g.Longs(hint + ".shape", [4], shape)]);
        }

        var statsMask = variant == ExportVariant.Stats ? StatsReduction.RealTokens(g, "attention_mask") : null;
        var outputs = new List<ValueInfoProto>();
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"h.{i}";
            var qkv = g.Ops("Split", p + ".attn.qkv", [Linear(Norm(x, p + ".ln_1"), p + ".attn.c_attn", c.DModel, (heads + 2 * kv) * hs, c.AttentionBias), split], 3, OnnxGraph.Int("axis", -1));
            if (fusedAttention)
            {
                // (B, T, D) in, (B, T, D) out: heads, scale 1/sqrt(hs) and the causal mask are the operator's.
                string fused = g.ContribOp("MultiHeadAttention", p + ".attn.mha", [qkv[0], qkv[1], qkv[2]], OnnxGraph.Int("num_heads", c.Heads), OnnxGraph.Int("unidirectional", 1));
                x = g.Op("Add", p + ".resid_attn", [x, Linear(fused, p + ".attn.c_proj", c.DModel, c.DModel, c.AttentionBias)]);
            }
            else
            {
                string q = g.Op("Transpose", p + ".attn.q", [g.Op("Reshape", p + ".attn.q4", [qkv[0], headShape])], OnnxGraph.Ints("perm", 0, 2, 1, 3)); // (B, H, T, hs)
                string k = g.Op("Transpose", p + ".attn.k", [g.Op("Reshape", p + ".attn.k4", [qkv[1], kvShape])], OnnxGraph.Ints("perm", 0, 2, 1, 3)); // (B, KV, T, hs)
                string v = g.Op("Transpose", p + ".attn.v", [g.Op("Reshape", p + ".attn.v4", [qkv[2], kvShape])], OnnxGraph.Ints("perm", 0, 2, 1, 3));
                if (c.Rotary) (q, k) = (Rotate(q, p + ".attn.q"), Rotate(k, p + ".attn.k"));
                if (withPast)
                {
                    (k, v) = (g.Named("Concat", PresentOutput(i, "key"), [PastInput(i, "key"), k], OnnxGraph.Int("axis", 2)),
                              g.Named("Concat", PresentOutput(i, "value"), [PastInput(i, "value"), v], OnnxGraph.Int("axis", 2)));
                    foreach (string part in new[] { "key", "value" }) outputs.Add(OnnxGraph.Value(PresentOutput(i, part), DataType.Float, "batch", kv, "total", hs));
                }
                string kT = g.Op("Transpose", p + ".attn.kT", [Repeat(k, p + ".attn.k", [0, heads, -1, hs])], OnnxGraph.Ints("perm", 0, 1, 3, 2)); // (B, H, hs, T)
                v = Repeat(v, p + ".attn.v", [0, heads, -1, hs]);
                string scores = g.Op("Where", p + ".attn.masked", [blocked, negInf, g.Op("Mul", p + ".attn.scaled", [g.Op("MatMul", p + ".attn.qk", [q, kT]), scale])]);
                string att = g.Op("Softmax", p + ".attn.softmax", [scores], OnnxGraph.Int("axis", -1)); // (B, H, T, T)
                string y = g.Op("Reshape", p + ".attn.y", [g.Op("Transpose", p + ".attn.yT", [g.Op("MatMul", p + ".attn.av", [att, v])], OnnxGraph.Ints("perm", 0, 2, 1, 3)), modelShape]);
                x = g.Op("Add", p + ".resid_attn", [x, Linear(y, p + ".attn.c_proj", heads * hs, c.DModel, c.AttentionBias)]);
            }

            string normed = Norm(x, p + ".ln_2");
            string h = g.Op("Relu", p + ".mlp.relu", [Linear(normed, p + (c.GatedMlp ? ".mlp.gate" : ".mlp.up"), c.DModel, c.DFf, c.MlpBias)]); // (B, T, d_ff)
            using (var scope = NewDisposeScope())
            {
                float[]? unitMask = weight(p + ".mlp.unit_mask")?.cpu().data<float>().ToArray();
                if (unitMask != null && unitMask.Any(m => m != 1f)) h = g.Op("Mul", p + ".mlp.masked", [h, g.Floats(p + ".mlp.unit_mask", [c.DFf], unitMask)]);
            }
            if (c.UsesTopK) h = g.TopKMask(h, c.TopK, p + ".mlp");
            h = g.Named("Identity", variant == ExportVariant.Dense ? HiddenOutput(i) : g.Fresh(p + ".mlp.hidden"), [h]);
            if (variant == ExportVariant.Dense) outputs.Add(OnnxGraph.Value(HiddenOutput(i), DataType.Float, "batch", "seq", c.DFf));
            else outputs.AddRange(StatsReduction.Add(g, h, statsMask!, null, threshold, i, c.DFf));
            string units = c.GatedMlp ? g.Op("Mul", p + ".mlp.gated", [h, Linear(normed, p + ".mlp.up", c.DModel, c.DFf, c.MlpBias)]) : h;
            x = g.Op("Add", p + ".resid_mlp", [x, Linear(units, p + ".mlp.down", c.DFf, c.DModel, c.MlpBias)]);
        }

        if (variant == ExportVariant.Dense)
        {
            string head = c.TiedEmbeddings ? wte : g.Floats("lm_head.weight", [c.VocabSize, c.DModel], W("lm_head.weight"));
            g.Named("MatMul", "logits", [Norm(x, "ln_f"), g.Op("Transpose", "head_t", [head], OnnxGraph.Ints("perm", 1, 0))]);
            g.Graph.Output.Add(OnnxGraph.Value("logits", DataType.Float, "batch", "seq", c.VocabSize));
        }
        g.Graph.Output.AddRange(outputs);
        var proto = OnnxGraph.Model(g.Graph, Tool.Producer,
            docString: $"ReLU transformer {c.Layers}x{c.DFf} exported by relu-sparsity ({variant.ToString().ToLowerInvariant()} variant, threshold {threshold}).");
        if (fusedAttention)
        {
            proto.OpsetImport.Add(new OperatorSetIdProto { Domain = GraphWriter.ContribDomain, Version = 1 });
            OnnxGraph.RemoveDeadNodes(proto.Graph); // the causal mask the fused operator does not need
        }
        StatsReduction.SetThreshold(proto, threshold);
        return proto;
    }
}
