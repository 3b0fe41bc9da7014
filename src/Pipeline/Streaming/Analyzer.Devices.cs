using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

// Several devices: the corpus read once, its batches dealt to one stream per device, their counts added.
public static partial class Analyzer
{
    // corpus → tokens → windows → batches, read once; on one device streamed through it, on several dealt to them (each
    // takes the next batch when it is ready), each device counting into accumulators of its own, added when all are
    // done: the counts are integers and the top examples totally ordered, so the result equals one device's, bit for
    // bit.
    static long Stream(
        AnalysisRequest r,
        PreparedModel prepared,
        string modelFile,
        IReadOnlyList<Device> devices,
        long vocab,
        TextTokenizer tokenizer,
        LayerUnitUse[] uses,
        UnitExamples? examples,
        long totalDocuments,
        IProgress<AnalysisProgress>? progress,
        CancellationToken cancel,
        PairSettings? pairs,
        PairTally tally
    )
    {
        var plan = prepared.Plan;
        var batches =
            pairs == null
                ? CorpusBatches.Pack(
                    CorpusBatches.Tokens(r.Corpus, tokenizer, r.SeqLen),
                    r.SeqLen,
                    r.BatchSize,
                    r.MaxTokens,
                    r.ShardIndex,
                    r.ShardCount,
                    vocab
                )
                : CorpusBatches.PackPairs(
                    CorpusBatches.PairTokens(r.Corpus, tokenizer, r.SeqLen, pairs.Source == "reconstruct"),
                    r.SeqLen,
                    r.BatchSize,
                    r.MaxTokens,
                    r.ShardIndex,
                    r.ShardCount,
                    vocab,
                    pairs.DecoderStartId,
                    pairs.PadId,
                    tally
                );
        if (devices.Count == 1)
            return StreamOn(
                r,
                prepared,
                modelFile,
                devices[0],
                batches,
                readAhead: true,
                uses,
                examples,
                totalDocuments,
                progress,
                cancel
            );

        using var dealer = new Dealer<BatchRow>(
            batches,
            Math.Max(2 * devices.Count, CorpusBatches.ReadAheadBatches(r.BatchSize, RowLength(r, plan)))
        );
        using var failed = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        var perDevice = new MultiDeviceProgress(devices, totalDocuments, progress);
        var parts = devices
            .Select(_ =>
                (
                    Uses: plan.Layers.Select(l => new LayerUnitUse(l.DFf)).ToArray(),
                    Examples: examples == null
                        ? null
                        : UnitExamples.Empty(plan.Layers.Select(l => l.DFf).ToList(), examples.K)
                )
            )
            .ToArray();
        var runs = devices
            .Select(
                (device, i) =>
                    Task.Run(() =>
                    {
                        try
                        {
                            return StreamOn(
                                r,
                                prepared,
                                modelFile,
                                device,
                                dealer.Take(),
                                readAhead: false,
                                parts[i].Uses,
                                parts[i].Examples,
                                totalDocuments,
                                perDevice.For(i),
                                failed.Token
                            );
                        }
                        catch
                        {
                            failed.Cancel();
                            dealer.Stop();
                            throw;
                        } // one device failing stops the others
                    })
            )
            .ToArray();
        try
        {
            Task.WaitAll(runs);
        }
        catch (AggregateException)
        {
            if (dealer.Failure is UserInputException reading)
                throw reading; // the corpus, not a device
            cancel.ThrowIfCancellationRequested();
            int i = Array.FindIndex(runs, t =>
                t.IsFaulted && t.Exception!.GetBaseException() is not OperationCanceledException
            );
            if (i < 0)
                i = Array.FindIndex(runs, t => t.IsFaulted);
            var error = runs[i].Exception!.GetBaseException();
            throw new UserInputException(
                $"Device {i} ({devices[i]}) of --device {r.DeviceList} failed, so the analysis stopped: {error.Message.Split('\n')[0]}",
                error
            );
        }
        for (int i = 0; i < devices.Count; i++)
        {
            for (int l = 0; l < uses.Length; l++)
                uses[l].Merge(parts[i].Uses[l]);
            if (examples != null)
                examples.Merge(parts[i].Examples!);
        }
        perDevice.Finish();
        return runs.Sum(t => t.Result);
    }
}
