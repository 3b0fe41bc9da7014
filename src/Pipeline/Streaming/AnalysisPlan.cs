using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>An output column of a layer and its shape for a batch of B windows of T tokens (null: known only after the
/// run).</summary>
public sealed record LayerOutput(string Name, Func<int, int, int, int[]?> ShapeOf)
{
    /// <summary>The output's shape for a batch of <paramref name="batch"/> windows of <paramref name="seqLen"/> tokens
    /// and <paramref name="dFf"/> units (null: known only after the run).</summary>
    public int[]? Shape(int batch, int seqLen, int dFf) => ShapeOf(batch, seqLen, dFf);
}

/// <summary>What to read of one layer: its outputs (dense activations, or the three in-graph counts).</summary>
public sealed record LayerPlan(string Name, int DFf, IReadOnlyList<LayerOutput> Outputs)
{
    /// <summary>An encoder-decoder layer's stack (its counts read the source's or the target's positions); <c>None</c>
    /// otherwise.</summary>
    public ModelStack Stack { get; init; }

    /// <summary>Its index within the stack.</summary>
    public int StackIndex { get; init; }
}

/// <summary>
/// What to run and read for a model: <see cref="Graph"/>, the graph ONNX Runtime runs (its outputs are only what the
/// analysis reads), and how each layer's outputs become counts. This project's stats variant runs as it is; any other
/// graph gets its inputs bound (<see cref="GraphInputs.Bind"/>) and its MLP sites instrumented with in-graph counts
/// (<see cref="Surgery.InstrumentStats"/>), or, when dense activations are asked for, exposed as outputs.
/// </summary>
public sealed record AnalysisPlan(
    IReadOnlyList<MlpSite> Sites,
    IReadOnlyList<LayerPlan> Layers,
    ModelProto Graph,
    bool Rewritten,
    bool UsesAttentionMask,
    long? VocabSize,
    long? MaxSeqLen,
    float? ExportedThreshold = null
)
{
    /// <summary>Whether the top windows come best first (a TopK of each unit's windows); else every window, in batch
    /// order.</summary>
    public bool TopWindowsSorted { get; init; } = true;

    /// <summary>Whether each layer returns its histogram's sample (<see cref="StatsReduction.FirstWindowOutput"/>) for
    /// the host to bin, not the bins.</summary>
    public bool HistogramOnHost { get; init; }

    /// <summary>
    /// The graph as it is run before the counts are added (inputs bound, in the asked precision), for the forward-alone
    /// timing; null for stats exports and dense activations. Its weights are shared with <see cref="Graph"/>'s.
    /// </summary>
    public ModelProto? Prepared { get; init; }

    /// <summary>An encoder-decoder model: its rows are pairs (<see cref="EncoderDecoder"/>), twice the window length
    /// wide.</summary>
    public bool Pairs => Layers.Any(l => l.Stack != ModelStack.None);

    /// <summary>The graph's in-graph outputs and how a batch of them becomes counts; null when it returns dense
    /// activations.</summary>
    public InGraphLayout? Layout { get; init; }

    /// <summary>The graph returns in-graph counts (<see cref="Layout"/>), not dense activations.</summary>
    public bool ReadsCounts => Layout != null;

    /// <summary>
    /// Plans the analysis of <paramref name="model"/>; <paramref name="dense"/> reads activations instead of in-graph
    /// counts;
    /// <paramref name="precision"/> fp16 or bf16 runs the model in that type (<see cref="Float16"/>; a graph already in
    /// it runs as it is), its counts exact in float32; <paramref name="topExamples"/> K &gt; 0 adds each unit's top
    /// windows of a batch and their histogram to the counts (<paramref name="histogramOnHost"/>: the histogram's
    /// sample, binned on the host, cheaper on the CPU); <paramref name="halfCounts"/>: fp16 activations counted through
    /// fp16 products (<see cref="StatsReduction.HalfExactSum"/>); <paramref name="windowsPerBatch"/>: the batch size,
    /// when known (top examples skip their TopK when it is at most K).
    /// </summary>
    public static AnalysisPlan For(
        ModelProto model,
        IReadOnlyList<string> activations,
        float threshold,
        bool dense = false,
        Precision precision = Precision.Fp32,
        int topExamples = 0,
        bool histogramOnHost = false,
        bool halfCounts = false,
        int? windowsPerBatch = null
    )
    {
        var outputs = model.Graph.Output.ToDictionary(o => o.Name);
        long? maxSeq = GraphInputs.MaxPositions(model);

        if (
            outputs.ContainsKey(StatsReduction.UnitTokensOutput(0))
            && outputs.ContainsKey(StatsReduction.UnitsPerSequenceOutput(0))
        )
        {
            if (!GraphInputs.Required(model).Any(i => i.Name == GraphInputs.TokenInput))
                throw new UserInputException(
                    $"The model has no input named input_ids (its inputs: {string.Join(", ", model.Graph.Input.Select(i => i.Name))})."
                );
            var exported = new InGraphLayout(
                Enumerable
                    .Range(0, int.MaxValue)
                    .TakeWhile(i => outputs.ContainsKey(StatsReduction.UnitTokensOutput(i)))
                    .Select(i => new InGraphLayer(
                        i,
                        (int)outputs[StatsReduction.UnitTokensOutput(i)].Type.TensorType.Shape.Dim[0].DimValue
                    ))
                    .ToList()
            );
            var layers = exported.Layers.Select(l => StatsLayer(exported, l)).ToList();
            if (precision != Precision.Fp32)
                throw new UserInputException(
                    $"--precision {precision.Name()} converts graphs before it adds its own counts; this is a stats export, whose counts would be summed in half precision: analyze the dense export (model.onnx) instead."
                );
            if (topExamples > 0)
                throw new UserInputException(
                    "--top-examples needs the activations, which this stats export reduces to counts when it is written: analyze the dense export (model.onnx) instead."
                );
            string? baked = model.MetadataProps.FirstOrDefault(p => p.Key == StatsReduction.ThresholdMetadata)?.Value;
            var needed = layers.SelectMany(l => l.Outputs.Select(o => o.Name)).ToList();
            bool extra = model.Graph.Output.Any(o => !needed.Contains(o.Name));
            return new AnalysisPlan(
                [],
                layers,
                extra ? OnnxGraph.WithOnlyOutputs(model, needed) : model,
                extra,
                model.Graph.Input.Any(i => i.Name == GraphInputs.MaskInput),
                GraphInputs.VocabularySize(model),
                maxSeq,
                baked == null ? 0f : float.Parse(baked, System.Globalization.CultureInfo.InvariantCulture)
            )
            {
                Layout = exported,
            };
        }

        var (bound, inputs) = GraphInputs.Bind(model);
        var sites = MlpSites.Find(bound, activations);
        long? vocab = GraphInputs.VocabularySize(bound);
        if (vocab is long v)
            GraphCheck.RequireBatchMajor(bound, sites, v); // in fp32, on the CPU
        if (dense)
        {
            // ML.NET's ONNX transform reads every initializer's type and has none for half precision.
            if (
                precision != Precision.Fp32
                || bound.Graph.Initializer.Any(t =>
                    t.DataType is (int)TensorProto.Types.DataType.Float16 or (int)TensorProto.Types.DataType.Bfloat16
                )
            )
                throw new UserInputException(
                    "--dense-activations reads activations through ML.NET's ONNX transform, which cannot load graphs with fp16 or bf16 weights: "
                        + "leave it out (the in-graph counts are the same numbers)."
                );
            var instrumented = OnnxGraph.WithOnlyOutputs(
                Surgery.Instrument(bound, sites),
                sites.Select(s => s.Output).ToList()
            );
            return new AnalysisPlan(
                sites,
                sites.Select(DenseLayer).ToList(),
                Float16.Convert(instrumented, precision.Type()),
                true,
                inputs.HasAttentionMask,
                vocab,
                maxSeq
            );
        }
        if (precision != Precision.Fp32)
        {
            bound = Float16.Convert(bound, precision.Type()); // the counts added below compare in that type, sum in float32
            sites = MlpSites.Find(bound, activations);
        }
        var layout = new InGraphLayout(
            sites.Select(s => new InGraphLayer(s.Layer, s.DFf, s.Stack)).ToList(),
            topExamples,
            histogramOnHost
        );
        return new AnalysisPlan(
            sites,
            layout
                .Layers.Zip(sites, (l, s) =>
                    StatsLayer(layout, l) is var layer && s.Stack != ModelStack.None
                        ? layer with
                        {
                            Name = s.DisplayName,
                            Stack = s.Stack,
                            StackIndex = s.StackIndex,
                        }
                        : layer
                )
                .ToList(),
            Surgery.InstrumentStats(bound, sites, threshold, topExamples, histogramOnHost, halfCounts, windowsPerBatch),
            true,
            true,
            vocab,
            maxSeq
        )
        {
            TopWindowsSorted = windowsPerBatch is not int b || topExamples < b,
            HistogramOnHost = histogramOnHost,
            Prepared = bound,
            Layout = layout,
        };
    }

    static LayerPlan DenseLayer(MlpSite site) =>
        new(
            site.Output,
            site.DFf,
            [
                new LayerOutput(
                    site.Output,
                    site.Layout == "tokens_dff" ? (b, t, d) => [b * t, d] : (b, t, d) => [b, t, d]
                ),
            ]
        );

    // A layer's outputs as the runner fetches them: the layout's, in its order and shapes.
    static LayerPlan StatsLayer(InGraphLayout layout, InGraphLayer layer) =>
        new(
            $"mlp_hidden.{layer.Layer}",
            layer.DFf,
            layout
                .OutputsOf(layer, 1, 1)
                .Select(
                    (o, i) =>
                        new LayerOutput(o.Name, (b, t, _) =>
                            [.. layout.OutputsOf(layer, b, t)[i].Shape.Select(d => (int)d)]
                        )
                )
                .ToList()
        );
}

/// <summary>Where the windows of one batch come from: per window, its document index and its first token's offset
/// there.</summary>
public sealed record BatchOrigin(long[] WindowDocument, long[] WindowStart, int SeqLen)
{
    /// <summary>Window b's (document, first token's offset).</summary>
    public (long Document, int Start) Window(int b) => (WindowDocument[b], (int)WindowStart[b]);
}
