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
    /// Layer <paramref name="layer"/>'s top windows of each unit in the batch, [d_ff, k] (k = min(K, batch)): the
    /// indices b of the k windows whose largest activation of the unit is highest, best first (ties to the earlier
    /// window), with that activation in <see cref="TopValuesOutput"/> and its position in the window in
    /// <see cref="TopPositionsOutput"/>.
    /// </summary>
    public static string TopWindowsOutput(int layer) => $"top_windows.{layer}";

    /// <summary>The peak activation of each of <see cref="TopWindowsOutput"/>, float32 [d_ff, k] (0 where the unit is
    /// silent on every real token).</summary>
    public static string TopValuesOutput(int layer) => $"top_values.{layer}";

    /// <summary>The peak's position t in its window (the first if several tie), int64 [d_ff, k].</summary>
    public static string TopPositionsOutput(int layer) => $"top_positions.{layer}";

    /// <summary>Layer <paramref name="layer"/>'s active values in the batch's first window per power-of-two bin and
    /// unit, [22, d_ff] (the bins of Analysis' ActivationHistogram).</summary>
    public static string HistogramOutput(int layer) => $"activation_histogram.{layer}";

    /// <summary>
    /// Layer <paramref name="layer"/>'s activations of the batch's first window where active on a real token (0
    /// elsewhere), float32 [seq, d_ff]: the histogram's sample, binned on the host where that is cheaper (the CPU).
    /// </summary>
    public static string FirstWindowOutput(int layer) => $"first_window.{layer}";

    /// <summary>Largest count of ones an fp16 sum holds exactly (2^11): the limit on window length for
    /// <c>halfCounts</c>.</summary>
    public const int HalfExactSum = 2048;

    /// <summary>Bins of <see cref="HistogramOutput"/>; bin 1 starts at
    /// 2^<see cref="HistogramLowestExponent"/>.</summary>
    public const int HistogramBins = 22,
        HistogramLowestExponent = -10;

    /// <summary>Metadata key holding the activity threshold the counts were built with.</summary>
    public const string ThresholdMetadata = "relu_sparsity.threshold";

    /// <summary>Records in <paramref name="model"/>'s metadata the threshold its counts use (replacing any earlier
    /// one).</summary>
    public static void SetThreshold(ModelProto model, float threshold)
    {
        foreach (var old in model.MetadataProps.Where(p => p.Key == ThresholdMetadata).ToList())
            model.MetadataProps.Remove(old);
        model.MetadataProps.Add(
            new StringStringEntryProto
            {
                Key = ThresholdMetadata,
                Value = threshold.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            }
        );
    }

    /// <summary>[batch, seq] float32 mask of real tokens from the int64 attention_mask input; the counts of every layer
    /// read it.</summary>
    public static string RealTokens(GraphWriter g, string attentionMask) =>
        g.Op("Cast", "real_token", [attentionMask], OnnxGraph.Int("to", (long)DataType.Float));

    /// <summary>
    /// Adds the three counts of <paramref name="hidden"/> (units on the last axis; [batch, seq, d_ff], or batch-major
    /// [batch·seq, d_ff] when <paramref name="batchSeqShape"/> gives [batch, seq] to view it as such), of element type
    /// <paramref name="hiddenType"/> (float32, float16 or bfloat16; compared in its own type, so fp16 activations are
    /// never copied to float32). <paramref name="topExamples"/> K &gt; 0 adds each unit's top windows of the batch and
    /// the histogram of its active values (<see cref="AddTopWindows"/>; <paramref name="histogramOnHost"/> returns the
    /// histogram's sample instead, <see cref="FirstWindowOutput"/>); <paramref name="opset"/> is the graph's.
    /// <paramref name="halfCounts"/> (fp16 activations, windows of at most <see cref="HalfExactSum"/> tokens): the
    /// counts go through fp16 matrix products, half the memory traffic of float32 sums and on tensor cores.
    /// <paramref name="windowsPerBatch"/>, when known and at most K: every window is returned, unsorted, without a
    /// TopK.
    /// </summary>
    /// <remarks>
    /// Three passes over [tokens, d_ff] (the comparison, its cast to float32, a sum over units) and one matrix product
    /// (real tokens × active, the per-window counts), instead of masking every element first: the statistics weigh
    /// against the forward itself on a GPU, where each pass is a read and a write of the layer's activations.
    /// </remarks>
    public static IEnumerable<ValueInfoProto> Add(
        GraphWriter g,
        string hidden,
        string realTokens,
        string? batchSeqShape,
        float threshold,
        int layer,
        int dFf,
        DataType hiddenType = DataType.Float,
        int topExamples = 0,
        long opset = 18,
        bool histogramOnHost = false,
        bool halfCounts = false,
        int? windowsPerBatch = null
    )
    {
        string p = $"h.{layer}.stats";
        if (batchSeqShape != null)
            hidden = g.Op(
                "Reshape",
                p + ".bt",
                [
                    hidden,
                    g.Op(
                        "Concat",
                        p + ".shape",
                        [batchSeqShape, g.Longs(p + ".units", [1], -1)],
                        OnnxGraph.Int("axis", 0)
                    ),
                ]
            );
        if (hiddenType == DataType.Bfloat16) // ONNX Runtime's CUDA comparisons and reductions lack bf16 kernels
            (hidden, hiddenType) = (
                g.Op("Cast", p + ".f32", [hidden], OnnxGraph.Int("to", (long)DataType.Float)),
                DataType.Float
            );
        // Active, padding included; padding leaves through the real-token mask of each reduction below.
        bool half = halfCounts && hiddenType == DataType.Float16;
        string active = g.Op(
            "Cast",
            p + ".active",
            [g.Op("Greater", p + ".gt", [hidden, g.ScalarBelow(p + ".threshold", threshold, hiddenType)])],
            OnnxGraph.Int("to", (long)(half ? DataType.Float16 : DataType.Float))
        ); // [B, T, d_ff]; sums of ones are exact in float32 below 2^24
        string ToLong(string input, string output) =>
            g.Named("Cast", output, [input], OnnxGraph.Int("to", (long)DataType.Int64));
        string ToFloat(string input) =>
            g.Op("Cast", input + ".f32", [input], OnnxGraph.Int("to", (long)DataType.Float));
        string realRow = g.Op("Unsqueeze", p + ".real_row", [realTokens, g.Longs(p + ".axis_row", [1], 1)]); // [B, 1, T]
        string perTokenAll,
            perWindow;
        if (half)
        {
            // fp16 0/1 through tensor-core products: every sum here is an integer ≤ 2,048, exact in fp16 whatever the
            // accumulation, so units are summed in blocks of 2,048 (then in float32) and windows are at most 2,048
            // tokens.
            int blocks = (dFf + HalfExactSum - 1) / HalfExactSum;
            var ones = new Half[dFf * blocks];
            for (int u = 0; u < dFf; u++)
                ones[u * blocks + u / HalfExactSum] = (Half)1;
            string blockOnes = g.Halfs(p + ".unit_blocks", [dFf, blocks], ones);
            perTokenAll = g.Op(
                "ReduceSum",
                p + ".per_token",
                [
                    ToFloat(g.Op("MatMul", p + ".per_token_blocks", [active, blockOnes])),
                    g.Longs(p + ".axis_unit", [1], -1),
                ],
                OnnxGraph.Int("keepdims", 0)
            ); // [B, T]
            perWindow = ToFloat(
                g.Op(
                    "MatMul",
                    p + ".per_window",
                    [g.Op("Cast", p + ".real_row_half", [realRow], OnnxGraph.Int("to", (long)DataType.Float16)), active]
                )
            );
        }
        else
        {
            perTokenAll = g.Op(
                "ReduceSum",
                p + ".per_token",
                [active, g.Longs(p + ".axis_unit", [1], -1)],
                OnnxGraph.Int("keepdims", 0)
            ); // [B, T]
            perWindow = g.Op("MatMul", p + ".per_window", [realRow, active]); // per window, real tokens only: one batched product
        }
        ToLong(g.Op("Mul", p + ".per_real_token", [perTokenAll, realTokens]), ActiveUnitsOutput(layer));
        string perSequence = g.Op("Reshape", p + ".per_sequence", [perWindow, g.Longs(p + ".rows", [2], 0, dFf)]); // [B, d_ff]
        // Distinct units per window, reduced here too: [batch] leaves the runtime instead of [batch, d_ff].
        string seen = g.Op(
            "Cast",
            p + ".seen",
            [g.Op("Greater", p + ".any", [perSequence, g.Scalar(p + ".zero", 0f)])],
            OnnxGraph.Int("to", (long)DataType.Float)
        );
        ToLong(
            g.Op(
                "ReduceSum",
                p + ".distinct",
                [seen, g.Longs(p + ".axis_units", [1], -1)],
                OnnxGraph.Int("keepdims", 0)
            ),
            UnitsPerSequenceOutput(layer)
        );
        ToLong(
            g.Op(
                "ReduceSum",
                p + ".per_unit",
                [perSequence, g.Longs(p + ".axis_batch", [1], 0)],
                OnnxGraph.Int("keepdims", 0)
            ),
            UnitTokensOutput(layer)
        );
        yield return OnnxGraph.Value(ActiveUnitsOutput(layer), DataType.Int64, "batch", "seq");
        yield return OnnxGraph.Value(UnitsPerSequenceOutput(layer), DataType.Int64, "batch");
        yield return OnnxGraph.Value(UnitTokensOutput(layer), DataType.Int64, dFf);
        if (topExamples > 0)
            foreach (
                var output in AddTopWindows(
                    g,
                    hidden,
                    hiddenType,
                    active,
                    half,
                    realTokens,
                    threshold,
                    layer,
                    dFf,
                    topExamples,
                    opset,
                    histogramOnHost,
                    windowsPerBatch
                )
            )
                yield return output;
    }

    /// <summary>
    /// Each unit's top windows of the batch in fixed shapes, as dashboards define top examples (one per context): per
    /// window and unit the largest activation on a real token and its first position (a max and an arg-max over the
    /// window's tokens), then the k = min(K, batch) windows with the highest (TopK over windows, ties to the earlier
    /// one). No NonZero, If or host-chosen input, so nothing waits on the host and the step has one shape. The host
    /// keeps those above the threshold among each unit's K best so far; a unit's K best windows of the corpus are
    /// always among its k best of their batch, so the result is exact. And the histogram of the active values in the
    /// batch's first window (a fixed sample, 1/batch of the windows).
    /// </summary>
    static IEnumerable<ValueInfoProto> AddTopWindows(
        GraphWriter g,
        string hidden,
        DataType hiddenType,
        string active,
        bool activeHalf,
        string realTokens,
        float threshold,
        int layer,
        int dFf,
        int k,
        long opset,
        bool histogramOnHost,
        int? windowsPerBatch
    )
    {
        string p = $"h.{layer}.top";
        // Padding to 0, in the activations' type: never above the threshold the host applies (≥ 0), so never a peak
        // that counts.
        string real = g.Op("Unsqueeze", p + ".real", [realTokens, g.Longs(p + ".axis_last", [1], -1)]);
        if (hiddenType != DataType.Float)
            real = g.Op("Cast", p + ".real_typed", [real], OnnxGraph.Int("to", (long)hiddenType));
        string masked = g.Op("Mul", p + ".masked", [hidden, real]); // [B, T, d_ff]
        // The arg-max, then the value there: one pass over [B, T, d_ff] instead of a max and an arg-max.
        string atKept = g.Op(
            "ArgMax",
            p + ".peak_at",
            [masked],
            OnnxGraph.Int("axis", 1),
            OnnxGraph.Int("keepdims", 1)
        ); // [B, 1, d_ff], first of ties
        string Squeeze(string hint, string input) =>
            opset >= 13 // Squeeze took its axes as an attribute before opset 13
                ? g.Op("Squeeze", hint, [input, g.Longs(hint + ".axis", [1], 1)])
                : g.Op("Squeeze", hint, [input], OnnxGraph.Ints("axes", 1));
        string peak = Squeeze(
            p + ".peak",
            g.Op("GatherElements", p + ".peak_kept", [masked, atKept], OnnxGraph.Int("axis", 1))
        ); // [B, d_ff]
        string at = Squeeze(p + ".peak_at_flat", atKept);
        if (hiddenType != DataType.Float)
            peak = g.Op("Cast", p + ".peak_f32", [peak], OnnxGraph.Int("to", (long)DataType.Float));
        string units = g.Op("Transpose", p + ".units", [peak], OnnxGraph.Ints("perm", 1, 0)); // [d_ff, B]
        string unitsAt = g.Op("Transpose", p + ".units_at", [at], OnnxGraph.Ints("perm", 1, 0));
        if (windowsPerBatch is int b && k >= b)
        {
            // Every window of the batch is a candidate: no TopK (the host takes them in batch order).
            g.Named("Identity", TopValuesOutput(layer), [units]);
            string shape = g.Op("Shape", p + ".units_shape", [units]); // [d_ff, B]: B is the run's, at most the planned one
            string index = g.Op(
                "Range",
                p + ".window_index",
                [
                    g.Longs(p + ".zero_index", [], 0),
                    g.Op(
                        "Squeeze",
                        p + ".batch",
                        [
                            g.Op("Gather", p + ".batch_dim", [shape, g.Longs(p + ".one_dim", [1], 1)]),
                            g.Longs(p + ".squeeze_axis", [1], 0),
                        ]
                    ),
                    g.Longs(p + ".step", [], 1),
                ]
            );
            g.Named("Expand", TopWindowsOutput(layer), [index, shape]);
            g.Named("Identity", TopPositionsOutput(layer), [unitsAt]);
        }
        else
        {
            // k = min(K, windows in the batch), so a batch smaller than K still runs.
            string windows = g.Op(
                "Gather",
                p + ".windows",
                [g.Op("Shape", p + ".shape", [peak]), g.Longs(p + ".axis0", [1], 0)],
                OnnxGraph.Int("axis", 0)
            );
            string kept = g.Op("Min", p + ".k", [windows, g.Longs(p + ".k_max", [1], k)]);
            // TopK along the last axis of [d_ff, B] scans contiguous rows.
            string[] top = g.Ops(
                "TopK",
                p + ".topk",
                [units, kept],
                2,
                OnnxGraph.Int("axis", 1),
                OnnxGraph.Int("largest", 1),
                OnnxGraph.Int("sorted", 1)
            );
            g.Named("Identity", TopValuesOutput(layer), [top[0]]);
            g.Named("Identity", TopWindowsOutput(layer), [top[1]]);
            g.Named("GatherElements", TopPositionsOutput(layer), [unitsAt, top[1]], OnnxGraph.Int("axis", 1));
        }
        yield return OnnxGraph.Value(TopWindowsOutput(layer), DataType.Int64, dFf, "k");
        yield return OnnxGraph.Value(TopValuesOutput(layer), DataType.Float, dFf, "k");
        yield return OnnxGraph.Value(TopPositionsOutput(layer), DataType.Int64, dFf, "k");
        string sample = FirstWindow(g, p, hidden, hiddenType, active, activeHalf, realTokens);
        if (histogramOnHost)
        {
            // Binning [seq, d_ff] against 21 edges in the graph cost as much as the top windows on 2 CPU threads; the
            // host bins it in a pass.
            g.Named("Identity", FirstWindowOutput(layer), [sample]);
            yield return OnnxGraph.Value(FirstWindowOutput(layer), DataType.Float, "seq", dFf);
            yield break;
        }
        AddHistogram(g, p, sample, layer);
        yield return OnnxGraph.Value(HistogramOutput(layer), DataType.Int64, HistogramBins, dFf);
    }

    // The histogram of the first window's active values, in fixed shapes (no NonZero, no scatter): a value's bin is the
    // number of power-of-two edges 2^-10 … 2^10 it reaches (exact comparisons, so it equals the float's binary exponent
    // on any device). Summed over tokens, "reaches edge e" gives the active values at or above each edge (inactive
    // ones, masked to 0, reach none); bin 0 holds the rest of the active values, bin e + 1 those reaching e but not e +
    // 1. The first window's activations where active on a real token, float32 [seq, d_ff] (0 elsewhere).
    static string FirstWindow(
        GraphWriter g,
        string p,
        string hidden,
        DataType hiddenType,
        string active,
        bool activeHalf,
        string realTokens
    )
    {
        string window = g.Longs(p + ".window", [], 0);
        string realColumn = g.Op(
            "Unsqueeze",
            p + ".first_real",
            [
                g.Op("Gather", p + ".first_tokens", [realTokens, window], OnnxGraph.Int("axis", 0)),
                g.Longs(p + ".axis_column_real", [1], -1),
            ]
        ); // [seq, 1]
        string firstActive = g.Op("Gather", p + ".first_active", [active, window], OnnxGraph.Int("axis", 0));
        if (activeHalf)
            firstActive = g.Op(
                "Cast",
                p + ".first_active_f32",
                [firstActive],
                OnnxGraph.Int("to", (long)DataType.Float)
            );
        string mask = g.Op("Mul", p + ".first_mask", [firstActive, realColumn]); // [seq, d_ff]
        string first = g.Op("Gather", p + ".first_window", [hidden, window], OnnxGraph.Int("axis", 0));
        if (hiddenType != DataType.Float)
            first = g.Op("Cast", p + ".first_f32", [first], OnnxGraph.Int("to", (long)DataType.Float));
        return g.Op("Mul", p + ".first_values", [first, mask]);
    }

    static void AddHistogram(GraphWriter g, string p, string values, int layer)
    {
        var edges = Enumerable
            .Range(0, HistogramBins - 1)
            .Select(e => MathF.Pow(2, e + HistogramLowestExponent))
            .ToArray();
        string reached = g.Op(
            "Cast",
            p + ".reached",
            [
                g.Op(
                    "GreaterOrEqual",
                    p + ".reaches",
                    [
                        g.Op("Unsqueeze", p + ".column", [values, g.Longs(p + ".last", [1], -1)]),
                        g.Floats(p + ".edges", [HistogramBins - 1], edges),
                    ]
                ),
            ],
            OnnxGraph.Int("to", (long)DataType.Float)
        ); // [seq, d_ff, edges]
        string tokensAxis = g.Longs(p + ".axis_tokens", [1], 0);
        // Float sums of ones are exact below 2^24, in any order.
        string atOrAbove = g.Op("ReduceSum", p + ".at_or_above", [reached, tokensAxis], OnnxGraph.Int("keepdims", 0)); // [d_ff, edges]
        string count = g.Op(
            "ReduceSum",
            p + ".count",
            [
                g.Op(
                    "Cast",
                    p + ".active_count",
                    [g.Op("Greater", p + ".is_active", [values, g.Scalar(p + ".none", 0f)])],
                    OnnxGraph.Int("to", (long)DataType.Float)
                ),
                tokensAxis,
            ],
            OnnxGraph.Int("keepdims", 0)
        ); // [d_ff]
        string upper = g.Op(
            "Concat",
            p + ".upper",
            [g.Op("Unsqueeze", p + ".count_column", [count, g.Longs(p + ".axis_column", [1], 1)]), atOrAbove],
            OnnxGraph.Int("axis", 1)
        );
        string lower = g.Op("Pad", p + ".lower", [atOrAbove, g.Longs(p + ".pad_end", [4], 0, 0, 0, 1)]); // a 0 after the last edge
        string bins = g.Op(
            "Transpose",
            p + ".bins",
            [g.Op("Sub", p + ".per_bin", [upper, lower])],
            OnnxGraph.Ints("perm", 1, 0)
        ); // [bins, d_ff]
        g.Named("Cast", HistogramOutput(layer), [bins], OnnxGraph.Int("to", (long)DataType.Int64));
    }
}
