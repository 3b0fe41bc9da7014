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
    /// <summary>Layer <paramref name="layer"/>'s K largest activations per unit in the batch, [K, d_ff] (0 where fewer were active).</summary>
    public static string TopValuesOutput(int layer) => $"top_values.{layer}";
    /// <summary>Where each of <see cref="TopValuesOutput"/> happened: the token's flat index b·seq + t in the batch, [K, d_ff].</summary>
    public static string TopTokensOutput(int layer) => $"top_tokens.{layer}";
    /// <summary>Layer <paramref name="layer"/>'s active values in the batch's first window per power-of-two bin and unit, [22, d_ff] (the bins of Analysis' ActivationHistogram).</summary>
    public static string HistogramOutput(int layer) => $"activation_histogram.{layer}";
    /// <summary>Bins of <see cref="HistogramOutput"/>; bin 1 starts at 2^<see cref="HistogramLowestExponent"/>.</summary>
    public const int HistogramBins = 22, HistogramLowestExponent = -10;
    /// <summary>The opset whose ScatterElements adds (reduction "add"), which the in-graph histograms need.</summary>
    public const long HistogramOpset = 16;
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
    /// <paramref name="topExamples"/> K &gt; 0 adds each unit's K largest activations of the batch and the histogram of its
    /// active values (<see cref="AddTopExamples"/>).
    public static IEnumerable<ValueInfoProto> Add(GraphWriter g, string hidden, string realTokens, string? batchSeqShape, float threshold, int layer, int dFf,
        bool isFloat32 = true, int topExamples = 0)
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
        if (topExamples > 0)
            foreach (var output in AddTopExamples(g, g.Op("Mul", p + ".active_values", [hidden, active]), layer, dFf, topExamples)) yield return output;
    }

    /// <summary>
    /// From a layer's active values ([batch, seq, d_ff]: the activation where the unit is active on a real token, else 0;
    /// the threshold is ≥ 0), each unit's <paramref name="k"/> largest over the batch (TopK on the token axis; ties go to
    /// the lower index, so to the earlier token, as the ONNX spec requires) and the count of its active values in the
    /// batch's first window per power-of-two bin (a fixed sample, 1/batch of the windows). Only the nonzero values are binned (NonZero, Gather), so the binning touches a few percent of
    /// the activations; the bin is floor(log₂ v), estimated with Log and corrected against exact power-of-two edges,
    /// so it equals the float's binary exponent on any device; ScatterElements adds the ones into [bins · d_ff].
    /// </summary>
    static IEnumerable<ValueInfoProto> AddTopExamples(GraphWriter g, string activeValues, int layer, int dFf, int k)
    {
        string p = $"h.{layer}.top";
        string rows = g.Op("Reshape", p + ".rows", [activeValues, g.Longs(p + ".rows_shape", [2], -1, dFf)]);
        // TopK along the last axis of [d_ff, tokens] scans contiguous rows: 3× faster than along axis 0 on the CPU provider.
        string units = g.Op("Transpose", p + ".units", [rows], OnnxGraph.Ints("perm", 1, 0));
        string[] top = g.Ops("TopK", p + ".topk", [units, g.Longs(p + ".k", [1], k)], 2, OnnxGraph.Int("axis", 1), OnnxGraph.Int("largest", 1), OnnxGraph.Int("sorted", 1))
            .Select((t, i) => g.Op("Transpose", p + (i == 0 ? ".values_by_rank" : ".tokens_by_rank"), [t], OnnxGraph.Ints("perm", 1, 0))).ToArray();
        g.Named("Identity", TopValuesOutput(layer), [top[0]]);
        g.Named("Identity", TopTokensOutput(layer), [top[1]]);

        // The histogram samples the batch's first window: binning every value cost more than the model on the CPU.
        string firstWindow = g.Op("Gather", p + ".first_window", [activeValues, g.Longs(p + ".window", [], 0)], OnnxGraph.Int("axis", 0));
        string flat = g.Op("Reshape", p + ".flat", [firstWindow, g.Longs(p + ".flat_shape", [1], -1)]);
        string where = g.Op("Reshape", p + ".where", [g.Op("NonZero", p + ".nonzero", [flat]), g.Longs(p + ".where_shape", [1], -1)]);
        string values = g.Op("Gather", p + ".values", [flat, where], OnnxGraph.Int("axis", 0));
        string unit = g.Op("Mod", p + ".unit", [where, g.Longs(p + ".d_ff", [], dFf)]);
        string estimate = g.Op("Floor", p + ".log2", [g.Op("Mul", p + ".log2_scaled", [g.Op("Log", p + ".ln", [values]), g.Scalar(p + ".inv_ln2", (float)(1 / Math.Log(2)))])]);
        string first = g.Op("Cast", p + ".bin_estimate", [g.Op("Clip", p + ".bin_clipped", [g.Op("Add", p + ".bin_offset", [estimate, g.Scalar(p + ".offset", 1 - HistogramLowestExponent)]),
            g.Scalar(p + ".first_bin", 0), g.Scalar(p + ".last_bin", HistogramBins - 1)])], OnnxGraph.Int("to", (long)DataType.Int64));
        // Bin b holds [lower[b], upper[b]); Log may miss by one next to a power of two, which the exact edges correct.
        var lower = Enumerable.Range(0, HistogramBins).Select(b => b == 0 ? float.NegativeInfinity : MathF.Pow(2, b - 1 + HistogramLowestExponent)).ToArray();
        var upper = Enumerable.Range(0, HistogramBins).Select(b => b == HistogramBins - 1 ? float.PositiveInfinity : MathF.Pow(2, b + HistogramLowestExponent)).ToArray();
        string up = g.Op("Cast", p + ".up", [g.Op("GreaterOrEqual", p + ".above", [values, g.Op("Gather", p + ".upper", [g.Floats(p + ".upper_edges", [HistogramBins], upper), first])])],
            OnnxGraph.Int("to", (long)DataType.Int64));
        string down = g.Op("Cast", p + ".down", [g.Op("Less", p + ".below", [values, g.Op("Gather", p + ".lower", [g.Floats(p + ".lower_edges", [HistogramBins], lower), first])])],
            OnnxGraph.Int("to", (long)DataType.Int64));
        string bin = g.Op("Sub", p + ".bin", [g.Op("Add", p + ".bin_up", [first, up]), down]);
        string target = g.Op("Add", p + ".target", [g.Op("Mul", p + ".bin_row", [bin, g.Longs(p + ".row", [], dFf)]), unit]);
        string ones = g.Op("ConstantOfShape", p + ".ones", [g.Op("Shape", p + ".count", [target])], OnnxGraph.TensorAttribute("value", OnnxGraph.FloatTensor("value", [1], [1f])));
        string zeros = g.Op("ConstantOfShape", p + ".zeros", [g.Longs(p + ".bins", [1], (long)HistogramBins * dFf)], OnnxGraph.TensorAttribute("value", OnnxGraph.FloatTensor("value", [1], [0f])));
        // Float sums of ones are exact below 2^24 per bin and batch, in any order (atomics on a GPU).
        string sums = g.Op("ScatterElements", p + ".sums", [zeros, target, ones], OnnxGraph.Int("axis", 0), OnnxGraph.String("reduction", "add"));
        g.Named("Cast", HistogramOutput(layer), [g.Op("Reshape", p + ".histogram", [sums, g.Longs(p + ".histogram_shape", [2], HistogramBins, dFf)])],
            OnnxGraph.Int("to", (long)DataType.Int64));
        yield return OnnxGraph.Value(TopValuesOutput(layer), DataType.Float, k, dFf);
        yield return OnnxGraph.Value(TopTokensOutput(layer), DataType.Int64, k, dFf);
        yield return OnnxGraph.Value(HistogramOutput(layer), DataType.Int64, HistogramBins, dFf);
    }
}
