using System.Collections.Concurrent;
using Microsoft.ML;
using Microsoft.ML.Data;
using Sparsity.Analysis;

namespace Sparsity.Pipeline.Streaming;

// Turning each scored batch into counts: in-graph outputs (inline or on a counting thread) or dense activations.
public static partial class Analyzer
{
    /// <summary>
    /// Reads one scored row: <see cref="Fetch"/> runs the model (the getters are lazy), <see cref="Add"/> counts (or
    /// hands the counts to a counting thread), <see cref="Finish"/> waits until every batch is counted.
    /// </summary>
    sealed record LayerReader(
        Action Fetch,
        Action<LayerUnitUse[], UnitExamples?, bool[], bool[]?, BatchOrigin> Add,
        Action Finish
    );

    // One batch's in-graph outputs, copied for the counting thread (buffers reused, so they may be longer than the
    // batch's).
    sealed record CountedBatch(
        long[] Counts,
        float[] Values,
        long[] Lengths,
        bool[] Real,
        bool[]? RealTarget,
        BatchOrigin Origin
    );

    static LayerReader CountsReader(
        DataViewRow scored,
        AnalysisPlan plan,
        float threshold,
        int B,
        int T,
        bool background
    )
    {
        var getter = scored.GetGetter<VBuffer<long>>(scored.Schema[InGraphCounts.Column]);
        var valuesGetter = scored.GetGetter<VBuffer<float>>(scored.Schema[InGraphCounts.ValuesColumn]);
        var lengthsGetter = scored.GetGetter<VBuffer<long>>(scored.Schema[InGraphCounts.LengthsColumn]);
        VBuffer<long> buffer = default,
            lengthsBuffer = default;
        VBuffer<float> valuesBuffer = default;
        var scratch = new CountedScratch();
        var layout = plan.Layout!;
        void Count(
            LayerUnitUse[] uses,
            UnitExamples? examples,
            bool[] realSource,
            bool[]? realTarget,
            BatchOrigin origin,
            ReadOnlySpan<long> counts,
            ReadOnlySpan<float> values,
            ReadOnlySpan<long> lengths
        ) =>
            layout.Add(
                counts,
                values,
                lengths,
                B,
                T,
                realSource,
                realTarget,
                uses,
                examples,
                origin.Window,
                threshold,
                plan.TopWindowsSorted,
                scratch
            );
        void Fetch()
        {
            getter(ref buffer);
            valuesGetter(ref valuesBuffer);
            lengthsGetter(ref lengthsBuffer);
        }
        if (!background)
            return new(
                Fetch,
                (uses, examples, real, realTarget, origin) =>
                    Count(
                        uses,
                        examples,
                        real,
                        realTarget,
                        origin,
                        buffer.GetValues(),
                        valuesBuffer.GetValues(),
                        lengthsBuffer.GetValues()
                    ),
                () => { }
            );

        // On a GPU the host only waits while the device runs the next batch: count the last one meanwhile, on a thread
        // of its own (outputs, mask and origin are copied; two batches may wait, their buffers are reused).
        var queue = new BlockingCollection<(CountedBatch Batch, LayerUnitUse[] Uses, UnitExamples? Examples)>(
            boundedCapacity: 2
        );
        var spare = new ConcurrentQueue<CountedBatch>();
        var failed = new CancellationTokenSource();
        var worker = Task.Run(() =>
        {
            try
            {
                foreach (var (batch, uses, examples) in queue.GetConsumingEnumerable())
                {
                    Count(
                        uses,
                        examples,
                        batch.Real,
                        batch.RealTarget,
                        batch.Origin,
                        batch.Counts,
                        batch.Values,
                        batch.Lengths
                    );
                    spare.Enqueue(batch);
                }
            }
            catch
            {
                failed.Cancel();
                throw;
            }
        });
        return new(
            Fetch,
            (uses, examples, real, realTarget, origin) =>
            {
                var counts = buffer.GetValues();
                var values = valuesBuffer.GetValues();
                var lengths = lengthsBuffer.GetValues();
                var batch =
                    spare.TryDequeue(out var reused)
                    && reused.Counts.Length >= counts.Length
                    && reused.Values.Length >= values.Length
                        ? reused
                        : new CountedBatch(
                            new long[counts.Length],
                            new float[values.Length],
                            new long[lengths.Length],
                            new bool[real.Length],
                            realTarget == null ? null : new bool[realTarget.Length],
                            new BatchOrigin(new long[B], new long[B], T)
                        );
                counts.CopyTo(batch.Counts);
                values.CopyTo(batch.Values);
                lengths.CopyTo(batch.Lengths);
                real.CopyTo(batch.Real, 0);
                realTarget?.CopyTo(batch.RealTarget!, 0);
                origin.WindowDocument.CopyTo(batch.Origin.WindowDocument, 0);
                origin.WindowStart.CopyTo(batch.Origin.WindowStart, 0);
                try
                {
                    queue.Add((batch, uses, examples), failed.Token);
                }
                catch (OperationCanceledException)
                {
                    worker.GetAwaiter().GetResult();
                } // the counting thread's own error
            },
            () =>
            {
                queue.CompleteAdding();
                try
                {
                    worker.GetAwaiter().GetResult();
                }
                finally
                {
                    queue.Dispose();
                    failed.Dispose();
                }
            }
        );
    }

    static LayerReader DenseReader(DataViewRow scored, AnalysisPlan plan, float threshold, int B, int T)
    {
        var getters = plan
            .Layers.Select(l => scored.GetGetter<VBuffer<float>>(scored.Schema[l.Outputs[0].Name]))
            .ToArray();
        var buffers = new VBuffer<float>[getters.Length];
        return new(
            () =>
            {
                for (int l = 0; l < getters.Length; l++)
                    getters[l](ref buffers[l]);
            },
            (uses, examples, real, _, origin) =>
            {
                for (int l = 0; l < uses.Length; l++)
                {
                    var activations = buffers[l].GetValues(); // flattened [b·t, d_ff] is the same memory as [b, t, d_ff]
                    uses[l].AddDense(activations, B, T, real, threshold);
                    if (examples == null)
                        continue;
                    examples.Layers[l].Top.AddDense(activations, real, T, origin.Window, threshold);
                    examples.Layers[l].Histogram.AddDense(activations, real, T, threshold);
                }
            },
            () => { }
        );
    }
}
