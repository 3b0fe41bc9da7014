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
/// Each unit's floor (only an activation above it can still enter its top K; <see cref="UnitTopExamples.WriteFloors"/>),
/// published by whoever adds batches to the examples (the counting thread on a GPU) and applied to the next batch's
/// candidates. A floor published a batch late is lower, so it only lets more through; the result is the same.
/// <para>Above floors (<c>perBatch</c> false, the CPU): the floors are graph inputs (<see cref="StatsReduction.TopFloorInput"/>),
/// copied into the runner before each run; until the first batch is counted there are none, and the graph takes each
/// unit's K largest of the batch (<see cref="StatsReduction.TopPerBatchInput"/>).</para>
/// <para>Per batch (a GPU): the graph returns each unit's K largest of every batch in fixed shapes
/// (<see cref="StatsReduction.TopTokensOutput"/>), and <see cref="Keep"/> keeps those above the floors on the host.</para>
/// </summary>
public sealed class TopFloors(UnitExamples examples, float threshold, IReadOnlyList<string> inputs, bool perBatch)
{
    float[][]? _current; // null until the first batch is counted
    readonly (long[] Candidates, float[] Values)[] _kept = perBatch
        ? [.. examples.Layers.Select(l => (new long[l.Top.DFf * l.Top.K], new float[l.Top.DFf * l.Top.K]))] : [];

    /// <summary>Whether the graph returns each unit's per-batch top K (<see cref="Keep"/>) rather than taking floors as inputs.</summary>
    public bool PerBatch => perBatch;

    /// <summary>The graph inputs and their lengths, for <see cref="ModelRunner"/> (none per batch).</summary>
    public IReadOnlyList<(string Name, int Length)> Inputs => perBatch ? []
        : [.. inputs.Select((name, l) => (name, examples.Layers[l].Top.DFf)), (StatsReduction.TopPerBatchInput, 1)];

    /// <summary>Takes the floors of the examples as they are now (call on the thread that adds to them).</summary>
    public void Publish()
    {
        var next = examples.Layers.Select(l => new float[l.Top.DFf]).ToArray();
        for (int l = 0; l < next.Length; l++) examples.Layers[l].Top.WriteFloors(next[l], threshold);
        Volatile.Write(ref _current, next);
    }

    /// <summary>Writes the latest published floors into the runner's inputs (floors as graph inputs only).</summary>
    public void CopyTo(ModelRunner runner)
    {
        if (perBatch) return;
        var current = Volatile.Read(ref _current);
        runner.FloatInput(StatsReduction.TopPerBatchInput)[0] = current == null ? 1 : 0;
        for (int l = 0; l < inputs.Count; l++)
            if (current == null) runner.FloatInput(inputs[l]).Fill(threshold);
            else current[l].CopyTo(runner.FloatInput(inputs[l]));
    }

    /// <summary>
    /// Of layer <paramref name="layer"/>'s per-batch top K ([d_ff, K] token indices and values, largest first), keeps those
    /// above the floors as candidates (flat token·d_ff + unit, and values); returns them, valid until the next call.
    /// </summary>
    public (ReadOnlyMemory<long> Candidates, ReadOnlyMemory<float> Values) Keep(int layer, ReadOnlySpan<long> tokens, ReadOnlySpan<float> values)
    {
        var floors = Volatile.Read(ref _current)?[layer];
        var (candidates, kept) = _kept[layer];
        int dFf = examples.Layers[layer].Top.DFf, k = examples.Layers[layer].Top.K, n = 0;
        for (int u = 0; u < dFf; u++)
        {
            float floor = floors?[u] ?? threshold; // inactive units and padding entered as 0, never above the threshold (≥ 0)
            for (int j = u * k; j < (u + 1) * k && values[j] > floor; j++) // largest first: the rest are lower
            {
                candidates[n] = tokens[j] * dFf + u;
                kept[n++] = values[j];
            }
        }
        return (candidates.AsMemory(0, n), kept.AsMemory(0, n));
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
    /// The transform, fitted on <paramref name="batches"/>, reading <paramref name="outputs"/> (the runner's, in order);
    /// <paramref name="floors"/> feeds the top-example floors when asked for. The runner is not thread-safe: read it
    /// through one cursor.
    /// </summary>
    public static ITransformer Fit(MLContext ml, IDataView batches, ModelRunner runner, IReadOnlyList<string> outputs, TopFloors? floors)
    {
        // Which outputs are a per-batch top K (tokens, then values), decided once; the per-output views are reused.
        bool[] topTokens = outputs.Select(o => floors is { PerBatch: true } && StatsReduction.IsTopTokensOutput(o)).ToArray();
        var longs = new ReadOnlyMemory<long>[outputs.Count];
        var floats = new ReadOnlyMemory<float>[outputs.Count];
        var estimator = ml.Transforms.CustomMapping<BatchRow, CountsRow>((batch, row) => Run(runner, topTokens, floors, longs, floats, batch, row), contractName: null,
            inputSchemaDefinition: CorpusBatches.Schema(runner.Batch, runner.SeqLen));
        return estimator.Fit(batches);
    }

    static void Run(ModelRunner runner, bool[] topTokens, TopFloors? floors, ReadOnlyMemory<long>[] longs, ReadOnlyMemory<float>[] floats, BatchRow batch, CountsRow row)
    {
        floors?.CopyTo(runner);
        runner.Run(batch.InputIds, batch.AttentionMask);
        // Each output as it goes into the row; a per-batch top K (tokens, then values) becomes the candidates above the floors.
        int n = topTokens.Length;
        for (int i = 0, top = 0; i < n; i++)
        {
            (longs[i], floats[i]) = (default, default);
            if (topTokens[i])
            {
                (longs[i], floats[i + 1]) = floors!.Keep(top++, runner.Longs(i), runner.Floats(i + 1));
                longs[++i] = default;
            }
            else if (runner.IsFloat(i)) floats[i] = runner.FloatsMemory(i);
            else longs[i] = runner.LongsMemory(i);
        }
        if (row.Lengths.Length != n) row.Lengths = new long[n];
        int longCount = 0, floatCount = 0;
        for (int i = 0; i < n; i++)
        {
            row.Lengths[i] = longs[i].Length + floats[i].Length;
            longCount += longs[i].Length;
            floatCount += floats[i].Length;
        }
        if (row.Counts.Length != longCount) row.Counts = new long[longCount];
        if (row.Values.Length != floatCount) row.Values = new float[floatCount];
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
