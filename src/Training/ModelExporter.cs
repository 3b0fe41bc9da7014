using Onnx;
using Sparsity.Export;
using Sparsity.Training.Model;
using static TorchSharp.torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Training;

/// <summary>What the exported graph returns besides (or instead of) the logits.</summary>
public enum ExportVariant
{
    /// <summary>logits [batch, seq, vocab] and each layer's MLP hidden activations mlp_hidden.{i} [batch, seq,
    /// d_ff].</summary>
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
/// (opset 17) that computes what the TorchSharp forward computes. Input <c>input_ids</c> int64 [batch, seq], both
/// dynamic. MatMul weights are stored [in, out] under their safetensors names. The graph is written module by module by
/// <see cref="ModelEmitter"/> (src/Training/Emit, one file per file of src/Training/Model).
/// </summary>
public static class ModelExporter
{
    /// <summary>Cache input of layer <paramref name="layer"/> (<paramref name="part"/> key or value), [batch, kv_heads,
    /// past, head_size].</summary>
    public static string PastInput(int layer, string part) => $"past_key_values.{layer}.{part}";

    /// <summary>Cache output of layer <paramref name="layer"/>: the past with this call's keys or values
    /// appended.</summary>
    public static string PresentOutput(int layer, string part) => $"present.{layer}.{part}";

    /// <summary>Name of the hidden-activation output of layer <paramref name="layer"/> (dense variant).</summary>
    public static string HiddenOutput(int layer) => $"mlp_hidden.{layer}";

    /// <summary>
    /// Builds the graph for <paramref name="model"/>. <paramref name="fusedAttention"/> writes each layer's attention
    /// as one ONNX Runtime <c>com.microsoft.MultiHeadAttention</c> node (causal: <c>unidirectional</c>) instead of its
    /// MatMul, mask, Softmax and MatMul; the same logits, runnable only by ONNX Runtime.
    /// </summary>
    public static ModelProto Export(
        ReluTransformer model,
        ExportVariant variant,
        float threshold = 0f,
        bool fusedAttention = false
    ) => Export(model.Config, WeightsOf(model), variant, threshold, fusedAttention);

    /// <summary>The model's parameters and buffers by state-dict name, as
    /// <see cref="Export(ModelConfig, Func{string, Tensor?}, ExportVariant, float, bool, ExternalData.SideFile?, bool)"/> reads them.</summary>
    public static Func<string, Tensor?> WeightsOf(ReluTransformer model)
    {
        var weights = model
            .named_parameters()
            .Select(p => (p.name, (Tensor)p.parameter))
            .Concat(model.named_buffers())
            .ToDictionary(p => p.Item1, p => p.Item2);
        return name => weights.TryGetValue(name, out var t) ? t.detach() : null;
    }

    /// <summary>
    /// Builds the graph of a model with configuration <paramref name="c"/> whose tensors <paramref name="weight"/>
    /// returns by state-dict name (null when absent; an absent unit_mask keeps every unit), one at a time: each is
    /// copied into the graph, or with <paramref name="spill"/> straight into its side file, and disposed, so a
    /// checkpoint larger than memory can be exported with peak memory near its largest tensor.
    /// </summary>
    public static ModelProto Export(
        ModelConfig c,
        Func<string, Tensor?> weight,
        ExportVariant variant,
        float threshold = 0f,
        bool fusedAttention = false,
        ExternalData.SideFile? spill = null,
        bool withPast = false
    )
    {
        if (withPast && (variant != ExportVariant.Dense || fusedAttention))
            throw new UserInputException(
                "--with-past writes the dense decoder (logits, mlp_hidden.{i} and the cache); it does not combine with --variant stats or --fused-attention."
            );
        if (fusedAttention && (c.Rotary || c.KeyValueHeads != c.Heads || c.HeadSize * c.Heads != c.DModel))
            throw new UserInputException(
                "--fused-attention covers multi-head attention with learned positions; this model has rotary or grouped-query attention: export it without the option."
            );
        var proto = new ModelEmitter(c, weight, variant, threshold, fusedAttention, spill, withPast).Emit();
        StatsReduction.SetThreshold(proto, threshold);
        return proto;
    }
}
