using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Onnx;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

// One device's stream, and the timings of its model alone (--timing, --profile).
public static partial class Analyzer
{
    // One device's stream: batches (an IDataView, read ahead on a thread of its own unless dealt) → the model as an
    // ML.NET transform (the runner for in-graph counts, ApplyOnnxModel for dense activations) → one cursor-driven
    // consumer adding each layer's counts. Returns the tokens analysed.
    static long StreamOn(
        AnalysisRequest r,
        PreparedModel prepared,
        string modelFile,
        Device device,
        IEnumerable<BatchRow> batchRows,
        bool readAhead,
        LayerUnitUse[] uses,
        UnitExamples? examples,
        long totalDocuments,
        IProgress<AnalysisProgress>? progress,
        CancellationToken cancel
    )
    {
        var plan = prepared.Plan;
        int B = r.BatchSize,
            T = r.SeqLen,
            W = RowLength(r, plan); // W: a row's width, 2T for pairs (source, then decoder inputs)
        // Fixed sizes on a GPU only: on the CPU they let the optimizer fold bias adds into GEMMs, which moves
        // activations by an ulp, and so the top-example values users compare across versions.
        var tuning = new RunnerTuning(FixedShapes: device.CudaId != null, CudaGraph: r.CudaGraph);
        var ml = new MLContext(seed: 0);
        var batches = CorpusBatches.View(ml, batchRows, B, W, readAhead);
        var outputs = plan
            .Layers.SelectMany(l => l.Outputs.Select(o => (o.Name, Shape: o.Shape(B, T, l.DFf))))
            .ToList();
        var runnerOutputs = outputs.Select(o => (o.Name, o.Shape?.Select(d => (long)d).ToArray())).ToList();
        using var runner = plan.ReadsCounts
            ? new ModelRunner(plan.Graph, device, r.Threads, B, W, runnerOutputs, tuning: tuning)
            : null;
        var model =
            runner != null
                ? InGraphCounts.Fit(ml, batches, runner, outputs.Select(o => o.Name).ToList())
                : ApplyOnnxModel(ml, r, plan, modelFile, device, batches, outputs);
        using var disposeModel = model as IDisposable;
        // Mapped row by row over one input cursor: the transformed view's own cursor runs the model on several threads
        // and buffers their outputs ahead of us (gigabytes of [B, T, d_ff] activations on Brown), and the runner is
        // single-threaded.
        var mapper = model.GetRowToRowMapper(batches.Schema);
        using var input = batches.GetRowCursor(batches.Schema);
        var columns =
            runner != null
                ? [InGraphCounts.Column, InGraphCounts.ValuesColumn, InGraphCounts.LengthsColumn]
                : outputs.Select(o => o.Name).ToHashSet();
        using var scored = mapper.GetRow(input, mapper.OutputSchema.Where(c => columns.Contains(c.Name)));
        var maskGetter = input.GetGetter<VBuffer<long>>(batches.Schema["attention_mask"]);
        var idsGetter = input.GetGetter<VBuffer<long>>(batches.Schema["input_ids"]);
        var documentsGetter = input.GetGetter<long>(batches.Schema["documents_read"]);
        var windowDocumentGetter = input.GetGetter<VBuffer<long>>(batches.Schema["window_document"]);
        var windowStartGetter = input.GetGetter<VBuffer<long>>(batches.Schema["window_start"]);
        var layers =
            runner != null
                ? CountsReader(scored, plan, r.Threshold, B, T, background: r.CountingThread ?? device.CudaId != null)
                : DenseReader(scored, plan, r.Threshold, B, T);

        VBuffer<long> maskBuffer = default,
            lastIds = default,
            windowDocument = default,
            windowStart = default;
        var origin = new BatchOrigin(new long[B], new long[B], T);
        var realToken = new bool[B * T];
        var realTarget = W > T ? new bool[B * T] : null; // pairs: each stack counts its own side
        long tokens = 0,
            batchCount = 0,
            documents = 0;
        double model_ = 0,
            wait = 0,
            count = 0;
        var clock = Stopwatch.StartNew();
        var lastReport = TimeSpan.Zero;
        var step = Stopwatch.StartNew();
        try
        {
            while (input.MoveNext())
            {
                cancel.ThrowIfCancellationRequested();
                double waited = step.Elapsed.TotalSeconds;
                maskGetter(ref maskBuffer);
                documentsGetter(ref documents);
                var mask = maskBuffer.GetValues();
                if (realTarget == null)
                    for (int i = 0; i < realToken.Length; i++)
                        tokens += (realToken[i] = mask[i] == 1) ? 1 : 0;
                else
                    for (int b = 0; b < B; b++) // row b: T source positions, then T target positions
                    for (int t = 0, i = b * T, at = b * W; t < T; t++, i++, at++)
                        tokens +=
                            ((realToken[i] = mask[at] == 1) ? 1 : 0) + ((realTarget[i] = mask[at + T] == 1) ? 1 : 0);
                if (examples != null)
                {
                    windowDocumentGetter(ref windowDocument);
                    windowStartGetter(ref windowStart);
                    windowDocument.GetValues().CopyTo(origin.WindowDocument);
                    windowStart.GetValues().CopyTo(origin.WindowStart);
                }
                layers.Fetch(); // runs the model
                double ran = step.Elapsed.TotalSeconds;
                layers.Add(uses, examples, realToken, realTarget, origin);
                if (batchCount++ > 0)
                    (wait, model_, count) = (
                        wait + waited,
                        model_ + ran - waited,
                        count + step.Elapsed.TotalSeconds - ran
                    ); // the first batch is start-up
                if (r.Timing || r.Profile)
                    idsGetter(ref lastIds);
                if (progress != null && (clock.Elapsed - lastReport).TotalSeconds >= 0.5)
                {
                    lastReport = clock.Elapsed;
                    progress.Report(Progress(tokens, batchCount, documents, totalDocuments, clock.Elapsed));
                }
                step.Restart();
            }
        }
        finally
        {
            layers.Finish();
        } // the counting thread, if any, has added every batch
        var timing =
            r.Timing && runner != null && batchCount > 0
                ? new StreamTiming(
                    batchCount - 1,
                    B * T,
                    model_,
                    wait,
                    count,
                    Floor(runner, lastIds.GetValues(), maskBuffer.GetValues(), runs: 20),
                    20,
                    Forward(
                        prepared,
                        device,
                        r with
                        {
                            SeqLen = W,
                        },
                        tuning,
                        lastIds.GetValues(),
                        maskBuffer.GetValues()
                    )
                )
                : null;
        OperatorProfile? profile = null;
        if (
            r.Profile
            && runner != null
            && batchCount > 0
            && Interlocked.CompareExchange(ref prepared.Profiling, 1, 0) == 0
        ) // one device profiles
        {
            runner.Dispose(); // one session on the device at a time
            profile = prepared.Profile = ProfileRuns(
                plan.Graph,
                device,
                r with
                {
                    SeqLen = W,
                },
                tuning,
                runnerOutputs,
                lastIds.GetValues(),
                maskBuffer.GetValues()
            );
        }
        progress?.Report(
            Progress(tokens, batchCount, documents, totalDocuments, clock.Elapsed) with
            {
                Timing = timing,
                Profile = profile,
            }
        );
        return tokens;
    }

    // Dense activations through ML.NET's ONNX transform: they leave the runtime and are counted in .NET.
    static ITransformer ApplyOnnxModel(
        MLContext ml,
        AnalysisRequest r,
        AnalysisPlan plan,
        string modelFile,
        Device device,
        IDataView batches,
        IReadOnlyList<(string Name, int[]? Shape)> outputs
    )
    {
        var inputs = plan.UsesAttentionMask ? new[] { "input_ids", "attention_mask" } : ["input_ids"];
        return ml
            .Transforms.ApplyOnnxModel(
                new OnnxOptions
                {
                    ModelFile = modelFile,
                    InputColumns = inputs,
                    OutputColumns = outputs.Select(o => o.Name).ToArray(),
                    ShapeDictionary = outputs
                        .Select(o => (o.Name, Shape: o.Shape!))
                        .Concat(inputs.Select(i => (Name: i, Shape: new[] { r.BatchSize, r.SeqLen })))
                        .ToDictionary(p => p.Name, p => p.Shape),
                    GpuDeviceId = device.CudaId,
                    FallbackToCpu = false,
                    IntraOpNumThreads = r.Threads > 0 ? r.Threads : Environment.ProcessorCount,
                    InterOpNumThreads = 1,
                }
            )
            .Fit(batches);
    }

    // The forward alone: the prepared graph minus its vocabulary projection and our statistics, its output left where
    // it was computed (median of 20 runs on the last batch); null when the logits are not a projection of a hidden
    // state.
    static double? Forward(
        PreparedModel prepared,
        Device device,
        AnalysisRequest r,
        RunnerTuning tuning,
        ReadOnlySpan<long> ids,
        ReadOnlySpan<long> mask
    )
    {
        // A stats export has nothing but our statistics to compare with.
        if (prepared.Plan.Prepared is not { } graph || GraphInputs.WithDecoderOutput(graph) is not { } forward)
            return null;
        using var runner = new ModelRunner(
            forward,
            device,
            r.Threads,
            r.BatchSize,
            r.SeqLen,
            [(forward.Graph.Output[0].Name, null)],
            tuning: tuning with
            {
                CudaGraph = false,
                OutputsOnDevice = true,
            }
        );
        return Floor(runner, ids, mask, runs: 20);
    }

    // ONNX Runtime's profiler over 10 runs of the last batch after 3 warm-up runs, in a session of its own.
    static OperatorProfile ProfileRuns(
        ModelProto graph,
        Device device,
        AnalysisRequest r,
        RunnerTuning tuning,
        IReadOnlyList<(string, long[]?)> outputs,
        ReadOnlySpan<long> ids,
        ReadOnlySpan<long> mask
    )
    {
        string dir = Path.Combine(Path.GetTempPath(), "relu-sparsity-profile-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string file;
            using (
                var runner = new ModelRunner(
                    graph,
                    device,
                    r.Threads,
                    r.BatchSize,
                    r.SeqLen,
                    outputs,
                    tuning: tuning with
                    {
                        ProfilePrefix = Path.Combine(dir, "ort"),
                    }
                )
            )
            {
                for (int i = 0; i < 13; i++)
                    runner.Run(ids, mask);
                file = runner.EndProfiling();
            }
            return OperatorProfile.Read(Path.GetFullPath(file), warmUp: 3, onGpu: device.CudaId != null);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // The floor: the model alone on one batch with its outputs bound (median of several runs).
    static double Floor(ModelRunner runner, ReadOnlySpan<long> ids, ReadOnlySpan<long> mask, int runs)
    {
        var times = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            var clock = Stopwatch.StartNew();
            runner.Run(ids, mask);
            times[i] = clock.Elapsed.TotalMilliseconds;
        }
        return MathNet.Numerics.Statistics.Statistics.Median(times);
    }
}
