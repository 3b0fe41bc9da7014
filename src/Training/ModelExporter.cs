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
/// Writes a <see cref="ReluTransformer"/> as an ONNX graph (opset 17) that computes what the
/// TorchSharp forward computes. Input <c>input_ids</c> int64 [batch, seq], both dynamic.
/// MatMul weights are stored [in, out] under their safetensors names.
/// </summary>
public static class ModelExporter
{
    /// <summary>Name of the hidden-activation output of layer <paramref name="layer"/> (dense variant).</summary>
    public static string HiddenOutput(int layer) => $"mlp_hidden.{layer}";
    /// <summary>
    /// Builds the graph for <paramref name="model"/>. <paramref name="fusedAttention"/> writes each layer's attention as
    /// one ONNX Runtime <c>com.microsoft.MultiHeadAttention</c> node (causal: <c>unidirectional</c>) instead of its
    /// MatMul, mask, Softmax and MatMul; the same logits, runnable only by ONNX Runtime.
    /// </summary>
    public static ModelProto Export(ReluTransformer model, ExportVariant variant, float threshold = 0f, bool fusedAttention = false)
    {
        var c = model.Config;
        var weights = model.named_parameters().Select(p => (p.name, (Tensor)p.parameter))
            .Concat(model.named_buffers()).ToDictionary(p => p.Item1, p => p.Item2);
        float[] W(string name) => weights[name].detach().cpu().contiguous().data<float>().ToArray();
        float[] WT(string name) => weights[name].detach().cpu().t().contiguous().data<float>().ToArray();

        var g = new GraphWriter(new GraphProto { Name = "relu_transformer" });
        g.Graph.Input.Add(OnnxGraph.Value("input_ids", DataType.Int64, "batch", "seq"));
        if (variant == ExportVariant.Stats) g.Graph.Input.Add(OnnxGraph.Value("attention_mask", DataType.Int64, "batch", "seq"));

        string wte = g.Floats("wte.weight", [c.VocabSize, c.DModel], W("wte.weight"));
        string wpe = g.Floats("wpe.weight", [c.SeqLen, c.DModel], W("wpe.weight"));
        string seqLen = g.Op("Gather", "seq_len", [g.Op("Shape", "ids_shape", ["input_ids"]), g.Longs("one", [], 1)], OnnxGraph.Int("axis", 0));
        string positions = g.Op("Range", "positions", [g.Longs("zero", [], 0), seqLen, g.Longs("step", [], 1)]);
        string x = g.Op("Add", "embed", [g.Op("Gather", "tok_emb", [wte, "input_ids"]), g.Op("Gather", "pos_emb", [wpe, positions])]);

        // Causal mask: true strictly above the diagonal (a token never attends to later ones).
        string tt = g.Op("Concat", "tt", [g.Op("Unsqueeze", "t0", [seqLen, g.Longs("axis0", [1], 0)]), g.Op("Unsqueeze", "t1", [seqLen, g.Longs("axis0b", [1], 0)])], OnnxGraph.Int("axis", 0));
        string ones = g.Op("ConstantOfShape", "ones_tt", [tt], OnnxGraph.TensorAttribute("value", OnnxGraph.FloatTensor("value", [1], [1f])));
        string future = g.Op("Cast", "future", [g.Op("Trilu", "upper", [ones, g.Longs("k1", [], 1)], OnnxGraph.Int("upper", 1))], OnnxGraph.Int("to", (long)DataType.Bool));
        string negInf = g.Scalar("neg_inf", float.NegativeInfinity);
        int hs = c.DModel / c.Heads;
        string headShape = g.Longs("head_shape", [4], 0, 0, c.Heads, hs);
        string modelShape = g.Longs("model_shape", [3], 0, 0, c.DModel);
        string split = g.Longs("qkv_split", [3], c.DModel, c.DModel, c.DModel);
        string scale = g.Scalar("attn_scale", (float)(1.0 / Math.Sqrt(hs)));

        string LayerNorm(string input, string prefix) => g.Op("LayerNormalization", prefix, [input,
            g.Floats(prefix + ".weight", [c.DModel], W(prefix + ".weight")), g.Floats(prefix + ".bias", [c.DModel], W(prefix + ".bias"))],
            OnnxGraph.Int("axis", -1), OnnxGraph.Float("epsilon", 1e-5f));
        string Linear(string input, string prefix, long fanIn, long fanOut) => g.Op("Add", prefix, [
            g.Op("MatMul", prefix + ".matmul", [input, g.Floats(prefix + ".weight", [fanIn, fanOut], WT(prefix + ".weight"))]),
            g.Floats(prefix + ".bias", [fanOut], W(prefix + ".bias"))]);

        var statsMask = variant == ExportVariant.Stats ? StatsReduction.RealTokens(g, "attention_mask") : null;
        var outputs = new List<ValueInfoProto>();
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"h.{i}";
            var qkv = g.Ops("Split", p + ".attn.qkv", [Linear(LayerNorm(x, p + ".ln_1"), p + ".attn.c_attn", c.DModel, 3 * c.DModel), split], 3, OnnxGraph.Int("axis", -1));
            if (fusedAttention)
            {
                // (B, T, D) in, (B, T, D) out: heads, scale 1/sqrt(hs) and the causal mask are the operator's.
                string fused = g.ContribOp("MultiHeadAttention", p + ".attn.mha", [qkv[0], qkv[1], qkv[2]], OnnxGraph.Int("num_heads", c.Heads), OnnxGraph.Int("unidirectional", 1));
                x = g.Op("Add", p + ".resid_attn", [x, Linear(fused, p + ".attn.c_proj", c.DModel, c.DModel)]);
            }
            else
            {
                string q = g.Op("Transpose", p + ".attn.q", [g.Op("Reshape", p + ".attn.q4", [qkv[0], headShape])], OnnxGraph.Ints("perm", 0, 2, 1, 3)); // (B, H, T, hs)
                string kT = g.Op("Transpose", p + ".attn.kT", [g.Op("Reshape", p + ".attn.k4", [qkv[1], headShape])], OnnxGraph.Ints("perm", 0, 2, 3, 1)); // (B, H, hs, T)
                string v = g.Op("Transpose", p + ".attn.v", [g.Op("Reshape", p + ".attn.v4", [qkv[2], headShape])], OnnxGraph.Ints("perm", 0, 2, 1, 3));
                string scores = g.Op("Where", p + ".attn.masked", [future, negInf, g.Op("Mul", p + ".attn.scaled", [g.Op("MatMul", p + ".attn.qk", [q, kT]), scale])]);
                string att = g.Op("Softmax", p + ".attn.softmax", [scores], OnnxGraph.Int("axis", -1)); // (B, H, T, T)
                string y = g.Op("Reshape", p + ".attn.y", [g.Op("Transpose", p + ".attn.yT", [g.Op("MatMul", p + ".attn.av", [att, v])], OnnxGraph.Ints("perm", 0, 2, 1, 3)), modelShape]);
                x = g.Op("Add", p + ".resid_attn", [x, Linear(y, p + ".attn.c_proj", c.DModel, c.DModel)]);
            }

            string h = g.Op("Relu", p + ".mlp.relu", [Linear(LayerNorm(x, p + ".ln_2"), p + ".mlp.up", c.DModel, c.DFf)]); // (B, T, d_ff)
            float[] unitMask = W(p + ".mlp.unit_mask");
            if (unitMask.Any(m => m != 1f)) h = g.Op("Mul", p + ".mlp.masked", [h, g.Floats(p + ".mlp.unit_mask", [c.DFf], unitMask)]);
            if (c.UsesTopK) h = g.TopKMask(h, c.TopK, p + ".mlp");
            h = g.Named("Identity", variant == ExportVariant.Dense ? HiddenOutput(i) : g.Fresh(p + ".mlp.hidden"), [h]);
            if (variant == ExportVariant.Dense) outputs.Add(OnnxGraph.Value(HiddenOutput(i), DataType.Float, "batch", "seq", c.DFf));
            else outputs.AddRange(StatsReduction.Add(g, h, statsMask!, null, threshold, i, c.DFf));
            x = g.Op("Add", p + ".resid_mlp", [x, Linear(h, p + ".mlp.down", c.DFf, c.DModel)]);
        }

        if (variant == ExportVariant.Dense)
        {
            string head = c.TiedEmbeddings ? wte : g.Floats("lm_head.weight", [c.VocabSize, c.DModel], W("lm_head.weight"));
            g.Named("MatMul", "logits", [LayerNorm(x, "ln_f"), g.Op("Transpose", "head_t", [head], OnnxGraph.Ints("perm", 1, 0))]);
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
