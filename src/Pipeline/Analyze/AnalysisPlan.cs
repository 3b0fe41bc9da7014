using Microsoft.ML;
using Microsoft.ML.Data;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;

namespace Sparsity.Pipeline.Analyze;

/// <summary>Adds one scored row's outputs of a layer to its accumulator.</summary>
public delegate void LayerReader(LayerUnitUse use, bool[] realToken, float threshold, int batch, int seqLen);

/// <summary>An output column of a layer and its shape for a batch of B windows of T tokens.</summary>
public sealed record LayerOutput(string Name, Func<int, int, int, int[]> ShapeOf)
{
    public int[] Shape(int batch, int seqLen, int dFf) => ShapeOf(batch, seqLen, dFf);
}

/// <summary>How to read one layer: its outputs and how they become counts.</summary>
public sealed record LayerPlan(string Name, int DFf, IReadOnlyList<LayerOutput> Outputs, Func<DataViewRow, DataViewSchema, LayerReader> Reader);

/// <summary>
/// What to run and read for a model: this project's stats variant (counts computed in the runtime), or
/// dense activations of any graph (its MLP sites, instrumented on the fly when not already outputs).
/// </summary>
public sealed record AnalysisPlan(IReadOnlyList<MlpSite> Sites, IReadOnlyList<LayerPlan> Layers, bool NeedsInstrumenting,
    bool UsesAttentionMask, long? VocabSize, long? MaxSeqLen, float? ExportedThreshold = null)
{
    public static AnalysisPlan For(ModelProto model, IReadOnlyList<string> activations)
    {
        var graph = model.Graph;
        var outputs = graph.Output.ToDictionary(o => o.Name);
        bool mask = graph.Input.Any(i => i.Name == "attention_mask");
        if (!graph.Input.Any(i => i.Name == "input_ids"))
            throw new Training.UserInputException($"The model has no input named input_ids (its inputs: {string.Join(", ", graph.Input.Select(i => i.Name))}).");
        long? vocab = OnnxGraph.VocabularySize(model);
        long? maxSeq = graph.Initializer.FirstOrDefault(t => t.Name == "wpe.weight")?.Dims[0];

        if (outputs.ContainsKey(ModelExporter.UnitTokensOutput(0)))
        {
            var layers = Enumerable.Range(0, int.MaxValue).TakeWhile(i => outputs.ContainsKey(ModelExporter.UnitTokensOutput(i)))
                .Select(i => StatsLayer(i, (int)outputs[ModelExporter.UnitTokensOutput(i)].Type.TensorType.Shape.Dim[0].DimValue)).ToList();
            string? threshold = model.MetadataProps.FirstOrDefault(p => p.Key == ModelExporter.ThresholdMetadata)?.Value;
            return new AnalysisPlan([], layers, false, mask, vocab, maxSeq,
                threshold == null ? 0f : float.Parse(threshold, System.Globalization.CultureInfo.InvariantCulture));
        }

        var sites = MlpSites.Find(model, activations);
        var dense = sites.Select(s => DenseLayer(s)).ToList();
        return new AnalysisPlan(sites, dense, sites.Any(s => !outputs.ContainsKey(s.Output)), mask, vocab, maxSeq);
    }

    static LayerPlan DenseLayer(MlpSite site)
    {
        var output = new LayerOutput(site.Output, site.Layout == "tokens_dff" ? (b, t, d) => [b * t, d] : (b, t, d) => [b, t, d]);
        return new LayerPlan(site.Output, site.DFf, [output], (row, schema) =>
        {
            var getter = row.GetGetter<VBuffer<float>>(schema[site.Output]);
            VBuffer<float> buffer = default;
            return (use, real, threshold, b, t) =>
            {
                getter(ref buffer);
                use.AddDense(buffer.GetValues(), b, t, real, threshold); // flattened [b·t, d_ff] is the same memory as [b, t, d_ff]
            };
        });
    }

    static LayerPlan StatsLayer(int layer, int dFf)
    {
        string perToken = ModelExporter.ActiveUnitsOutput(layer), perSequence = ModelExporter.SequenceUnitTokensOutput(layer), perUnit = ModelExporter.UnitTokensOutput(layer);
        return new LayerPlan($"mlp_hidden.{layer}", dFf,
            [new LayerOutput(perToken, (b, t, _) => [b, t]), new LayerOutput(perSequence, (b, _, d) => [b, d]), new LayerOutput(perUnit, (_, _, d) => [d])],
            (row, schema) =>
            {
                var tokenGetter = row.GetGetter<VBuffer<long>>(schema[perToken]);
                var sequenceGetter = row.GetGetter<VBuffer<long>>(schema[perSequence]);
                var unitGetter = row.GetGetter<VBuffer<long>>(schema[perUnit]);
                VBuffer<long> tokens = default, sequences = default, units = default;
                var unitsPerToken = new List<int>();
                var unitsPerSequence = new List<int>();
                return (use, real, _, b, t) =>
                {
                    tokenGetter(ref tokens);
                    sequenceGetter(ref sequences);
                    unitGetter(ref units);
                    var perTokenCounts = tokens.GetValues();
                    var perSequenceCounts = sequences.GetValues();
                    unitsPerToken.Clear();
                    unitsPerSequence.Clear();
                    for (int s = 0; s < b; s++)
                    {
                        bool anyReal = false;
                        for (int p = s * t; p < (s + 1) * t; p++)
                            if (real[p]) { unitsPerToken.Add((int)perTokenCounts[p]); anyReal = true; }
                        if (!anyReal) continue;
                        int distinct = 0;
                        foreach (long c in perSequenceCounts.Slice(s * dFf, dFf)) if (c > 0) distinct++;
                        unitsPerSequence.Add(distinct);
                    }
                    use.AddBatch(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(unitsPerToken),
                                 System.Runtime.InteropServices.CollectionsMarshal.AsSpan(unitsPerSequence), units.GetValues());
                };
            });
    }
}
