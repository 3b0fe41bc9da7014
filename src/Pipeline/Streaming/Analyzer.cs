using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Transforms.Onnx;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Training;
using Sparsity.Training.Data;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>
/// What <c>analyze</c> was asked. <c>Precision</c>: fp32, fp16 or bf16 (<see cref="Precisions.Parse"/>; half precision on
/// a GPU only). <c>CountingThread</c>: count each batch on a thread of its own while the next one runs (default: on a GPU
/// only, where the host is otherwise idle). <c>TopExamples</c>: keep each unit's K top windows and the histogram of its
/// values (<see cref="UnitExamples"/>); 0 for none. <c>Fuse</c>: on a GPU, run attention as ONNX Runtime's fused
/// kernel (checked exact first; <c>--no-fuse</c> turns it off). <c>CudaGraph</c>: capture each step as a CUDA graph.
/// <c>Profile</c>: profile a few steady-state batches per operator type (profile.csv). Encoder-decoder models (a graph
/// taking decoder_input_ids, or Optimum's folder): <c>Pairs</c> "tsv" (the default: lines source&lt;TAB&gt;target) or
/// "reconstruct" (each window its own target); <c>DecoderStartId</c> and <c>PadId</c> override config.json's.
/// </summary>
public sealed record AnalysisRequest(string Model, string Corpus, string Tokenizer, int SeqLen, int BatchSize, long? MaxTokens,
    int ShardIndex, int ShardCount, float Threshold, string Device, int Threads, string OutDir, IReadOnlyList<string> Activations, bool DenseActivations = false,
    bool Timing = false, string Precision = "fp32", bool? CountingThread = null, int TopExamples = 0, bool Fuse = true, bool CudaGraph = false, bool Profile = false,
    string? Pairs = null, long? DecoderStartId = null, long? PadId = null);

/// <summary>
/// Progress of an analysis: tokens so far, rate, and an estimate of the time left; on several devices, each one's share
/// (<see cref="Devices"/>, with its timing in the last report).
/// </summary>
public sealed record AnalysisProgress(long Tokens, long Batches, long Documents, long TotalDocuments, double TokensPerSecond, TimeSpan Elapsed, TimeSpan? Remaining,
    StreamTiming? Timing = null, IReadOnlyList<DeviceRate>? Devices = null, OperatorProfile? Profile = null);

/// <summary>One device's share of an analysis on several: its tokens and rate so far, and its timing (<c>--timing</c>) at the end.</summary>
public sealed record DeviceRate(string Device, long Tokens, double TokensPerSecond, StreamTiming? Timing = null);

/// <summary>
/// Where a batch's time went (<c>analyze --timing</c>), after the first batch (start-up, CUDA initialisation):
/// inside the model run, waiting for the next batch from the reading thread, and counting; and the floor, the
/// model alone on one batch with its outputs bound, timed <see cref="FloorRuns"/> times (median); and the forward alone
/// (<see cref="ForwardMsPerBatch"/>): the same prepared graph (fusions, precision, session) without its vocabulary
/// projection and without our statistics, its output left on the device, as a user's own ONNX Runtime loop would run
/// it (null when the graph's logits are not a projection of a hidden state).
/// </summary>
public sealed record StreamTiming(long Batches, int BatchTokens, double ModelSeconds, double WaitSeconds, double CountSeconds, double FloorMsPerBatch, int FloorRuns,
    double? ForwardMsPerBatch = null)
{
    /// <summary>Steady-state milliseconds per batch of the whole stream.</summary>
    public double MsPerBatch => 1000 * (ModelSeconds + WaitSeconds + CountSeconds) / Math.Max(1, Batches);
    /// <summary>Steady-state ms per batch over the floor's.</summary>
    public double RatioToFloor => MsPerBatch / FloorMsPerBatch;
}

/// <summary>
/// Streams a corpus through an ONNX model with ML.NET and accumulates per-layer unit use: documents → tokens →
/// windows → B windows per row (an IDataView read ahead on its own thread) → the analysis graph, counting in place,
/// run by <see cref="ModelRunner"/> behind <see cref="InGraphCounts"/> (ML.NET's ApplyOnnxModel only with
/// <c>--dense-activations</c>) → one cursor-driven consumer adding the counts to <see cref="LayerUnitUse"/>.
/// Memory is bounded by one batch and the per-layer counts, whatever the corpus size.
/// </summary>
public static class Analyzer
{
    /// <summary>Runs the analysis and writes counts.json, stats.json and the layer CSVs into OutDir (swapped in when complete, <see cref="OutputFolder"/>).</summary>
    /// <summary>Most tokens one batch may hold (B × T): far beyond any accelerator's memory for a transformer, and within .NET's arrays.</summary>
    public const long MaxBatchTokens = 1L << 24;
    /// <summary>Most top windows kept per unit.</summary>
    public const int MaxTopExamples = 10_000;

    public static SparsityStats Run(AnalysisRequest r, IProgress<AnalysisProgress>? progress = null, CancellationToken cancel = default, TextWriter? notes = null)
    {
        if (r.SeqLen < 1 || r.BatchSize < 1) throw new UserInputException("--seq-len and --batch-size must be at least 1.");
        if ((long)r.SeqLen * r.BatchSize > MaxBatchTokens)
            throw new UserInputException($"--batch-size {r.BatchSize} × --seq-len {r.SeqLen} = {(long)r.BatchSize * r.SeqLen:N0} tokens a batch exceeds the {MaxBatchTokens:N0} one batch may hold: use smaller batches.");
        if (r.ShardCount < 1 || r.ShardIndex < 0 || r.ShardIndex >= r.ShardCount) throw new UserInputException($"--shard {r.ShardIndex}/{r.ShardCount}: use i/n with 0 ≤ i < n.");
        if (r.MaxTokens is <= 0) throw new UserInputException("--max-tokens must be positive.");
        if (r.TopExamples < 0) throw new UserInputException($"--top-examples {r.TopExamples}: use a count K ≥ 1, or 0 for none.");
        if (r.TopExamples > MaxTopExamples)
            throw new UserInputException($"--top-examples {r.TopExamples} exceeds {MaxTopExamples:N0} windows per unit (all are held in memory, d_ff × K per layer): use a smaller K.");
        if (r.TopExamples > 0 && r.Threshold < 0)
            throw new UserInputException($"--top-examples ranks activations above the threshold, which must be ≥ 0 (got {r.Threshold}): ReLU activations are never negative.");
        var devices = Devices.ResolveAll(r.Device);
        var precision = Precisions.Parse(r.Precision);
        if (r.CudaGraph && devices.Any(d => d.CudaId == null))
            throw new UserInputException("--cuda-graph captures the GPU's kernels: add --device cuda, or leave it out on the CPU.");
        if (precision != Precision.Fp32 && devices.Any(d => d.CudaId == null))
            throw new UserInputException($"--precision {r.Precision} runs on a GPU only (ONNX Runtime's CPU provider lacks half-precision kernels for most ops): add --device cuda, or use fp32.");
        var tokenizer = TextTokenizer.FromSpec(r.Tokenizer);
        var proto = EncoderDecoder.IsFolder(r.Model) ? EncoderDecoder.LoadFolder(r.Model) : OnnxGraph.Load(r.Model);
        var pairs = PairSettingsFor(r, proto);
        if (r.Fuse && !r.DenseActivations && devices.Any(d => d.CudaId != null)) proto = FuseForGpu(proto, notes);
        var plan = AnalysisPlan.For(proto, r.Activations, r.Threshold, r.DenseActivations, precision, r.DenseActivations ? 0 : r.TopExamples,
            histogramOnHost: devices.All(d => d.CudaId == null), halfCounts: devices.All(d => d.CudaId != null) && r.SeqLen <= StatsReduction.HalfExactSum,
            windowsPerBatch: r.BatchSize);
        if (plan.ExportedThreshold is float baked && baked != r.Threshold)
            throw new UserInputException($"This stats-variant model counts activations above {baked}; --threshold {r.Threshold} needs a re-export (`export --variant stats --threshold {r.Threshold}`) or the dense variant.");
        long vocab = plan.VocabSize ?? tokenizer.VocabSize ?? long.MaxValue;
        if (tokenizer.VocabSize is int tv && plan.VocabSize is long mv && tv > mv)
            throw new UserInputException($"The tokenizer has {tv} ids but the model's vocabulary has {mv}: use the model's tokenizer.");
        if (plan.MaxSeqLen is long maxT && r.SeqLen > maxT)
            throw new UserInputException($"--seq-len {r.SeqLen} exceeds what the model can take ({maxT} positions).");
        // Cheap pre-pass: the estimate of time left (pairs: the pairs, counted without tokenizing unless reconstructed).
        long totalDocuments = pairs == null ? CorpusBatches.DocumentCount(r.Corpus, tokenizer, r.SeqLen)
            : pairs.Source == "tsv" ? TextDocuments.ReadPairs(r.Corpus).LongCount() : CorpusBatches.WindowsUpTo(r.Corpus, tokenizer, r.SeqLen, r.MaxTokens, long.MaxValue);
        if (totalDocuments == 0) throw new UserInputException($"The corpus {r.Corpus} holds no {(pairs == null ? "documents" : "pairs")}.");
        // Memory follows the data, not the option: a corpus of fewer windows than a batch runs as one batch of just those
        // windows (the filler windows would count nowhere, so the statistics are the same; the header keeps --batch-size).
        long fewest = pairs == null ? CorpusBatches.WindowsUpTo(r.Corpus, tokenizer, r.SeqLen, r.MaxTokens, r.BatchSize) : Math.Min(totalDocuments, r.BatchSize);
        var run = r with { BatchSize = (int)Math.Clamp(fewest, 1, r.BatchSize) };
        var tally = new PairTally();

        SparsityStats? stats = null;
        OutputFolder.Write(r.OutDir, "analyze", dir =>
        {
            // In-graph counts run the plan's graph from memory; ML.NET's ApplyOnnxModel (dense activations) needs a file.
            bool rewrite = plan.Rewritten && !plan.ReadsCounts;
            string modelFile = rewrite ? Path.Combine(dir, "analysis.onnx") : r.Model;
            if (rewrite) OnnxGraph.Save(plan.Graph, modelFile);
            var uses = plan.Layers.Select(l => new LayerUnitUse(l.DFf)).ToArray();
            var examples = r.TopExamples > 0 ? UnitExamples.Empty(plan.Layers.Select(l => l.DFf).ToList(), r.TopExamples) : null;
            long tokens;
            try
            {
                var prepared = new PreparedModel(plan);
                tokens = Stream(run, prepared, modelFile, devices, vocab, tokenizer, uses, examples, totalDocuments, progress, cancel, pairs, tally);
                if (prepared.Profile is { } profile) AtomicFile.WriteAllText(Path.Combine(dir, "profile.csv"), profile.ToCsv());
            }
            catch (InvalidOperationException e) when (e.GetBaseException() is UserInputException user)
            {
                throw user; // ML.NET wraps what the source stream throws on its worker thread
            }
            catch (Exception e) when (e is OnnxRuntimeException || e.GetBaseException() is OnnxRuntimeException)
            {
                // A window longer than a position table: ONNX Runtime names the Gather and its table's rows.
                var table = System.Text.RegularExpressions.Regex.Match(e.GetBaseException().Message, @"Gather node\. Name:'([^']+)'.*out of data bounds.*inclusive range \[-(\d+),");
                if (table.Success)
                    throw new UserInputException($"--seq-len {r.SeqLen} exceeds what {Path.GetFileName(r.Model)} can take: its Gather '{table.Groups[1].Value}' reads a table of " +
                                                 $"{table.Groups[2].Value} rows (its positions; some models reserve a few), and a window of {r.SeqLen} indexes past it: use a shorter --seq-len.");
                throw new UserInputException($"ONNX Runtime could not run {Path.GetFileName(r.Model)} on batches of {r.BatchSize} × {r.SeqLen}: {e.GetBaseException().Message.Split('\n')[0]}");
            }
            if (tokens == 0) throw new UserInputException($"The corpus {r.Corpus} produced no tokens for shard {r.ShardIndex}/{r.ShardCount}.");
            if (rewrite) foreach (string f in new[] { modelFile, modelFile + ".data" }.Where(File.Exists)) File.Delete(f);

            var header = new AnalysisHeader(Path.GetFileName(r.Model), r.Corpus, r.Tokenizer, r.SeqLen, r.BatchSize, r.Threshold, r.MaxTokens,
                [$"{r.ShardIndex}/{r.ShardCount}"], Tool.Producer, Provenance.ModelSha256(r.Model), Provenance.Corpus(r.Corpus), Provenance.TokenizerSha256(tokenizer), r.Precision, r.TopExamples,
                examples != null ? UnitExamples.Format : null, pairs);
            var counts = new SparsityCounts(header, plan.Layers.Select((l, i) => LayerCounts.From(l.Name, i, uses[i], l.Stack.Name(),
                l.Stack == ModelStack.None ? null : l.StackIndex)).ToList(), pairs == null ? null : tally.Counts);
            examples?.Write(dir);
            counts.Write(dir);
            stats = SparsityStats.From(counts);
        });
        return stats!;
    }

    // corpus → tokens → windows → batches, read once; on one device streamed through it, on several dealt to them (each
    // takes the next batch when it is ready), each device counting into accumulators of its own, added when all are done:
    // the counts are integers and the top examples totally ordered, so the result equals one device's, bit for bit.
    static long Stream(AnalysisRequest r, PreparedModel prepared, string modelFile, IReadOnlyList<Device> devices, long vocab, TextTokenizer tokenizer,
        LayerUnitUse[] uses, UnitExamples? examples, long totalDocuments, IProgress<AnalysisProgress>? progress, CancellationToken cancel, PairSettings? pairs, PairTally tally)
    {
        var plan = prepared.Plan;
        var batches = pairs == null
            ? CorpusBatches.Pack(CorpusBatches.Tokens(r.Corpus, tokenizer, r.SeqLen), r.SeqLen, r.BatchSize, r.MaxTokens, r.ShardIndex, r.ShardCount, vocab)
            : CorpusBatches.PackPairs(CorpusBatches.PairTokens(r.Corpus, tokenizer, r.SeqLen, pairs.Source == "reconstruct"), r.SeqLen, r.BatchSize, r.MaxTokens,
                r.ShardIndex, r.ShardCount, vocab, pairs.DecoderStartId, pairs.PadId, tally);
        if (devices.Count == 1) return StreamOn(r, prepared, modelFile, devices[0], batches, readAhead: true, uses, examples, totalDocuments, progress, cancel);

        using var dealer = new Dealer<BatchRow>(batches, Math.Max(2 * devices.Count, CorpusBatches.ReadAheadBatches(r.BatchSize, RowLength(r, plan))));
        using var failed = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        var perDevice = new MultiDeviceProgress(devices, totalDocuments, progress);
        var parts = devices.Select(_ => (Uses: plan.Layers.Select(l => new LayerUnitUse(l.DFf)).ToArray(),
            Examples: examples == null ? null : UnitExamples.Empty(plan.Layers.Select(l => l.DFf).ToList(), examples.K))).ToArray();
        var runs = devices.Select((device, i) => Task.Run(() =>
        {
            try { return StreamOn(r, prepared, modelFile, device, dealer.Take(), readAhead: false, parts[i].Uses, parts[i].Examples, totalDocuments, perDevice.For(i), failed.Token); }
            catch { failed.Cancel(); dealer.Stop(); throw; } // one device failing stops the others
        })).ToArray();
        try { Task.WaitAll(runs); }
        catch (AggregateException)
        {
            if (dealer.Failure is UserInputException reading) throw reading; // the corpus, not a device
            cancel.ThrowIfCancellationRequested();
            int i = Array.FindIndex(runs, t => t.IsFaulted && t.Exception!.GetBaseException() is not OperationCanceledException);
            if (i < 0) i = Array.FindIndex(runs, t => t.IsFaulted);
            var error = runs[i].Exception!.GetBaseException();
            throw new UserInputException($"Device {i} ({devices[i]}) of --device {r.Device} failed, so the analysis stopped: {error.Message.Split('\n')[0]}", error);
        }
        for (int i = 0; i < devices.Count; i++)
        {
            for (int l = 0; l < uses.Length; l++) uses[l].Merge(parts[i].Uses[l]);
            if (examples != null) examples.Merge(parts[i].Examples!);
        }
        perDevice.Finish();
        return runs.Sum(t => t.Result);
    }

    // One device's stream: batches (an IDataView, read ahead on a thread of its own unless dealt) → the model as an ML.NET
    // transform (the runner for in-graph counts, ApplyOnnxModel for dense activations) → one cursor-driven consumer adding
    // each layer's counts. Returns the tokens analysed.
    static long StreamOn(AnalysisRequest r, PreparedModel prepared, string modelFile, Device device, IEnumerable<BatchRow> batchRows, bool readAhead,
        LayerUnitUse[] uses, UnitExamples? examples, long totalDocuments, IProgress<AnalysisProgress>? progress, CancellationToken cancel)
    {
        var plan = prepared.Plan;
        int B = r.BatchSize, T = r.SeqLen, W = RowLength(r, plan); // W: a row's width, 2T for pairs (source, then decoder inputs)
        // Fixed sizes on a GPU only: on the CPU they let the optimizer fold bias adds into GEMMs, which moves activations by
        // an ulp, and so the top-example values users compare across versions.
        var tuning = new RunnerTuning(FixedShapes: device.CudaId != null, CudaGraph: r.CudaGraph);
        var ml = new MLContext(seed: 0);
        var batches = CorpusBatches.View(ml, batchRows, B, W, readAhead);
        var outputs = plan.Layers.SelectMany(l => l.Outputs.Select(o => (o.Name, Shape: o.Shape(B, T, l.DFf)))).ToList();
        var runnerOutputs = outputs.Select(o => (o.Name, o.Shape?.Select(d => (long)d).ToArray())).ToList();
        using var runner = plan.ReadsCounts ? new ModelRunner(plan.Graph, device, r.Threads, B, W, runnerOutputs, tuning: tuning) : null;
        var model = runner != null ? InGraphCounts.Fit(ml, batches, runner, outputs.Select(o => o.Name).ToList()) : ApplyOnnxModel(ml, r, plan, modelFile, device, batches, outputs);
        using var disposeModel = model as IDisposable;
        // Mapped row by row over one input cursor: the transformed view's own cursor runs the model on several threads and
        // buffers their outputs ahead of us (gigabytes of [B, T, d_ff] activations on Brown), and the runner is single-threaded.
        var mapper = model.GetRowToRowMapper(batches.Schema);
        using var input = batches.GetRowCursor(batches.Schema);
        var columns = runner != null ? [InGraphCounts.Column, InGraphCounts.ValuesColumn, InGraphCounts.LengthsColumn] : outputs.Select(o => o.Name).ToHashSet();
        using var scored = mapper.GetRow(input, mapper.OutputSchema.Where(c => columns.Contains(c.Name)));
        var maskGetter = input.GetGetter<VBuffer<long>>(batches.Schema["attention_mask"]);
        var idsGetter = input.GetGetter<VBuffer<long>>(batches.Schema["input_ids"]);
        var documentsGetter = input.GetGetter<long>(batches.Schema["documents_read"]);
        var windowDocumentGetter = input.GetGetter<VBuffer<long>>(batches.Schema["window_document"]);
        var windowStartGetter = input.GetGetter<VBuffer<long>>(batches.Schema["window_start"]);
        var layers = runner != null ? CountsReader(scored, plan, r.Threshold, B, T, background: r.CountingThread ?? device.CudaId != null)
            : DenseReader(scored, plan, r.Threshold, B, T);

        VBuffer<long> maskBuffer = default, lastIds = default, windowDocument = default, windowStart = default;
        var origin = new BatchOrigin(new long[B], new long[B], T);
        var realToken = new bool[B * T];
        var realTarget = W > T ? new bool[B * T] : null; // pairs: each stack counts its own side
        long tokens = 0, batchCount = 0, documents = 0;
        double model_ = 0, wait = 0, count = 0;
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
                    for (int i = 0; i < realToken.Length; i++) tokens += (realToken[i] = mask[i] == 1) ? 1 : 0;
                else
                    for (int i = 0; i < realToken.Length; i++)
                    {
                        int at = i / T * W + i % T;
                        tokens += ((realToken[i] = mask[at] == 1) ? 1 : 0) + ((realTarget[i] = mask[at + T] == 1) ? 1 : 0);
                    }
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
                if (batchCount++ > 0) (wait, model_, count) = (wait + waited, model_ + ran - waited, count + step.Elapsed.TotalSeconds - ran); // the first batch is start-up
                if (r.Timing || r.Profile) idsGetter(ref lastIds);
                if (progress != null && (clock.Elapsed - lastReport).TotalSeconds >= 0.5)
                {
                    lastReport = clock.Elapsed;
                    progress.Report(Progress(tokens, batchCount, documents, totalDocuments, clock.Elapsed));
                }
                step.Restart();
            }
        }
        finally { layers.Finish(); } // the counting thread, if any, has added every batch
        var timing = r.Timing && runner != null && batchCount > 0
            ? new StreamTiming(batchCount - 1, B * T, model_, wait, count, Floor(runner, lastIds.GetValues(), maskBuffer.GetValues(), runs: 20), 20,
                Forward(prepared, device, r with { SeqLen = W }, tuning, lastIds.GetValues(), maskBuffer.GetValues())) : null;
        OperatorProfile? profile = null;
        if (r.Profile && runner != null && batchCount > 0 && Interlocked.CompareExchange(ref prepared.Profiling, 1, 0) == 0) // one device profiles
        {
            runner.Dispose(); // one session on the device at a time
            profile = prepared.Profile = ProfileRuns(plan.Graph, device, r with { SeqLen = W }, tuning, runnerOutputs, lastIds.GetValues(), maskBuffer.GetValues());
        }
        progress?.Report(Progress(tokens, batchCount, documents, totalDocuments, clock.Elapsed) with { Timing = timing, Profile = profile });
        return tokens;
    }

    // Dense activations through ML.NET's ONNX transform: they leave the runtime and are counted in .NET.
    static ITransformer ApplyOnnxModel(MLContext ml, AnalysisRequest r, AnalysisPlan plan, string modelFile, Device device, IDataView batches,
        IReadOnlyList<(string Name, int[]? Shape)> outputs)
    {
        var inputs = plan.UsesAttentionMask ? new[] { "input_ids", "attention_mask" } : ["input_ids"];
        return ml.Transforms.ApplyOnnxModel(new OnnxOptions
        {
            ModelFile = modelFile,
            InputColumns = inputs,
            OutputColumns = outputs.Select(o => o.Name).ToArray(),
            ShapeDictionary = outputs.Select(o => (o.Name, Shape: o.Shape!)).Concat(inputs.Select(i => (Name: i, Shape: new[] { r.BatchSize, r.SeqLen }))).ToDictionary(p => p.Name, p => p.Shape),
            GpuDeviceId = device.CudaId,
            FallbackToCpu = false,
            IntraOpNumThreads = r.Threads > 0 ? r.Threads : Environment.ProcessorCount,
            InterOpNumThreads = 1,
        }).Fit(batches);
    }

    /// <summary>
    /// Reads one scored row: <see cref="Fetch"/> runs the model (the getters are lazy), <see cref="Add"/> counts (or hands
    /// the counts to a counting thread), <see cref="Finish"/> waits until every batch is counted.
    /// </summary>
    sealed record LayerReader(Action Fetch, Action<LayerUnitUse[], UnitExamples?, bool[], bool[]?, BatchOrigin> Add, Action Finish);

    // One batch's in-graph outputs, copied for the counting thread (buffers reused, so they may be longer than the batch's).
    sealed record CountedBatch(long[] Counts, float[] Values, long[] Lengths, bool[] Real, bool[]? RealTarget, BatchOrigin Origin);

    static LayerReader CountsReader(DataViewRow scored, AnalysisPlan plan, float threshold, int B, int T, bool background)
    {
        var getter = scored.GetGetter<VBuffer<long>>(scored.Schema[InGraphCounts.Column]);
        var valuesGetter = scored.GetGetter<VBuffer<float>>(scored.Schema[InGraphCounts.ValuesColumn]);
        var lengthsGetter = scored.GetGetter<VBuffer<long>>(scored.Schema[InGraphCounts.LengthsColumn]);
        VBuffer<long> buffer = default, lengthsBuffer = default;
        VBuffer<float> valuesBuffer = default;
        var scratch = new CountedScratch();
        var layout = plan.Layout!;
        void Count(LayerUnitUse[] uses, UnitExamples? examples, bool[] realSource, bool[]? realTarget, BatchOrigin origin, ReadOnlySpan<long> counts,
            ReadOnlySpan<float> values, ReadOnlySpan<long> lengths) =>
            layout.Add(counts, values, lengths, B, T, realSource, realTarget, uses, examples, origin.Window, threshold, plan.TopWindowsSorted, scratch);
        void Fetch()
        {
            getter(ref buffer);
            valuesGetter(ref valuesBuffer);
            lengthsGetter(ref lengthsBuffer);
        }
        if (!background)
            return new(Fetch, (uses, examples, real, realTarget, origin) => Count(uses, examples, real, realTarget, origin, buffer.GetValues(), valuesBuffer.GetValues(),
                lengthsBuffer.GetValues()), () => { });

        // On a GPU the host only waits while the device runs the next batch: count the last one meanwhile, on a thread of
        // its own (outputs, mask and origin are copied; two batches may wait, their buffers are reused).
        var queue = new BlockingCollection<(CountedBatch Batch, LayerUnitUse[] Uses, UnitExamples? Examples)>(boundedCapacity: 2);
        var spare = new ConcurrentQueue<CountedBatch>();
        var failed = new CancellationTokenSource();
        var worker = Task.Run(() =>
        {
            try
            {
                foreach (var (batch, uses, examples) in queue.GetConsumingEnumerable())
                {
                    Count(uses, examples, batch.Real, batch.RealTarget, batch.Origin, batch.Counts, batch.Values, batch.Lengths);
                    spare.Enqueue(batch);
                }
            }
            catch { failed.Cancel(); throw; }
        });
        return new(Fetch, (uses, examples, real, realTarget, origin) =>
        {
            var counts = buffer.GetValues();
            var values = valuesBuffer.GetValues();
            var lengths = lengthsBuffer.GetValues();
            var batch = spare.TryDequeue(out var reused) && reused.Counts.Length >= counts.Length && reused.Values.Length >= values.Length ? reused
                : new CountedBatch(new long[counts.Length], new float[values.Length], new long[lengths.Length], new bool[real.Length],
                    realTarget == null ? null : new bool[realTarget.Length], new BatchOrigin(new long[B], new long[B], T));
            counts.CopyTo(batch.Counts);
            values.CopyTo(batch.Values);
            lengths.CopyTo(batch.Lengths);
            real.CopyTo(batch.Real, 0);
            realTarget?.CopyTo(batch.RealTarget!, 0);
            origin.WindowDocument.CopyTo(batch.Origin.WindowDocument, 0);
            origin.WindowStart.CopyTo(batch.Origin.WindowStart, 0);
            try { queue.Add((batch, uses, examples), failed.Token); }
            catch (OperationCanceledException) { worker.GetAwaiter().GetResult(); } // the counting thread's own error
        }, () =>
        {
            queue.CompleteAdding();
            try { worker.GetAwaiter().GetResult(); }
            finally { queue.Dispose(); failed.Dispose(); }
        });
    }

    static LayerReader DenseReader(DataViewRow scored, AnalysisPlan plan, float threshold, int B, int T)
    {
        var getters = plan.Layers.Select(l => scored.GetGetter<VBuffer<float>>(scored.Schema[l.Outputs[0].Name])).ToArray();
        var buffers = new VBuffer<float>[getters.Length];
        return new(() => { for (int l = 0; l < getters.Length; l++) getters[l](ref buffers[l]); }, (uses, examples, real, _, origin) =>
        {
            for (int l = 0; l < uses.Length; l++)
            {
                var activations = buffers[l].GetValues(); // flattened [b·t, d_ff] is the same memory as [b, t, d_ff]
                uses[l].AddDense(activations, B, T, real, threshold);
                if (examples == null) continue;
                examples.Layers[l].Top.AddDense(activations, real, T, origin.Window, threshold);
                examples.Layers[l].Histogram.AddDense(activations, real, T, threshold);
            }
        }, () => { });
    }

    /// <summary>What runs on every device: the plan, and the one profile (<c>--profile</c>: the first device to finish takes it).</summary>
    sealed class PreparedModel(AnalysisPlan plan)
    {
        public AnalysisPlan Plan => plan;
        public int Profiling;
        public OperatorProfile? Profile;
    }

    /// <summary>
    /// What <c>analyze</c> runs on a GPU: attention as ONNX Runtime's fused kernel (MultiHeadAttention), checked on the
    /// CPU in float32 as <c>fuse-attention</c> checks it; a graph it does not match, or whose check fails, is returned
    /// as it is, and a line on <paramref name="notes"/> says which. Stats exports and graphs already fused are left alone.
    /// </summary>
    public static ModelProto FuseForGpu(ModelProto model, TextWriter? notes)
    {
        if (model.Graph.Output.Any(o => o.Name == StatsReduction.UnitTokensOutput(0))) return model; // a stats export: counted as written
        if (model.Graph.Node.Any(n => n.OpType is "MultiHeadAttention" or "Attention" or "GroupQueryAttention")) return model; // fused already
        if (!model.Graph.Node.Any(n => n.OpType == "Softmax")) return model;
        try
        {
            var (result, diff) = Exporting.CheckedExport.FuseAttentionChecked(model, "analysing the graph as it is");
            notes?.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"Attention fused for the GPU: {result.Fused} block(s) as MultiHeadAttention (logits within {diff:E1} of the original on the CPU in fp32){(result.Skipped.Count > 0 ? $"; {result.Skipped.Count} left as they were: {result.Skipped[0]}" : "")}. --no-fuse runs the graph as it is."));
            return result.Model;
        }
        catch (UserInputException e)
        {
            notes?.WriteLine($"warning: attention not fused: {e.Message.Split("; ")[0]}.");
            return model;
        }
    }

    // The forward alone: the prepared graph minus its vocabulary projection and our statistics, its output left where it
    // was computed (median of 20 runs on the last batch); null when the logits are not a projection of a hidden state.
    static double? Forward(PreparedModel prepared, Device device, AnalysisRequest r, RunnerTuning tuning, ReadOnlySpan<long> ids, ReadOnlySpan<long> mask)
    {
        // A stats export has nothing but our statistics to compare with.
        if (prepared.Plan.Prepared is not { } graph || GraphInputs.WithDecoderOutput(graph) is not { } forward) return null;
        using var runner = new ModelRunner(forward, device, r.Threads, r.BatchSize, r.SeqLen, [(forward.Graph.Output[0].Name, null)],
            tuning: tuning with { CudaGraph = false, OutputsOnDevice = true });
        return Floor(runner, ids, mask, runs: 20);
    }

    // ONNX Runtime's profiler over 10 runs of the last batch after 3 warm-up runs, in a session of its own.
    static OperatorProfile ProfileRuns(ModelProto graph, Device device, AnalysisRequest r, RunnerTuning tuning, IReadOnlyList<(string, long[]?)> outputs,
        ReadOnlySpan<long> ids, ReadOnlySpan<long> mask)
    {
        string dir = Path.Combine(Path.GetTempPath(), "relu-sparsity-profile-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string file;
            using (var runner = new ModelRunner(graph, device, r.Threads, r.BatchSize, r.SeqLen, outputs, tuning: tuning with { ProfilePrefix = Path.Combine(dir, "ort") }))
            {
                for (int i = 0; i < 13; i++) runner.Run(ids, mask);
                file = runner.EndProfiling();
            }
            return OperatorProfile.Read(Path.GetFullPath(file), warmUp: 3, onGpu: device.CudaId != null);
        }
        finally { Directory.Delete(dir, recursive: true); }
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

    // A row's width: T tokens, or for pairs T source ids then T decoder input ids.
    static int RowLength(AnalysisRequest r, AnalysisPlan plan) => plan.Pairs ? 2 * r.SeqLen : r.SeqLen;

    // An encoder-decoder's pairs (null for other models), and what analysis cannot do with them yet.
    static PairSettings? PairSettingsFor(AnalysisRequest r, ModelProto model)
    {
        var pairs = PairCorpus.SettingsFor(r.Model, model, r.Corpus, r.Pairs, r.DecoderStartId, r.PadId);
        if (pairs != null && r.DenseActivations)
            throw new UserInputException("--dense-activations is not available for encoder-decoder models: leave it out (the in-graph counts are the same numbers).");
        return pairs;
    }

    static AnalysisProgress Progress(long tokens, long batches, long documents, long totalDocuments, TimeSpan elapsed)
    {
        double fraction = (double)documents / totalDocuments;
        TimeSpan? left = fraction > 0 ? TimeSpan.FromSeconds(elapsed.TotalSeconds * (1 - fraction) / fraction) : null;
        return new AnalysisProgress(tokens, batches, documents, totalDocuments, tokens / Math.Max(1e-9, elapsed.TotalSeconds), elapsed, left);
    }
}
