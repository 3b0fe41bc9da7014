using Microsoft.ML;
using Microsoft.ML.Data;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>A batch's in-graph outputs as two ML.NET columns: the int64 ones and the float32 ones, each in output
/// order.</summary>
public sealed class CountsRow
{
    /// <summary>The int64 outputs, in output order.</summary>
    [ColumnName(InGraphCounts.Column), VectorType]
    public long[] Counts = [];

    /// <summary>The float32 outputs, in output order.</summary>
    [ColumnName(InGraphCounts.ValuesColumn), VectorType]
    public float[] Values = [];

    /// <summary>Each output's element count.</summary>
    [ColumnName(InGraphCounts.LengthsColumn), VectorType]
    public long[] Lengths = [];
}

/// <summary>
/// The one ONNX Runtime runner behind an ML.NET transform: each batch row goes through <see cref="ModelRunner"/>
/// (outputs bound once; on a GPU only the counts leave it) and comes out as a column holding, layer after layer, the
/// graph's int64 outputs (<see cref="Sparsity.Export.StatsReduction"/>): active units per token [B·T], distinct units
/// per window [B], tokens per unit [d_ff], and with top examples the top windows and their peaks' positions [d_ff·k]
/// and the histogram [bins·d_ff]; the peaks [d_ff·k] go to a float column, and every output's length to a third.
/// ApplyOnnxModel would allocate every input and output afresh on every batch.
/// </summary>
public static class InGraphCounts
{
    /// <summary>Name of the int64 column.</summary>
    public const string Column = "in_graph_counts";

    /// <summary>Name of the float32 column (top values; empty without top examples).</summary>
    public const string ValuesColumn = "in_graph_values";

    /// <summary>Name of the column of each output's element count, in output order.</summary>
    public const string LengthsColumn = "in_graph_lengths";

    /// <summary>
    /// The transform, fitted on <paramref name="batches"/>, reading the runner's <paramref name="outputs"/> in order.
    /// The runner is not thread-safe: read it through one cursor.
    /// </summary>
    public static ITransformer Fit(MLContext ml, IDataView batches, ModelRunner runner, IReadOnlyList<string> outputs)
    {
        var longs = new ReadOnlyMemory<long>[outputs.Count]; // per-output views, reused
        var floats = new ReadOnlyMemory<float>[outputs.Count];
        var estimator = ml.Transforms.CustomMapping<BatchRow, CountsRow>(
            (batch, row) => Run(runner, longs, floats, batch, row),
            contractName: null,
            inputSchemaDefinition: CorpusBatches.Schema(runner.Batch, runner.SeqLen)
        );
        return estimator.Fit(batches);
    }

    static void Run(
        ModelRunner runner,
        ReadOnlyMemory<long>[] longs,
        ReadOnlyMemory<float>[] floats,
        BatchRow batch,
        CountsRow row
    )
    {
        runner.Run(batch.InputIds, batch.AttentionMask);
        int n = longs.Length;
        for (int i = 0; i < n; i++)
            (longs[i], floats[i]) = runner.IsFloat(i)
                ? (ReadOnlyMemory<long>.Empty, runner.FloatsMemory(i))
                : (runner.LongsMemory(i), ReadOnlyMemory<float>.Empty);
        if (row.Lengths.Length != n)
            row.Lengths = new long[n];
        int longCount = 0,
            floatCount = 0;
        for (int i = 0; i < n; i++)
        {
            row.Lengths[i] = longs[i].Length + floats[i].Length;
            longCount += longs[i].Length;
            floatCount += floats[i].Length;
        }
        if (row.Counts.Length != longCount)
            row.Counts = new long[longCount];
        if (row.Values.Length != floatCount)
            row.Values = new float[floatCount];
        Span<long> counts = row.Counts;
        Span<float> values = row.Values;
        for (int i = 0; i < n; i++)
        {
            longs[i].Span.CopyTo(counts);
            counts = counts[longs[i].Length..];
            floats[i].Span.CopyTo(values);
            values = values[floats[i].Length..];
        }
    }
}
