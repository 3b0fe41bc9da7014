using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>An output column of a layer and its shape for a batch of B windows of T tokens (null: known only after the run).</summary>
public sealed record LayerOutput(string Name, Func<int, int, int, int[]?> ShapeOf)
{
    public int[]? Shape(int batch, int seqLen, int dFf) => ShapeOf(batch, seqLen, dFf);
}

/// <summary>What to read of one layer: its outputs (dense activations, or the three in-graph counts).</summary>
public sealed record LayerPlan(string Name, int DFf, IReadOnlyList<LayerOutput> Outputs);

/// <summary>
/// What to run and read for a model: <see cref="Graph"/>, the graph ONNX Runtime runs (its outputs are only what the
/// analysis reads), and how each layer's outputs become counts. This project's stats variant runs as it is; any other
/// graph gets its inputs bound (<see cref="GraphInputs.Bind"/>) and its MLP sites instrumented with in-graph counts
/// (<see cref="Surgery.InstrumentStats"/>), or, when dense activations are asked for, exposed as outputs.
/// </summary>
public sealed record AnalysisPlan(IReadOnlyList<MlpSite> Sites, IReadOnlyList<LayerPlan> Layers, ModelProto Graph, bool Rewritten,
    bool UsesAttentionMask, long? VocabSize, long? MaxSeqLen, float? ExportedThreshold = null)
{
    /// <summary>The graph returns in-graph counts (three outputs per layer, six with top examples), not dense activations.</summary>
    public bool ReadsCounts => Layers.All(l => l.Outputs.Count >= 3);

    /// <summary>
    /// Plans the analysis of <paramref name="model"/>; <paramref name="dense"/> reads activations instead of in-graph counts;
    /// <paramref name="float16"/> runs the model in fp16 (<see cref="Float16"/>), its counts still in float32;
    /// <paramref name="topExamples"/> K &gt; 0 adds each unit's top K activations of a batch and their histogram to the counts,
    /// as each unit's per-batch top K in fixed shapes when <paramref name="topPerBatch"/> (on a GPU), else as the values above floors.
    /// </summary>
    public static AnalysisPlan For(ModelProto model, IReadOnlyList<string> activations, float threshold, bool dense = false, bool float16 = false, int topExamples = 0,
        bool topPerBatch = false)
    {
        var outputs = model.Graph.Output.ToDictionary(o => o.Name);
        long? maxSeq = GraphInputs.MaxPositions(model);

        if (outputs.ContainsKey(StatsReduction.UnitTokensOutput(0)) && outputs.ContainsKey(StatsReduction.UnitsPerSequenceOutput(0)))
        {
            if (!GraphInputs.Required(model).Any(i => i.Name == GraphInputs.TokenInput))
                throw new UserInputException($"The model has no input named input_ids (its inputs: {string.Join(", ", model.Graph.Input.Select(i => i.Name))}).");
            var layers = Enumerable.Range(0, int.MaxValue).TakeWhile(i => outputs.ContainsKey(StatsReduction.UnitTokensOutput(i)))
                .Select(i => StatsLayer(i, (int)outputs[StatsReduction.UnitTokensOutput(i)].Type.TensorType.Shape.Dim[0].DimValue)).ToList();
            if (float16)
                throw new UserInputException("--precision fp16 converts graphs before it adds its own counts; this is a stats export, whose counts would be summed in fp16: analyze the dense export (model.onnx) instead.");
            if (topExamples > 0)
                throw new UserInputException("--top-examples needs the activations, which this stats export reduces to counts when it is written: analyze the dense export (model.onnx) instead.");
            string? baked = model.MetadataProps.FirstOrDefault(p => p.Key == StatsReduction.ThresholdMetadata)?.Value;
            var needed = layers.SelectMany(l => l.Outputs.Select(o => o.Name)).ToList();
            bool extra = model.Graph.Output.Any(o => !needed.Contains(o.Name));
            return new AnalysisPlan([], layers, extra ? OnnxGraph.WithOnlyOutputs(model, needed) : model, extra,
                model.Graph.Input.Any(i => i.Name == GraphInputs.MaskInput), GraphInputs.VocabularySize(model), maxSeq,
                baked == null ? 0f : float.Parse(baked, System.Globalization.CultureInfo.InvariantCulture));
        }

        var (bound, inputs) = GraphInputs.Bind(model);
        var sites = MlpSites.Find(bound, activations);
        long? vocab = GraphInputs.VocabularySize(bound);
        if (vocab is long v) GraphCheck.RequireBatchMajor(bound, sites, v); // in fp32, on the CPU
        if (dense)
        {
            var instrumented = OnnxGraph.WithOnlyOutputs(Surgery.Instrument(bound, sites), sites.Select(s => s.Output).ToList());
            return new AnalysisPlan(sites, sites.Select(DenseLayer).ToList(), float16 ? Float16.Convert(instrumented) : instrumented, true,
                inputs.HasAttentionMask, vocab, maxSeq);
        }
        if (float16)
        {
            bound = Float16.Convert(bound); // the counts added below cast the activations back to float32
            sites = MlpSites.Find(bound, activations);
        }
        return new AnalysisPlan(sites, sites.Select(s => StatsLayer(s.Layer, s.DFf, topExamples, topPerBatch)).ToList(),
            Surgery.InstrumentStats(bound, sites, threshold, topExamples, topPerBatch), true,
            true, vocab, maxSeq);
    }

    static LayerPlan DenseLayer(MlpSite site) =>
        new(site.Output, site.DFf, [new LayerOutput(site.Output, site.Layout == "tokens_dff" ? (b, t, d) => [b * t, d] : (b, t, d) => [b, t, d])]);

    static LayerPlan StatsLayer(int layer, int dFf, int topExamples = 0, bool topPerBatch = false) => new($"mlp_hidden.{layer}", dFf,
    [
        new LayerOutput(StatsReduction.ActiveUnitsOutput(layer), (b, t, _) => [b, t]),
        new LayerOutput(StatsReduction.UnitsPerSequenceOutput(layer), (b, _, _) => [b]),
        new LayerOutput(StatsReduction.UnitTokensOutput(layer), (_, _, d) => [d]),
        .. topExamples == 0 ? Array.Empty<LayerOutput>() : topPerBatch ? new[]
        {
            new LayerOutput(StatsReduction.TopTokensOutput(layer), (_, _, d) => [d, topExamples]),
            new LayerOutput(StatsReduction.TopValuesOutput(layer), (_, _, d) => [d, topExamples]),
            new LayerOutput(StatsReduction.HistogramOutput(layer), (_, _, d) => [StatsReduction.HistogramBins, d]),
        } : new[]
        {
            new LayerOutput(StatsReduction.TopCandidatesOutput(layer), (_, _, _) => null),
            new LayerOutput(StatsReduction.TopValuesOutput(layer), (_, _, _) => null),
            new LayerOutput(StatsReduction.HistogramOutput(layer), (_, _, d) => [StatsReduction.HistogramBins, d]),
        },
    ]);

    /// <summary>
    /// Adds one batch of in-graph counts (<see cref="StatsReduction"/>: active units per token [B, T], distinct units per
    /// window [B], tokens per unit [d_ff]) to a layer's accumulator; padded positions and empty windows count in no statistic.
    /// </summary>
    public static void AddStatsBatch(LayerUnitUse use, bool[] real, int b, int t, ReadOnlySpan<long> perToken, ReadOnlySpan<long> perSequence,
        ReadOnlySpan<long> perUnit, StatsScratch scratch)
    {
        scratch.UnitsPerToken.Clear();
        scratch.UnitsPerSequence.Clear();
        for (int s = 0; s < b; s++)
        {
            bool anyReal = false;
            for (int p = s * t; p < (s + 1) * t; p++)
                if (real[p]) { scratch.UnitsPerToken.Add((int)perToken[p]); anyReal = true; }
            if (anyReal) scratch.UnitsPerSequence.Add((int)perSequence[s]);
        }
        use.AddBatch(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(scratch.UnitsPerToken),
                     System.Runtime.InteropServices.CollectionsMarshal.AsSpan(scratch.UnitsPerSequence), perUnit);
    }
}

/// <summary>Where the windows of one batch come from: per window, its document index and its first token's offset there.</summary>
public sealed record BatchOrigin(long[] WindowDocument, long[] WindowStart, int SeqLen)
{
    /// <summary>The (document, position) of the token at flat index b·seq + t of the batch.</summary>
    public (long Document, int Position) Of(long flat) => (WindowDocument[flat / SeqLen], (int)(WindowStart[flat / SeqLen] + flat % SeqLen));

    /// <summary>
    /// Adds one batch's in-graph top-example candidates (<see cref="StatsReduction.TopCandidatesOutput"/>: flat indices
    /// token·d_ff + unit, and their values) and histogram ([bins, d_ff]) to a layer's accumulators.
    /// </summary>
    public void AddTopExamples(LayerExamples layer, ReadOnlySpan<float> values, ReadOnlySpan<long> candidates, ReadOnlySpan<long> histogram)
    {
        int dFf = layer.Top.DFf;
        for (int i = 0; i < candidates.Length; i++)
        {
            var (document, position) = Of(candidates[i] / dFf);
            layer.Top.Add((int)(candidates[i] % dFf), new TopExample(values[i], document, position));
        }
        layer.Histogram.AddBinMajor(histogram);
    }
}

/// <summary>Reused lists for <see cref="AnalysisPlan.AddStatsBatch"/> (no allocation per batch).</summary>
public sealed class StatsScratch
{
    internal readonly List<int> UnitsPerToken = [];
    internal readonly List<int> UnitsPerSequence = [];
}
