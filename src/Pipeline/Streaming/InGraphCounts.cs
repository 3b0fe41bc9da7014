using Microsoft.ML;
using Microsoft.ML.Data;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>A batch's in-graph counts as one ML.NET column (layout: <see cref="InGraphCounts"/>).</summary>
public sealed class CountsRow
{
    [ColumnName(InGraphCounts.Column), VectorType] public long[] Counts = [];
}

/// <summary>
/// The one ONNX Runtime runner behind an ML.NET transform: each batch row goes through <see cref="ModelRunner"/> (outputs
/// bound once; on a GPU only the counts leave it) and comes out as one column holding, layer after layer, the graph's
/// counts (<see cref="Sparsity.Export.StatsReduction"/>): active units per token [B·T], distinct units per window [B],
/// tokens per unit [d_ff]. ApplyOnnxModel would allocate every input and output afresh on every batch.
/// </summary>
public static class InGraphCounts
{
    /// <summary>Name of the counts column.</summary>
    public const string Column = "in_graph_counts";

    /// <summary>The transform, fitted on <paramref name="batches"/>. The runner is not thread-safe: read it through one cursor.</summary>
    public static ITransformer Fit(MLContext ml, IDataView batches, ModelRunner runner, int layers)
    {
        var estimator = ml.Transforms.CustomMapping<BatchRow, CountsRow>((batch, row) => Run(runner, layers, batch, row), contractName: null,
            inputSchemaDefinition: CorpusBatches.Schema(runner.Batch, runner.SeqLen));
        return estimator.Fit(batches);
    }

    static void Run(ModelRunner runner, int layers, BatchRow batch, CountsRow row)
    {
        runner.Run(batch.InputIds, batch.AttentionMask);
        int length = 0;
        for (int i = 0; i < 3 * layers; i++) length += runner.Longs(i).Length;
        if (row.Counts.Length != length) row.Counts = new long[length];
        var target = row.Counts.AsSpan();
        for (int i = 0; i < 3 * layers; i++)
        {
            runner.Longs(i).CopyTo(target);
            target = target[runner.Longs(i).Length..];
        }
    }
}
