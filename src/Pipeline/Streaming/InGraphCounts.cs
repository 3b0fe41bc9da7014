using Microsoft.ML;
using Microsoft.ML.Data;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>A batch's in-graph outputs as two ML.NET columns: the int64 ones and the float32 ones, each in output order.</summary>
public sealed class CountsRow
{
    [ColumnName(InGraphCounts.Column), VectorType] public long[] Counts = [];
    [ColumnName(InGraphCounts.ValuesColumn), VectorType] public float[] Values = [];
    [ColumnName(InGraphCounts.LengthsColumn), VectorType] public long[] Lengths = [];
}

/// <summary>
/// The floors (<see cref="StatsReduction.TopFloorInput"/>) the next batch's graph compares activations with: published by
/// whoever adds batches to the examples (the counting thread on a GPU), copied into the runner before each run. A floor
/// published a batch late is lower, so it only lets more candidates out; the result is the same. Until the first batch is
/// counted there are none, and the graph takes each unit's K largest of the batch (<see cref="StatsReduction.TopPerBatchInput"/>);
/// <c>alwaysPerBatch</c> asks for that on every batch (on a GPU).
/// </summary>
public sealed class TopFloors(UnitExamples examples, float threshold, IReadOnlyList<string> inputs, bool alwaysPerBatch)
{
    float[][]? _current; // null until the first batch is counted: the graph then takes each unit's top K of the batch

    /// <summary>The graph inputs and their lengths, for <see cref="ModelRunner"/>.</summary>
    public IReadOnlyList<(string Name, int Length)> Inputs =>
        [.. inputs.Select((name, l) => (name, examples.Layers[l].Top.DFf)), (StatsReduction.TopPerBatchInput, 1)];

    /// <summary>Takes the floors of the examples as they are now (call on the thread that adds to them).</summary>
    public void Publish()
    {
        var next = examples.Layers.Select(l => new float[l.Top.DFf]).ToArray();
        for (int l = 0; l < next.Length; l++) examples.Layers[l].Top.WriteFloors(next[l], threshold);
        Volatile.Write(ref _current, next);
    }

    /// <summary>Writes the latest published floors into the runner's inputs.</summary>
    public void CopyTo(ModelRunner runner)
    {
        var current = Volatile.Read(ref _current);
        runner.FloatInput(StatsReduction.TopPerBatchInput)[0] = current == null || alwaysPerBatch ? 1 : 0;
        for (int l = 0; l < inputs.Count; l++)
            if (current == null) runner.FloatInput(inputs[l]).Fill(threshold);
            else current[l].CopyTo(runner.FloatInput(inputs[l]));
    }
}

/// <summary>
/// The one ONNX Runtime runner behind an ML.NET transform: each batch row goes through <see cref="ModelRunner"/> (outputs
/// bound once; on a GPU only the counts leave it) and comes out as a column holding, layer after layer, the graph's
/// int64 outputs (<see cref="Sparsity.Export.StatsReduction"/>): active units per token [B·T], distinct units per
/// window [B], tokens per unit [d_ff], and with top examples the candidates [n] and histogram [bins·d_ff]; the candidates'
/// values [n] go to a float column, and every output's length to a third (candidates vary per batch). ApplyOnnxModel
/// would allocate every input and output afresh on every batch.
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
    /// The transform, fitted on <paramref name="batches"/>; <paramref name="floors"/> feeds the top-example floors when
    /// asked for. The runner is not thread-safe: read it through one cursor.
    /// </summary>
    public static ITransformer Fit(MLContext ml, IDataView batches, ModelRunner runner, int outputs, TopFloors? floors)
    {
        var estimator = ml.Transforms.CustomMapping<BatchRow, CountsRow>((batch, row) => Run(runner, outputs, floors, batch, row), contractName: null,
            inputSchemaDefinition: CorpusBatches.Schema(runner.Batch, runner.SeqLen));
        return estimator.Fit(batches);
    }

    static void Run(ModelRunner runner, int outputs, TopFloors? floors, BatchRow batch, CountsRow row)
    {
        floors?.CopyTo(runner);
        runner.Run(batch.InputIds, batch.AttentionMask);
        int longs = 0, floats = 0;
        if (row.Lengths.Length != outputs) row.Lengths = new long[outputs];
        for (int i = 0; i < outputs; i++)
            if (runner.IsFloat(i)) floats += (int)(row.Lengths[i] = runner.Floats(i).Length);
            else longs += (int)(row.Lengths[i] = runner.Longs(i).Length);
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
