using Onnx;
using Sparsity.Export;
using Sparsity.Training.Model;
using static TorchSharp.torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Training;

/// <summary>
/// Writes one <see cref="ModelConfig"/>'s graph for <see cref="ModelExporter"/>, module by module as src/Training/Model
/// computes it: this file the <see cref="ReluTransformer"/> (embeddings, layers, head), and one file each for
/// <see cref="Block"/>, <see cref="CausalSelfAttention"/> (with <see cref="Rotary"/>), <see cref="Mlp"/> and
/// <see cref="RmsNorm"/> (or LayerNorm). Weights are read one at a time by state-dict name.
/// </summary>
sealed partial class ModelEmitter
{
    readonly ModelConfig c;
    readonly Func<string, Tensor?> weight;
    readonly ExportVariant variant;
    readonly float threshold;
    readonly bool fusedAttention,
        withPast;
    readonly ExternalData.SideFile? spill;
    readonly GraphWriter g;
    readonly List<ValueInfoProto> outputs = [];

    internal ModelEmitter(
        ModelConfig c,
        Func<string, Tensor?> weight,
        ExportVariant variant,
        float threshold,
        bool fusedAttention,
        ExternalData.SideFile? spill,
        bool withPast
    )
    {
        (this.c, this.weight, this.variant, this.threshold, this.fusedAttention, this.spill, this.withPast) = (
            c,
            weight,
            variant,
            threshold,
            fusedAttention,
            spill,
            withPast
        );
        g = new GraphWriter(new GraphProto { Name = "relu_transformer" }) { Spill = spill };
    }

    float[] Read(string name, bool transpose)
    {
        // Streaming: release the previous tensor's arrays before reading the next, so peak memory is set by the largest
        // tensor.
        if (spill != null)
            GC.Collect();
        using var scope = NewDisposeScope();
        var t = weight(name) ?? throw new UserInputException($"The checkpoint has no tensor {name}.");
        var cpu = (transpose ? t.cpu().t() : t.cpu()).to_type(ScalarType.Float32).contiguous();
        return cpu.data<float>().ToArray();
    }

    float[] W(string name) => Read(name, false);

    float[] WT(string name) => Read(name, true);

    // A linear layer: MatMul by the weight stored [in, out], then its bias.
    string Linear(string input, string prefix, long fanIn, long fanOut, bool bias)
    {
        string product = g.Op(
            "MatMul",
            prefix + ".matmul",
            [input, g.Floats(prefix + ".weight", [fanIn, fanOut], WT(prefix + ".weight"))]
        );
        return bias
            ? g.Op("Add", prefix, [product, g.Floats(prefix + ".bias", [fanOut], W(prefix + ".bias"))])
            : product;
    }

    /// <summary>The whole graph: token (and position) embeddings, the blocks, the final norm and the vocabulary
    /// projection.</summary>
    internal ModelProto Emit()
    {
        g.Graph.Input.Add(OnnxGraph.Value("input_ids", DataType.Int64, "batch", "seq"));
        if (variant == ExportVariant.Stats)
            g.Graph.Input.Add(OnnxGraph.Value("attention_mask", DataType.Int64, "batch", "seq"));
        if (withPast)
        {
            // Optimum / ONNX Runtime GenAI names: the mask covers past and new tokens; positions come from it.
            g.Graph.Input.Add(OnnxGraph.Value("attention_mask", DataType.Int64, "batch", "total"));
            for (int i = 0; i < c.Layers; i++)
                foreach (string part in new[] { "key", "value" })
                    g.Graph.Input.Add(
                        OnnxGraph.Value(
                            ModelExporter.PastInput(i, part),
                            DataType.Float,
                            "batch",
                            c.KeyValueHeads,
                            "past",
                            c.HeadSize
                        )
                    );
        }

        string wte = g.Floats("wte.weight", [c.VocabSize, c.DModel], W("wte.weight"));
        string seqLen = g.Op(
            "Gather",
            "seq_len",
            [g.Op("Shape", "ids_shape", ["input_ids"]), g.Longs("one", [], 1)],
            OnnxGraph.Int("axis", 0)
        );
        string positions = withPast
            ? MaskPositions(seqLen)
            : g.Op("Range", "positions", [g.Longs("zero", [], 0), seqLen, g.Longs("step", [], 1)]);
        string x = g.Op("Gather", "tok_emb", [wte, "input_ids"]);
        if (c.Rotary)
            RotaryTables(positions);
        else
            x = g.Op(
                "Add",
                "embed",
                [
                    x,
                    g.Op(
                        "Gather",
                        "pos_emb",
                        [g.Floats("wpe.weight", [c.SeqLen, c.DModel], W("wpe.weight")), positions]
                    ),
                ]
            );
        var attention = AttentionConstants(seqLen);

        var statsMask = variant == ExportVariant.Stats ? StatsReduction.RealTokens(g, "attention_mask") : null;
        for (int i = 0; i < c.Layers; i++)
            x = Block(x, i, attention, statsMask);

        if (variant == ExportVariant.Dense)
        {
            string head = c.TiedEmbeddings
                ? wte
                : g.Floats("lm_head.weight", [c.VocabSize, c.DModel], W("lm_head.weight"));
            g.Named(
                "MatMul",
                "logits",
                [Norm(x, "ln_f"), g.Op("Transpose", "head_t", [head], OnnxGraph.Ints("perm", 1, 0))]
            );
            g.Graph.Output.Add(OnnxGraph.Value("logits", DataType.Float, "batch", "seq", c.VocabSize));
        }
        g.Graph.Output.AddRange(outputs);
        var proto = OnnxGraph.Model(
            g.Graph,
            Tool.Producer,
            docString: $"ReLU transformer {c.Layers}x{c.DFf} exported by relu-sparsity ({variant.ToString().ToLowerInvariant()} variant, threshold {threshold})."
        );
        if (fusedAttention)
        {
            proto.OpsetImport.Add(new OperatorSetIdProto { Domain = GraphWriter.ContribDomain, Version = 1 });
            OnnxGraph.RemoveDeadNodes(proto.Graph); // the causal mask the fused operator does not need
        }
        return proto;
    }
}
