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

/// <summary>What <c>analyze</c> was asked.</summary>
public sealed record AnalysisRequest(string Model, string Corpus, string Tokenizer, int SeqLen, int BatchSize, long? MaxTokens,
    int ShardIndex, int ShardCount, float Threshold, string Device, int Threads, string OutDir, IReadOnlyList<string> Activations, bool DenseActivations = false,
    bool Timing = false, string Precision = "fp32");

/// <summary>Progress of an analysis: tokens so far, rate, and an estimate of the time left.</summary>
public sealed record AnalysisProgress(long Tokens, long Batches, long Documents, long TotalDocuments, double TokensPerSecond, TimeSpan Elapsed, TimeSpan? Remaining,
    StreamTiming? Timing = null);

/// <summary>
/// Where a batch's time went (<c>analyze --timing</c>), after the first batch (start-up, CUDA initialisation):
/// inside the model run, waiting for the next batch from the reading thread, and counting; and the floor, the
/// model alone on one batch with its outputs bound, timed <see cref="FloorRuns"/> times (median).
/// </summary>
public sealed record StreamTiming(long Batches, int BatchTokens, double ModelSeconds, double WaitSeconds, double CountSeconds, double FloorMsPerBatch, int FloorRuns)
{
    /// <summary>Steady-state milliseconds per batch of the whole stream.</summary>
    public double MsPerBatch => 1000 * (ModelSeconds + WaitSeconds + CountSeconds) / Math.Max(1, Batches);
    /// <summary>Steady-state ms per batch over the floor's.</summary>
    public double RatioToFloor => MsPerBatch / FloorMsPerBatch;
}

/// <summary>
/// Streams a corpus through an ONNX model with ML.NET and accumulates per-layer unit use: documents →
/// tokenization transform → windows → B windows per row → ApplyOnnxModel → <see cref="LayerUnitUse"/>.
/// Memory is bounded by one batch and the per-layer counts, whatever the corpus size.
/// </summary>
public static class Analyzer
{
    /// <summary>Runs the analysis and writes counts.json, stats.json and the layer CSVs into OutDir (swapped in when complete, <see cref="OutputFolder"/>).</summary>
    public static SparsityStats Run(AnalysisRequest r, IProgress<AnalysisProgress>? progress = null, CancellationToken cancel = default)
    {
        if (r.SeqLen < 1 || r.BatchSize < 1) throw new UserInputException("--seq-len and --batch-size must be at least 1.");
        if (r.ShardCount < 1 || r.ShardIndex < 0 || r.ShardIndex >= r.ShardCount) throw new UserInputException($"--shard {r.ShardIndex}/{r.ShardCount}: use i/n with 0 ≤ i < n.");
        if (r.MaxTokens is <= 0) throw new UserInputException("--max-tokens must be positive.");
        var device = Devices.Resolve(r.Device);
        if (r.Precision is not ("fp32" or "fp16")) throw new UserInputException($"--precision {r.Precision}: use fp32 or fp16.");
        if (r.Precision == "fp16" && device.CudaId == null)
            throw new UserInputException("--precision fp16 runs on a GPU only (ONNX Runtime's CPU provider lacks fp16 kernels for most ops): add --device cuda, or use fp32.");
        var tokenizer = TextTokenizer.FromSpec(r.Tokenizer);
        var proto = OnnxGraph.Load(r.Model);
        var plan = AnalysisPlan.For(proto, r.Activations, r.Threshold, r.DenseActivations, r.Precision == "fp16");
        if (plan.ExportedThreshold is float baked && baked != r.Threshold)
            throw new UserInputException($"This stats-variant model counts activations above {baked}; --threshold {r.Threshold} needs a re-export (`export --variant stats --threshold {r.Threshold}`) or the dense variant.");
        long vocab = plan.VocabSize ?? tokenizer.VocabSize ?? long.MaxValue;
        if (tokenizer.VocabSize is int tv && plan.VocabSize is long mv && tv > mv)
            throw new UserInputException($"The tokenizer has {tv} ids but the model's vocabulary has {mv}: use the model's tokenizer.");
        if (plan.MaxSeqLen is long maxT && r.SeqLen > maxT)
            throw new UserInputException($"--seq-len {r.SeqLen} exceeds what the model can take ({maxT} positions).");
        long totalDocuments = TextDocuments.Read(r.Corpus).LongCount(); // cheap pre-pass: the estimate of time left
        if (totalDocuments == 0) throw new UserInputException($"The corpus {r.Corpus} holds no documents.");

        SparsityStats? stats = null;
        OutputFolder.Write(r.OutDir, "analyze", dir =>
        {
            // In-graph counts run the plan's graph from memory; ML.NET's ApplyOnnxModel (dense activations) needs a file.
            bool rewrite = plan.Rewritten && !plan.ReadsCounts;
            string modelFile = rewrite ? Path.Combine(dir, "analysis.onnx") : r.Model;
            if (rewrite) OnnxGraph.Save(plan.Graph, modelFile);
            var uses = plan.Layers.Select(l => new LayerUnitUse(l.DFf)).ToArray();
            var counters = new StreamCounters();
            try
            {
                Stream(r, plan, modelFile, device, vocab, tokenizer, uses, counters, totalDocuments, progress, cancel);
            }
            catch (InvalidOperationException e) when (e.GetBaseException() is UserInputException user)
            {
                throw user; // ML.NET wraps what the source stream throws on its worker thread
            }
            catch (Exception e) when (e is OnnxRuntimeException || e.GetBaseException() is OnnxRuntimeException)
            {
                throw new UserInputException($"ONNX Runtime could not run {Path.GetFileName(r.Model)} on batches of {r.BatchSize} × {r.SeqLen}: {e.GetBaseException().Message.Split('\n')[0]}");
            }
            if (counters.Tokens == 0) throw new UserInputException($"The corpus {r.Corpus} produced no tokens for shard {r.ShardIndex}/{r.ShardCount}.");
            if (rewrite) foreach (string f in new[] { modelFile, modelFile + ".data" }.Where(File.Exists)) File.Delete(f);

            var header = new AnalysisHeader(Path.GetFileName(r.Model), r.Corpus, r.Tokenizer, r.SeqLen, r.BatchSize, r.Threshold, r.MaxTokens,
                [$"{r.ShardIndex}/{r.ShardCount}"], Tool.Producer, Provenance.ModelSha256(r.Model), Provenance.Corpus(r.Corpus), Provenance.TokenizerSha256(tokenizer), r.Precision);
            var counts = new SparsityCounts(header, plan.Layers.Select((l, i) => LayerCounts.From(l.Name, i, uses[i])).ToList());
            counts.Write(dir);
            stats = SparsityStats.From(counts);
        });
        return stats!;
    }

    static void Stream(AnalysisRequest r, AnalysisPlan plan, string modelFile, Device device, long vocab, TextTokenizer tokenizer,
        LayerUnitUse[] uses, StreamCounters counters, long totalDocuments, IProgress<AnalysisProgress>? progress, CancellationToken cancel)
    {
        int B = r.BatchSize, T = r.SeqLen;
        var ml = new MLContext(seed: 0);
        var documents = ml.Data.LoadFromEnumerable(TextDocuments.Read(r.Corpus).Select(text => new DocumentRow { Text = text }));
        var tokenized = ml.Transforms.CustomMapping<DocumentRow, TokenRow>(
            (doc, tokens) => tokens.Ids = tokenizer.Encode(doc.Text).Select(id => (long)id).ToArray(), contractName: "Tokenize").Fit(documents).Transform(documents);
        var schema = SchemaDefinition.Create(typeof(BatchRow));
        schema["input_ids"].ColumnType = new VectorDataViewType(NumberDataViewType.Int64, B * T);
        schema["attention_mask"].ColumnType = new VectorDataViewType(NumberDataViewType.Int64, B * T);
        var batches = ml.Data.LoadFromEnumerable(CorpusBatches.Pack(ml.Data.CreateEnumerable<TokenRow>(tokenized, reuseRowObject: false).Select(t => t.Ids),
            T, B, r.MaxTokens, r.ShardIndex, r.ShardCount, vocab, counters), schema);
        var clock = Stopwatch.StartNew();
        var lastReport = TimeSpan.Zero;
        void Report()
        {
            if (progress == null || (clock.Elapsed - lastReport).TotalSeconds < 0.5) return;
            lastReport = clock.Elapsed;
            progress.Report(Progress(counters, totalDocuments, clock.Elapsed));
        }
        if (plan.ReadsCounts)
        {
            // In-graph counts: the one runner, on any device. Dense activations (below) go through ML.NET's ApplyOnnxModel.
            var timing = StreamCounts(r, plan, device, ml.Data.CreateEnumerable<BatchRow>(batches, reuseRowObject: false), uses, Report, cancel);
            progress?.Report(Progress(counters, totalDocuments, clock.Elapsed) with { Timing = timing });
            return;
        }

        var inputs = plan.UsesAttentionMask ? new[] { "input_ids", "attention_mask" } : ["input_ids"];
        var shapes = plan.Layers.SelectMany(l => l.Outputs.Select(o => (o.Name, o.Shape(B, T, l.DFf))))
            .Concat(inputs.Select(i => (Name: i, Shape: new[] { B, T }))).ToDictionary(p => p.Name, p => p.Item2);
        var onnx = ml.Transforms.ApplyOnnxModel(new OnnxOptions
        {
            ModelFile = modelFile,
            InputColumns = inputs,
            OutputColumns = plan.Layers.SelectMany(l => l.Outputs.Select(o => o.Name)).ToArray(),
            ShapeDictionary = shapes,
            GpuDeviceId = device.CudaId,
            FallbackToCpu = false,
            IntraOpNumThreads = r.Threads > 0 ? r.Threads : Environment.ProcessorCount,
            InterOpNumThreads = 1,
        });
        using var transformer = onnx.Fit(batches);
        // Map row by row over one input cursor: the transformed view's own cursor runs the model on
        // several threads and buffers their [B, T, d_ff] outputs ahead of us (gigabytes on Brown).
        var mapper = ((ITransformer)transformer).GetRowToRowMapper(batches.Schema);
        using var input = batches.GetRowCursor(batches.Schema);
        using var scored = mapper.GetRow(input, mapper.OutputSchema.Where(c => shapes.ContainsKey(c.Name) && !inputs.Contains(c.Name)));

        var maskGetter = input.GetGetter<VBuffer<long>>(batches.Schema["attention_mask"]);
        var layerReaders = plan.Layers.Select(l => l.Reader(scored, scored.Schema)).ToArray();
        VBuffer<long> maskBuffer = default;
        var realToken = new bool[B * T];
        while (input.MoveNext())
        {
            cancel.ThrowIfCancellationRequested();
            maskGetter(ref maskBuffer);
            var mask = maskBuffer.GetValues();
            for (int i = 0; i < realToken.Length; i++) realToken[i] = mask[i] == 1;
            for (int l = 0; l < uses.Length; l++) layerReaders[l](uses[l], realToken, r.Threshold, B, T);
            Report();
        }
        progress?.Report(Progress(counters, totalDocuments, clock.Elapsed));
    }

    // In-graph counts through the one runner (outputs bound once; on a GPU only the counts leave it), while a second
    // thread reads, tokenizes and packs the next batches, so host work overlaps the model's.
    static StreamTiming? StreamCounts(AnalysisRequest r, AnalysisPlan plan, Device device, IEnumerable<BatchRow> batches, LayerUnitUse[] uses, Action report, CancellationToken cancel)
    {
        int B = r.BatchSize, T = r.SeqLen;
        var outputs = plan.Layers.SelectMany(l => l.Outputs.Select(o => (o.Name, o.Shape(B, T, l.DFf).Select(d => (long)d).ToArray()))).ToList();
        using var runner = new ModelRunner(plan.Graph, device, r.Threads, B, T, outputs);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        using var queue = new BlockingCollection<BatchRow>(boundedCapacity: 4);
        var producer = Task.Run(() =>
        {
            try { foreach (var row in batches) queue.Add(row, stop.Token); }
            finally { queue.CompleteAdding(); }
        });
        long batchCount = 0;
        double model = 0, wait = 0, count = 0;
        BatchRow? last = null;
        try
        {
            var realToken = new bool[B * T];
            var scratch = new StatsScratch();
            var clock = Stopwatch.StartNew();
            foreach (var row in queue.GetConsumingEnumerable(stop.Token))
            {
                double waited = clock.Elapsed.TotalSeconds;
                runner.Run(row.InputIds, row.AttentionMask);
                double ran = clock.Elapsed.TotalSeconds;
                for (int i = 0; i < realToken.Length; i++) realToken[i] = row.AttentionMask[i] == 1;
                for (int l = 0; l < uses.Length; l++)
                    AnalysisPlan.AddStatsBatch(uses[l], realToken, B, T, runner.Longs(3 * l), runner.Longs(3 * l + 1), runner.Longs(3 * l + 2), scratch);
                report();
                if (batchCount++ > 0) (wait, model, count) = (wait + waited, model + ran - waited, count + clock.Elapsed.TotalSeconds - ran); // the first batch is start-up
                last = row;
                clock.Restart();
            }
        }
        finally
        {
            stop.Cancel();
            try { producer.Wait(); }
            catch (AggregateException) { } // inspected below
        }
        // A failure while reading, tokenizing or packing the corpus ends the stream early and surfaces here.
        if (producer.Exception?.GetBaseException() is { } failure and not OperationCanceledException)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure is UserInputException ? failure : producer.Exception.InnerException!);
        if (!r.Timing || last == null) return null;
        const int runs = 20;
        var floor = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            var clock = Stopwatch.StartNew();
            runner.Run(last.InputIds, last.AttentionMask);
            floor[i] = clock.Elapsed.TotalMilliseconds;
        }
        return new StreamTiming(batchCount - 1, B * T, model, wait, count, MathNet.Numerics.Statistics.Statistics.Median(floor), runs);
    }

    static AnalysisProgress Progress(StreamCounters c, long totalDocuments, TimeSpan elapsed)
    {
        double fraction = (double)c.Documents / totalDocuments;
        TimeSpan? left = fraction > 0 ? TimeSpan.FromSeconds(elapsed.TotalSeconds * (1 - fraction) / fraction) : null;
        return new AnalysisProgress(c.Tokens, c.Batches, c.Documents, totalDocuments, c.Tokens / Math.Max(1e-9, elapsed.TotalSeconds), elapsed, left);
    }
}
