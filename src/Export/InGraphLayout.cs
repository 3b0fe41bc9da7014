using Sparsity.Analysis;

namespace Sparsity.Export;

/// <summary>One layer of an analysis graph's in-graph statistics (<see cref="StatsReduction"/>).</summary>
/// <param name="Layer">The layer's index: its outputs are named with it.</param>
/// <param name="DFf">Its units.</param>
/// <param name="Stack">Which side of an encoder-decoder's pairs its counts read (<c>None</c>: the only side).</param>
public sealed record InGraphLayer(int Layer, int DFf, ModelStack Stack = ModelStack.None);

/// <summary>
/// The output layout of an analysis graph, in one place: which outputs each layer returns, in which order and shape
/// (three counts per layer; with top examples the top windows, their peaks and positions, and the histogram or its
/// sample), and how one batch of them — the int64 outputs concatenated, the float32 ones concatenated, each output's
/// length — is added to a layer's accumulators. The graph is built with these names (<see cref="StatsReduction"/>);
/// the runner fetches <see cref="Outputs"/> in this order; <see cref="Add"/> decodes them; nobody else holds offsets.
/// </summary>
/// <param name="Layers">The layers, in output order.</param>
/// <param name="TopExamples">K of the top windows (0: none).</param>
/// <param name="HistogramOnHost">The histogram comes as its sample (<see cref="StatsReduction.FirstWindowOutput"/>),
/// binned on the host.</param>
public sealed record InGraphLayout(
    IReadOnlyList<InGraphLayer> Layers,
    int TopExamples = 0,
    bool HistogramOnHost = false
)
{
    /// <summary>Layer <paramref name="layer"/>'s outputs in order, each with its shape for a batch of
    /// <paramref name="batch"/> windows of <paramref name="seqLen"/>.</summary>
    public IReadOnlyList<(string Name, long[] Shape)> OutputsOf(InGraphLayer layer, int batch, int seqLen)
    {
        int l = layer.Layer,
            d = layer.DFf,
            k = Math.Min(TopExamples, batch); // every window when K ≥ B
        var outputs = new List<(string, long[])>
        {
            (StatsReduction.ActiveUnitsOutput(l), [batch, seqLen]),
            (StatsReduction.UnitsPerSequenceOutput(l), [batch]),
            (StatsReduction.UnitTokensOutput(l), [d]),
        };
        if (TopExamples == 0)
            return outputs;
        outputs.Add((StatsReduction.TopWindowsOutput(l), [d, k]));
        outputs.Add((StatsReduction.TopValuesOutput(l), [d, k]));
        outputs.Add((StatsReduction.TopPositionsOutput(l), [d, k]));
        outputs.Add(
            HistogramOnHost
                ? (StatsReduction.FirstWindowOutput(l), [seqLen, d])
                : (StatsReduction.HistogramOutput(l), [StatsReduction.HistogramBins, d])
        );
        return outputs;
    }

    /// <summary>Every output of the graph, in order, with its shape.</summary>
    public IReadOnlyList<(string Name, long[] Shape)> Outputs(int batch, int seqLen) =>
        Layers.SelectMany(l => OutputsOf(l, batch, seqLen)).ToList();

    /// <summary>
    /// Adds one batch's outputs to the accumulators: <paramref name="counts"/> the int64 outputs in order,
    /// <paramref name="values"/> the float32 ones (the top windows' peaks, the histogram's sample),
    /// <paramref name="lengths"/> each output's element count. <paramref name="realSource"/> marks real positions
    /// [batch, seqLen] (the target's in
    /// <paramref name="realTarget"/> for a decoder stack); <paramref name="window"/> maps a window of the batch to its
    /// document and first token; top windows at or below <paramref name="threshold"/> do not count.
    /// </summary>
    public void Add(
        ReadOnlySpan<long> counts,
        ReadOnlySpan<float> values,
        ReadOnlySpan<long> lengths,
        int batch,
        int seqLen,
        bool[] realSource,
        bool[]? realTarget,
        LayerUnitUse[] uses,
        UnitExamples? examples,
        Func<int, (long Document, int Start)> window,
        float threshold,
        bool topSorted,
        CountedScratch scratch
    )
    {
        // The histogram's sample is masked in the graph (inactive entries 0, never above a threshold ≥ 0): every row
        // counts.
        bool[]? allReal = HistogramOnHost && examples != null ? Enumerable.Repeat(true, seqLen).ToArray() : null;
        for (int i = 0; i < Layers.Count; i++)
        {
            var layer = Layers[i];
            int d = layer.DFf,
                positions = batch * seqLen;
            var real = layer.Stack == ModelStack.Decoder ? realTarget! : realSource;
            uses[i]
                .AddCounted(
                    real,
                    batch,
                    seqLen,
                    counts[..positions],
                    counts.Slice(positions, batch),
                    counts.Slice(positions + batch, d),
                    scratch
                );
            counts = counts[(positions + batch + d)..];
            lengths = lengths[3..];
            if (TopExamples == 0)
                continue;
            int top = (int)lengths[0],
                histogram = (int)lengths[3]; // windows, peaks, positions: [d_ff, k] each; then the histogram or its sample
            if (examples != null)
                examples
                    .Layers[i]
                    .Top.AddWindows(
                        values[..top],
                        counts[..top],
                        counts.Slice(top, top),
                        top / d,
                        window,
                        threshold,
                        topSorted
                    );
            values = values[top..];
            if (HistogramOnHost)
            {
                examples?.Layers[i].Histogram.AddDense(values[..histogram], allReal!, seqLen, threshold);
                values = values[histogram..];
                counts = counts[(2 * top)..];
            }
            else
            {
                examples?.Layers[i].Histogram.AddBinMajor(counts.Slice(2 * top, histogram));
                counts = counts[(2 * top + histogram)..];
            }
            lengths = lengths[4..];
        }
    }
}
