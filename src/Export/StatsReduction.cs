using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Export;

/// <summary>
/// Unit-use counts computed inside the graph, so only compact tensors leave the runtime: per layer
/// active_units.{i} [batch, seq] (active units per token, 0 on padding), units_per_sequence.{i} [batch] (distinct
/// units active in each window) and unit_tokens.{i} [d_ff] (tokens each unit was active on). Used by this project's
/// stats export and by <c>analyze</c> on any graph.
/// </summary>
public static class StatsReduction
{
    /// <summary>Active units per token of layer <paramref name="layer"/>.</summary>
    public static string ActiveUnitsOutput(int layer) => $"active_units.{layer}";
    /// <summary>Distinct units active in each window.</summary>
    public static string UnitsPerSequenceOutput(int layer) => $"units_per_sequence.{layer}";
    /// <summary>Per-unit active-token counts over the batch.</summary>
    public static string UnitTokensOutput(int layer) => $"unit_tokens.{layer}";
    /// <summary>Metadata key holding the activity threshold the counts were built with.</summary>
    public const string ThresholdMetadata = "relu_sparsity.threshold";

    /// <summary>Records in <paramref name="model"/>'s metadata the threshold its counts use (replacing any earlier one).</summary>
    public static void SetThreshold(ModelProto model, float threshold)
    {
        foreach (var old in model.MetadataProps.Where(p => p.Key == ThresholdMetadata).ToList()) model.MetadataProps.Remove(old);
        model.MetadataProps.Add(new StringStringEntryProto { Key = ThresholdMetadata, Value = threshold.ToString("R", System.Globalization.CultureInfo.InvariantCulture) });
    }

    /// <summary>
    /// [batch, seq, 1] float mask of real tokens from the int64 attention_mask input; the counts of every layer read it.
    /// </summary>
    public static string RealTokens(GraphWriter g, string attentionMask) =>
        g.Op("Unsqueeze", "real_token", [g.Op("Cast", "mask_f", [attentionMask], OnnxGraph.Int("to", (long)DataType.Float)), g.Longs("last_axis", [1], -1)]);

    /// <summary>
    /// Adds the three counts of <paramref name="hidden"/> (units on the last axis; [batch, seq, d_ff], or batch-major
    /// [batch·seq, d_ff] when <paramref name="batchSeqShape"/> gives [batch, seq] to view it as such).
    /// <paramref name="isFloat32"/> false casts fp16/bf16 activations first (the threshold is float32).
    /// </summary>
    public static IEnumerable<ValueInfoProto> Add(GraphWriter g, string hidden, string realTokens, string? batchSeqShape, float threshold, int layer, int dFf, bool isFloat32 = true)
    {
        string p = $"h.{layer}.stats";
        if (batchSeqShape != null)
            hidden = g.Op("Reshape", p + ".bt", [hidden, g.Op("Concat", p + ".shape", [batchSeqShape, g.Longs(p + ".units", [1], -1)], OnnxGraph.Int("axis", 0))]);
        if (!isFloat32) hidden = g.Op("Cast", p + ".f32", [hidden], OnnxGraph.Int("to", (long)DataType.Float));
        string active = g.Op("Mul", p + ".active", [g.Op("Cast", p + ".active_f", [g.Op("Greater", p + ".gt", [hidden, g.Scalar(p + ".threshold", threshold)])],
            OnnxGraph.Int("to", (long)DataType.Float)), realTokens]);
        string perSequence = g.Op("ReduceSum", p + ".per_sequence", [active, g.Longs(p + ".axis_seq", [1], 1)], OnnxGraph.Int("keepdims", 0)); // (B, d_ff)
        string ToLong(string input, string output) => g.Named("Cast", output, [input], OnnxGraph.Int("to", (long)DataType.Int64));
        ToLong(g.Op("ReduceSum", p + ".per_token", [active, g.Longs(p + ".axis_unit", [1], -1)], OnnxGraph.Int("keepdims", 0)), ActiveUnitsOutput(layer));
        // Distinct units per window, reduced here too: [batch] leaves the runtime instead of [batch, d_ff].
        string seen = g.Op("Cast", p + ".seen", [g.Op("Greater", p + ".any", [perSequence, g.Scalar(p + ".zero", 0f)])], OnnxGraph.Int("to", (long)DataType.Float));
        ToLong(g.Op("ReduceSum", p + ".distinct", [seen, g.Longs(p + ".axis_units", [1], -1)], OnnxGraph.Int("keepdims", 0)), UnitsPerSequenceOutput(layer));
        ToLong(g.Op("ReduceSum", p + ".per_unit", [perSequence, g.Longs(p + ".axis_batch", [1], 0)], OnnxGraph.Int("keepdims", 0)), UnitTokensOutput(layer));
        yield return OnnxGraph.Value(ActiveUnitsOutput(layer), DataType.Int64, "batch", "seq");
        yield return OnnxGraph.Value(UnitsPerSequenceOutput(layer), DataType.Int64, "batch");
        yield return OnnxGraph.Value(UnitTokensOutput(layer), DataType.Int64, dFf);
    }
}
