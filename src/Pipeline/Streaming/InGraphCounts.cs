using Microsoft.ML;
using Microsoft.ML.Data;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>A batch's in-graph outputs as two ML.NET columns: the int64 ones and the float32 ones, each in output order.</summary>
public sealed class CountsRow
{
    [ColumnName(InGraphCounts.Column), VectorType] public long[] Counts = [];
    [ColumnName(InGraphCounts.ValuesColumn), VectorType] public float[] Values = [];
}

/// <summary>
/// The one ONNX Runtime runner behind an ML.NET transform: each batch row goes through <see cref="ModelRunner"/> (outputs
/// bound once; on a GPU only the counts leave it) and comes out as a column holding, layer after layer, the graph's
/// int64 outputs (<see cref="Sparsity.Export.StatsReduction"/>): active units per token [B·T], distinct units per
/// window [B], tokens per unit [d_ff], and with top examples the tokens [K·d_ff] and histogram [bins·d_ff]; the top
/// values [K·d_ff] go to a float column. ApplyOnnxModel would allocate every input and output afresh on every batch.
/// </summary>
public static class InGraphCounts
{
    /// <summary>Name of the int64 column.</summary>
    public const string Column = "in_graph_counts";
    /// <summary>Name of the float32 column (top values; empty without top examples).</summary>
    public const string ValuesColumn = "in_graph_values";

    /// <summary>The transform, fitted on <paramref name="batches"/>. The runner is not thread-safe: read it through one cursor.</summary>
    public static ITransformer Fit(MLContext ml, IDataView batches, ModelRunner runner, int outputs)
    {
        var estimator = ml.Transforms.CustomMapping<BatchRow, CountsRow>((batch, row) => Run(runner, outputs, batch, row), contractName: null,
            inputSchemaDefinition: CorpusBatches.Schema(runner.Batch, runner.SeqLen));
        return estimator.Fit(batches);
    }

    static void Run(ModelRunner runner, int outputs, BatchRow batch, CountsRow row)
    {
        runner.Run(batch.InputIds, batch.AttentionMask);
        int longs = 0, floats = 0;
        for (int i = 0; i < outputs; i++)
            if (runner.IsFloat(i)) floats += runner.Floats(i).Length;
            else longs += runner.Longs(i).Length;
        if (row.Counts.Length != longs) row.Counts = new long[longs];
        if (row.Values.Length != floats) row.Values = new float[floats];
        Span<long> counts = row.Counts;
        Span<float> values = row.Values;
        for (int i = 0; i < outputs; i++)
            if (runner.IsFloat(i))
            {
                runner.Floats(i).CopyTo(values);
                values = values[runner.Floats(i).Length..];
            }
            else
            {
                runner.Longs(i).CopyTo(counts);
                counts = counts[runner.Longs(i).Length..];
            }
    }
}
