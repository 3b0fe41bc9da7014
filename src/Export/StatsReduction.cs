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
    /// <summary>
    /// Input of layer <paramref name="layer"/>, float32 [d_ff]: an activation of unit u is a top-example candidate when it
    /// is above floor[u] (the threshold while the unit has fewer than K examples, then just below its K-th best so far).
    /// </summary>
    public static string TopFloorInput(int layer) => $"top_floor.{layer}";
    /// <summary>
    /// Input, float32 [1]: 1 to take each unit's candidates among its K largest activations of the batch (TopK, then the
    /// floors), bounded whatever the floors: the host asks for it until it has floors (the first batch); 0 to scan for
    /// every value above the floors.
    /// </summary>
    public const string TopPerBatchInput = "top_per_batch";
    /// <summary>
    /// Layer <paramref name="layer"/>'s token indices (b·seq + t) of each unit's K largest activations in the batch, [d_ff, K],
    /// with their values in <see cref="TopValuesOutput"/>: the fixed-shape form, for a GPU.
    /// </summary>
    public static string TopTokensOutput(int layer) => $"top_tokens.{layer}";
    /// <summary>Whether <paramref name="output"/> is some layer's <see cref="TopTokensOutput"/>.</summary>
    public static bool IsTopTokensOutput(string output) => output.StartsWith("top_tokens.", StringComparison.Ordinal);
    /// <summary>Layer <paramref name="layer"/>'s candidates in the batch, [candidates]: each one's flat index token·d_ff + unit, token = b·seq + t, in row-major order.</summary>
    public static string TopCandidatesOutput(int layer) => $"top_candidates.{layer}";
    /// <summary>The activation of each of <see cref="TopCandidatesOutput"/>, [candidates] (or of <see cref="TopTokensOutput"/>, [d_ff, K]).</summary>
    public static string TopValuesOutput(int layer) => $"top_values.{layer}";
    /// <summary>Layer <paramref name="layer"/>'s active values in the batch's first window per power-of-two bin and unit, [22, d_ff] (the bins of Analysis' ActivationHistogram).</summary>
    public static string HistogramOutput(int layer) => $"activation_histogram.{layer}";
    /// <summary>Bins of <see cref="HistogramOutput"/>; bin 1 starts at 2^<see cref="HistogramLowestExponent"/>.</summary>
    public const int HistogramBins = 22, HistogramLowestExponent = -10;
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
    /// <paramref name="topExamples"/> K &gt; 0 adds each unit's top-example candidates of the batch and the histogram of its
    /// active values (<see cref="AddTopExamples"/>), in the form <paramref name="topPerBatch"/> asks for (true: fixed shapes, for a
    /// GPU); <paramref name="opset"/> is the graph's.
    public static IEnumerable<ValueInfoProto> Add(GraphWriter g, string hidden, string realTokens, string? batchSeqShape, float threshold, int layer, int dFf,
        bool isFloat32 = true, int topExamples = 0, long opset = 18, bool topPerBatch = false)
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
            foreach (var output in AddTopExamples(g, hidden, active, realTokens, layer, dFf, topExamples, opset, topPerBatch)) yield return output;
    }

    /// <summary>
    /// From a layer's activations ([batch, seq, d_ff], float32) and its active mask (1 where the unit is active on a real
    /// token), the candidates for each unit's top K, in one of two forms.
    /// <para><paramref name="perBatch"/> false (the CPU): the activations above the unit's floor (<see cref="TopFloorInput"/>;
    /// never below the threshold), which the host raises to its running K-th best, so after the first batches few leave
    /// the runtime (a per-batch TopK over every unit's tokens cost 1.13–1.44× the statistics on a CPU). Until the host has
    /// floors (<see cref="TopPerBatchInput"/>), an If takes the candidates among each unit's per-batch TopK instead, so the
    /// first batch returns K per unit, not every active value.</para>
    /// <para><paramref name="perBatch"/> true (a GPU): each unit's K largest of the batch, [d_ff, K] values and token
    /// indices (<see cref="TopTokensOutput"/>), every batch, with no data-dependent shape: NonZero and If make the device
    /// wait for the host twelve times a batch, which doubled the graph's time on an H200; the host keeps those above its
    /// floors.</para>
    /// And the histogram of the active values in the batch's first window (a fixed sample, 1/batch of the windows).
    /// </summary>
    static IEnumerable<ValueInfoProto> AddTopExamples(GraphWriter g, string hidden, string active, string realTokens, int layer, int dFf, int k, long opset, bool perBatch)
    {
        string p = $"h.{layer}.top";
        string rows = g.Op("Reshape", p + ".rows", [hidden, g.Longs(p + ".rows_shape", [2], -1, dFf)]); // [tokens, d_ff]
        if (perBatch)
        {
            var (values, tokens) = UnitTopK(g, p, rows, active, dFf, k);
            g.Named("Identity", TopValuesOutput(layer), [values]);
            g.Named("Identity", TopTokensOutput(layer), [tokens]);
            yield return OnnxGraph.Value(TopTokensOutput(layer), DataType.Int64, dFf, k);
            yield return OnnxGraph.Value(TopValuesOutput(layer), DataType.Float, dFf, k);
        }
        else
        {
            g.Graph.Input.Add(OnnxGraph.Value(TopFloorInput(layer), DataType.Float, dFf));
            if (!g.Graph.Input.Any(i => i.Name == TopPerBatchInput))
                g.Graph.Input.Add(OnnxGraph.Value(TopPerBatchInput, DataType.Float, 1));
            string cold = g.Op("Cast", p + ".is_cold", [g.Op("Reshape", p + ".cold_scalar", [TopPerBatchInput, g.Longs(p + ".scalar", [0])])], OnnxGraph.Int("to", (long)DataType.Bool));
            var coldBranch = new GraphWriter(new GraphProto { Name = p + ".cold" });
            var warmBranch = new GraphWriter(new GraphProto { Name = p + ".warm" });
            ColdCandidates(coldBranch, p + ".cold", rows, active, TopFloorInput(layer), dFf, k);
            WarmCandidates(warmBranch, p + ".warm", rows, realTokens, TopFloorInput(layer), dFf, opset);
            g.Graph.Node.Add(new NodeProto
            {
                OpType = "If", Name = g.Fresh(p + ".if"), Input = { cold }, Output = { TopCandidatesOutput(layer), TopValuesOutput(layer) },
                Attribute =
                {
                    new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = coldBranch.Graph },
                    new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = warmBranch.Graph },
                },
            });
            yield return OnnxGraph.Value(TopCandidatesOutput(layer), DataType.Int64, "candidates");
            yield return OnnxGraph.Value(TopValuesOutput(layer), DataType.Float, "candidates");
        }
        AddHistogram(g, p, hidden, active, layer, dFf);
        yield return OnnxGraph.Value(HistogramOutput(layer), DataType.Int64, HistogramBins, dFf);
    }

    // The histogram of the first window's active values, in fixed shapes (no NonZero, no scatter): a value's bin is the
    // number of power-of-two edges 2^-10 … 2^10 it reaches (exact comparisons, so it equals the float's binary exponent
    // on any device). Summed over tokens, "reaches edge e" gives the active values at or above each edge (inactive ones,
    // masked to 0, reach none); bin 0 holds the rest of the active values, bin e + 1 those reaching e but not e + 1.
    static void AddHistogram(GraphWriter g, string p, string hidden, string active, int layer, int dFf)
    {
        string window = g.Longs(p + ".window", [], 0);
        string mask = g.Op("Gather", p + ".first_mask", [active, window], OnnxGraph.Int("axis", 0)); // [seq, d_ff]
        string values = g.Op("Mul", p + ".first_active", [g.Op("Gather", p + ".first_window", [hidden, window], OnnxGraph.Int("axis", 0)), mask]);
        var edges = Enumerable.Range(0, HistogramBins - 1).Select(e => MathF.Pow(2, e + HistogramLowestExponent)).ToArray();
        string reached = g.Op("Cast", p + ".reached", [g.Op("GreaterOrEqual", p + ".reaches", [g.Op("Unsqueeze", p + ".column", [values, g.Longs(p + ".last", [1], -1)]),
            g.Floats(p + ".edges", [HistogramBins - 1], edges)])], OnnxGraph.Int("to", (long)DataType.Float)); // [seq, d_ff, edges]
        string tokensAxis = g.Longs(p + ".axis_tokens", [1], 0);
        // Float sums of ones are exact below 2^24, in any order.
        string atOrAbove = g.Op("ReduceSum", p + ".at_or_above", [reached, tokensAxis], OnnxGraph.Int("keepdims", 0)); // [d_ff, edges]
        string count = g.Op("ReduceSum", p + ".count", [mask, tokensAxis], OnnxGraph.Int("keepdims", 0)); // [d_ff]
        string upper = g.Op("Concat", p + ".upper", [g.Op("Unsqueeze", p + ".count_column", [count, g.Longs(p + ".axis_column", [1], 1)]), atOrAbove], OnnxGraph.Int("axis", 1));
        string lower = g.Op("Pad", p + ".lower", [atOrAbove, g.Longs(p + ".pad_end", [4], 0, 0, 0, 1)]); // a 0 after the last edge
        string bins = g.Op("Transpose", p + ".bins", [g.Op("Sub", p + ".per_bin", [upper, lower])], OnnxGraph.Ints("perm", 1, 0)); // [bins, d_ff]
        g.Named("Cast", HistogramOutput(layer), [bins], OnnxGraph.Int("to", (long)DataType.Int64));
    }

    // Each unit's K largest active values of the batch and their token indices, [d_ff, K] each, largest first (ties to the
    // earlier token, as the ONNX spec requires); inactive units and padding enter as 0.
    static (string Values, string Tokens) UnitTopK(GraphWriter g, string p, string rows, string active, int dFf, int k)
    {
        string activeValues = g.Op("Mul", p + ".active_values", [rows, g.Op("Reshape", p + ".active_rows", [active, g.Longs(p + ".active_shape", [2], -1, dFf)])]);
        // TopK along the last axis of [d_ff, tokens] scans contiguous rows: 3× faster than along axis 0 on the CPU provider.
        string[] top = g.Ops("TopK", p + ".topk", [g.Op("Transpose", p + ".units", [activeValues], OnnxGraph.Ints("perm", 1, 0)), g.Longs(p + ".k", [1], k)], 2,
            OnnxGraph.Int("axis", 1), OnnxGraph.Int("largest", 1), OnnxGraph.Int("sorted", 1));
        return (top[0], top[1]);
    }

    // Each unit's K largest of the batch that are above its floor: bounded while the floors know nothing (every active
    // value is above the threshold), and without a scan.
    static void ColdCandidates(GraphWriter g, string p, string rows, string active, string floor, int dFf, int k)
    {
        var (values, tokens) = UnitTopK(g, p, rows, active, dFf, k);
        string flat = g.Longs(p + ".flat", [1], -1);
        string kept = g.Op("Reshape", p + ".kept", [g.Op("NonZero", p + ".kept_where", [g.Op("Reshape", p + ".above_flat",
            [g.Op("Greater", p + ".above", [values, g.Op("Unsqueeze", p + ".floor_column", [floor, g.Longs(p + ".axis", [1], 1)])]), flat])]), flat]);
        string unit = g.Op("Div", p + ".unit", [kept, g.Longs(p + ".k_scalar", [], k)]);
        string token = g.Op("Gather", p + ".token", [g.Op("Reshape", p + ".tokens_flat", [tokens, flat]), kept], OnnxGraph.Int("axis", 0));
        g.Named("Add", p + ".candidates", [g.Op("Mul", p + ".token_row", [token, g.Longs(p + ".d_ff", [], dFf)]), unit]);
        g.Named("Gather", p + ".values", [g.Op("Reshape", p + ".values_flat", [values, flat]), kept], OnnxGraph.Int("axis", 0));
        g.Graph.Output.Add(OnnxGraph.Value(p + ".candidates", DataType.Int64, "candidates"));
        g.Graph.Output.Add(OnnxGraph.Value(p + ".values", DataType.Float, "candidates"));
    }

    // Once the floors are set: the tokens with an activation above its unit's floor are found first (a reduction over
    // units, fast on the contiguous axis), so NonZero, which visits elements one by one, sees only their rows.
    static void WarmCandidates(GraphWriter g, string p, string rows, string realTokens, string floor, int dFf, long opset)
    {
        // v − floor > 0 exactly when v > floor (gradual underflow: distinct floats never subtract to 0), and the floor is never below the threshold.
        string excess = g.Op("Sub", p + ".excess", [rows, floor]);
        string tokenMax = opset >= 18 // ReduceMax took its axes as an attribute before opset 18
            ? g.Op("ReduceMax", p + ".token_max", [excess, g.Longs(p + ".axis_units", [1], -1)], OnnxGraph.Int("keepdims", 0))
            : g.Op("ReduceMax", p + ".token_max", [excess], OnnxGraph.Ints("axes", -1), OnnxGraph.Int("keepdims", 0));
        string real = g.Op("Reshape", p + ".real", [realTokens, g.Longs(p + ".real_shape", [1], -1)]);
        string anyAbove = g.Op("Cast", p + ".token_any", [g.Op("Greater", p + ".token_gt", [tokenMax, g.Scalar(p + ".zero", 0f)])], OnnxGraph.Int("to", (long)DataType.Float));
        string hot = g.Op("Reshape", p + ".hot", [g.Op("NonZero", p + ".hot_where", [g.Op("Mul", p + ".hot_real", [anyAbove, real])]), g.Longs(p + ".hot_shape", [1], -1)]);
        string hotAbove = g.Op("Reshape", p + ".hot_above", [g.Op("Greater", p + ".above", [g.Op("Gather", p + ".hot_rows", [excess, hot], OnnxGraph.Int("axis", 0)), g.Scalar(p + ".none", 0f)]),
            g.Longs(p + ".flat_all", [1], -1)]);
        string where = g.Op("Reshape", p + ".where", [g.Op("NonZero", p + ".candidates_where", [hotAbove]), g.Longs(p + ".where_shape", [1], -1)]); // hot row · d_ff + unit
        string dFfScalar = g.Longs(p + ".d_ff", [], dFf);
        string token = g.Op("Gather", p + ".token", [hot, g.Op("Div", p + ".hot_row", [where, dFfScalar])], OnnxGraph.Int("axis", 0));
        string candidates = g.Named("Add", p + ".candidates", [g.Op("Mul", p + ".token_row", [token, dFfScalar]), g.Op("Mod", p + ".unit", [where, dFfScalar])]);
        g.Named("Gather", p + ".values", [g.Op("Reshape", p + ".all", [rows, g.Longs(p + ".all_shape", [1], -1)]), candidates], OnnxGraph.Int("axis", 0));
        g.Graph.Output.Add(OnnxGraph.Value(p + ".candidates", DataType.Int64, "candidates"));
        g.Graph.Output.Add(OnnxGraph.Value(p + ".values", DataType.Float, "candidates"));
    }
}
