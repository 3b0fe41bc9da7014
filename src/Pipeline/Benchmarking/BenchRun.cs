using System.Diagnostics;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Exporting;
using Sparsity.Pipeline.Streaming;
using Sparsity.Pipeline.Variants;
using Sparsity.Training;

namespace Sparsity.Pipeline.Benchmarking;

/// <summary>
/// What <c>bench</c> runs: a checkpoint (exported here; TorchSharp and PyTorch rows too) or any ONNX graph
/// (<c>Model</c>; the rows that need the checkpoint are skipped with a note), held-out text, batch shape, threads,
/// repeats, the PyTorch reference, the copies for the memory check, and the device every ONNX Runtime row runs on.
/// </summary>
public sealed record BenchRequest(
    string? Checkpoint,
    string Corpus,
    string Tokenizer,
    int SeqLen,
    int BatchSize,
    int Threads,
    int Repeats,
    string Python,
    string PyTorchScript,
    int MemoryFactor,
    string? Model = null,
    Runtime.Device? Device = null
);

/// <summary>Statistics every contender reports, to check they measured the same thing.</summary>
public sealed record Agreement(
    string Contender,
    long Tokens,
    long[] ActivePairs,
    double[] PerTokenMean,
    double[] PerBatchMean
)
{
    /// <summary>From per-layer unit use.</summary>
    public static Agreement Of(string contender, IReadOnlyList<LayerUnitUse> uses) =>
        new(
            contender,
            uses[0].Tokens,
            uses.Select(u => u.TokensPerUnit.ToArray().Sum()).ToArray(),
            uses.Select(u => u.PerTokenUnitUse.Mean).ToArray(),
            uses.Select(u => u.PerBatchUnitUse.Mean).ToArray()
        );

    /// <summary>From an analysis folder.</summary>
    public static Agreement Of(string contender, string analysisDir) =>
        Of(contender, SparsityCounts.Load(analysisDir).Layers.Select(l => l.ToUse()).ToList());
}

/// <summary>Timings of one contender: wall seconds per repeat.</summary>
public sealed record Timing(string Contender, string What, double[] Seconds, long Tokens)
{
    /// <summary>Median seconds.</summary>
    public double Median => MathNet.Numerics.Statistics.Statistics.Median(Seconds);

    /// <summary>Tokens per second at the median.</summary>
    public double TokensPerSecond => Tokens / Median;
}

/// <summary>Peak resident memory of one <c>analyze</c> child process.</summary>
public sealed record MemoryRow(string Corpus, long Tokens, long PeakBytes, TimeSpan Elapsed);

/// <summary>Everything one bench run measured.</summary>
public sealed record BenchResult(
    TokenBatches Data,
    BenchRequest Request,
    IReadOnlyList<Timing> Timings,
    IReadOnlyList<Agreement> Agreement,
    IReadOnlyList<MemoryRow> Memory,
    IReadOnlyList<(string Name, Evaluation E)> Latency,
    string? PythonNote
);

/// <summary>
/// The bench harness: analyze against what users would otherwise run (bare forward, a direct ONNX Runtime loop,
/// TorchSharp, PyTorch hooks) on the same weights, batches and threads, interleaved repeats; peak memory; pruned
/// latency.
/// </summary>
public static class BenchRun
{
    /// <summary>Runs every contender, writing its work files under <paramref name="work"/>; progress goes to
    /// <paramref name="log"/>.</summary>
    public static BenchResult Run(BenchRequest q, string work, TextWriter log, CancellationToken cancel = default)
    {
        string text = q.Corpus,
            tok = q.Tokenizer;
        int T = q.SeqLen,
            B = q.BatchSize,
            n = q.Threads,
            R = Math.Max(1, q.Repeats);
        var device = q.Device ?? Runtime.Device.Cpu;
        bool gpu = device.CudaId != null;
        Directory.CreateDirectory(work);

        // Same weights for everyone: a checkpoint is exported once (dense and stats); a graph is used as given.
        string dense = q.Model ?? Path.Combine(work, "model.onnx"),
            stats = Path.Combine(work, "model.stats.onnx");
        long vocab;
        if (q.Checkpoint is string checkpoint)
        {
            var (model, _, info) = Checkpoint.Load(checkpoint);
            using (model)
            {
                CheckedExport.Write(model, ExportVariant.Dense, 0f, dense);
                CheckedExport.Write(model, ExportVariant.Stats, 0f, stats);
            }
            vocab = info.Model.VocabSize;
        }
        else
            vocab = GraphInputs.VocabularySize(OnnxGraph.Load(dense))
                ?? throw new UserInputException(
                    $"{dense}: cannot tell the vocabulary size; bench needs a language model with a logits output."
                );
        var tokenizerObject = TextTokenizer.FromSpec(tok);
        var data = TokenBatches.From(text, tokenizerObject, T, B, vocab);
        log.WriteLine(
            $"Bench: {data.Tokens:N0} tokens in {data.Batches.Count} batches of {B} × {T}, {n} threads, {R} repeats after a warm-up."
        );

        // The same text repeated: fixed costs (loading, ML.NET set-up, writing results) amortise, per-token costs
        // remain.
        int k = q.MemoryFactor;
        string copies = Path.Combine(work, $"corpus_x{k}.txt");
        File.WriteAllLines(copies, Enumerable.Repeat(TextDocuments.Read(text), k).SelectMany(d => d));
        var large = TokenBatches.From(copies, tokenizerObject, T, B, vocab);
        AnalysisRequest Analyze(string m, string o, string c, bool denseActivations = false) =>
            new()
            {
                Model = m,
                Corpus = c,
                Tokenizer = TokenizerSpec.Parse(tok),
                SeqLen = T,
                BatchSize = B,
                Devices = [device],
                Threads = n,
                OutDir = Path.Combine(work, o),
                DenseActivations = denseActivations,
            };
        var results = new Dictionary<string, LayerUnitUse[]>();
        // Rows marked true need the checkpoint (its stats export, its TorchSharp model): a graph alone leaves them out
        // (said in the notes).
        var contenders = new (string Name, string What, Action Run, bool NeedsCheckpoint)[]
        {
            (
                "tokenize",
                "load the tokenizer, read and tokenize the text, pack windows (included in analyze)",
                () => TokenBatches.From(text, TextTokenizer.FromSpec(tok), T, B, vocab),
                false
            ),
            (
                "bare forward",
                "ONNX Runtime, logits only, pre-tokenized batches, reused buffers",
                () => Contenders.BareForward(dense, data, n, device),
                false
            ),
            (
                "analyze (dense)",
                "`analyze --dense-activations` on model.onnx: activations leave the runtime and are counted in .NET; tokenization included, stats written",
                () => Analyzer.Run(Analyze(dense, "analyze-dense", text, denseActivations: true)),
                false
            ),
            (
                "analyze (stats)",
                "`analyze` on model.stats.onnx: counts reduced inside the graph",
                () => Analyzer.Run(Analyze(stats, "analyze-stats", text)),
                true
            ),
            (
                "analyze (any graph)",
                "`analyze` on model.onnx treated as an external graph: inputs bound, MLPs found and instrumented with in-graph counts",
                () => Analyzer.Run(Analyze(dense, "analyze-graph", text)),
                false
            ),
            (
                "direct ORT loop",
                "ONNX Runtime without ML.NET, hidden outputs into bound buffers, AddDense; pre-tokenized",
                () => results["direct ORT loop"] = Contenders.DirectStatistics(dense, data, n, device),
                false
            ),
            (
                "TorchSharp",
                "checkpoint forward returning MLP activations, counts on the device; pre-tokenized",
                () => results["TorchSharp"] = Contenders.TorchSharpStatistics(q.Checkpoint!, data, n),
                !gpu
            ),
            (
                $"bare forward {k}×",
                $"the bare forward on the text repeated {k} times",
                () => Contenders.BareForward(dense, large, n, device),
                false
            ),
            (
                $"analyze (dense) {k}×",
                $"`analyze` (dense) on the text repeated {k} times",
                () => Analyzer.Run(Analyze(dense, "analyze-dense-large", copies, denseActivations: true)),
                false
            ),
            (
                $"analyze (stats) {k}×",
                $"`analyze` (stats) on the text repeated {k} times",
                () => Analyzer.Run(Analyze(stats, "analyze-stats-large", copies)),
                true
            ),
            (
                $"analyze (any graph) {k}×",
                $"`analyze` (any graph) on the text repeated {k} times",
                () => Analyzer.Run(Analyze(dense, "analyze-graph-large", copies)),
                false
            ),
        }
            .Where(c => q.Checkpoint != null || !c.NeedsCheckpoint)
            .Where(c => !(gpu && c.Name == "TorchSharp"))
            .ToList();
        var seconds = contenders.ToDictionary(c => c.Name, _ => new List<double>());
        for (int r = 0; r <= R; r++)
        {
            foreach (var c in contenders) // interleaved, so drift in the machine's speed spreads over all of them
            {
                cancel.ThrowIfCancellationRequested();
                var clock = Stopwatch.StartNew();
                c.Run();
                if (r > 0)
                    seconds[c.Name].Add(clock.Elapsed.TotalSeconds);
            }
            log.WriteLine(
                r == 0
                    ? "warm-up done"
                    : $"repeat {r}/{R}: "
                        + string.Join(", ", contenders.Select(c => $"{c.Name} {seconds[c.Name][^1]:0.000} s"))
            );
        }
        var timings = contenders
            .Select(c => new Timing(
                c.Name,
                c.What,
                seconds[c.Name].ToArray(),
                c.Name.EndsWith($"{k}×") ? large.Tokens : data.Tokens
            ))
            .ToList();
        var agreement = new[]
        {
            ("analyze (dense)", "analyze-dense"),
            ("analyze (stats)", "analyze-stats"),
            ("analyze (any graph)", "analyze-graph"),
        }
            .Where(a => Directory.Exists(Path.Combine(work, a.Item2)))
            .Select(a => Agreement.Of(a.Item1, Path.Combine(work, a.Item2)))
            .Concat(results.Select(kv => Agreement.Of(kv.Key, kv.Value)))
            .ToList();

        string? pythonNote =
            gpu
                ? $"On {device} the TorchSharp and PyTorch-hook rows are left out: they run on the CPU here (this project's TorchSharp has no CUDA build); bench/gpu/opt125m.py times PyTorch's hooks on the GPU."
            : q.Checkpoint is string ckpt
                ? PyTorchReference.Run(q.Python, q.PyTorchScript, ckpt, data, work, n, R, timings, agreement, log)
            : "Benchmarked a graph (--model) without its checkpoint: the stats-export, TorchSharp and PyTorch-hook rows need the checkpoint and are left out.";

        log.WriteLine("Peak memory of analyze (child processes)…");
        var formats = BigCorpusFormats.Write(copies, tokenizerObject, work);
        var memory = new[]
        {
            (Corpus: text, Label: "1×", Tokenizer: tok),
            (Corpus: copies, Label: $"{k}×", Tokenizer: tok),
            (Corpus: formats.JsonLinesZstd, Label: $"{k}× as .jsonl.zst", Tokenizer: tok),
            (Corpus: formats.ParquetText, Label: $"{k}× as Parquet (text)", Tokenizer: tok),
            (Corpus: formats.TokenFile, Label: $"{k}× as token ids (.u32.bin)", Tokenizer: "ids"),
        }
            .Select(m =>
            {
                string outDir = Path.Combine(work, "memory-" + m.Label.Replace(' ', '_'));
                var (peak, elapsed) = PeakMemory.OfCommand([
                    "analyze",
                    "--model",
                    dense,
                    "--corpus",
                    m.Corpus,
                    "--tokenizer",
                    m.Tokenizer,
                    "--seq-len",
                    $"{T}",
                    "--batch-size",
                    $"{B}",
                    "--threads",
                    $"{n}",
                    "--device",
                    device.ToString(),
                    "--out",
                    outDir,
                ]);
                long tokens = SparsityStats.Load(Path.Combine(outDir, SparsityStats.FileName)).Tokens;
                return new MemoryRow(m.Label, tokens, peak, elapsed);
            })
            .ToList();

        log.WriteLine("Pruned against dense latency (evaluate)…");
        var heldStats = SparsityStats.Load(Path.Combine(work, "analyze-dense", SparsityStats.FileName));
        var proto = OnnxGraph.Load(dense);
        var sites = MlpSites.Find(proto);
        var latency = new List<(string Name, Evaluation E)>();
        foreach (
            var (name, mask) in new (string, UnitMask?)[]
            {
                ("dense", null),
                ("dead-only", Safe(() => MaskRules.DeadOnly(heldStats))),
                ("flop-reduction 0.5", MaskRules.FlopReduction(heldStats, 0.5)),
            }
        )
        {
            string path = dense;
            if (mask != null && mask.Layers.All(l => l.Kept.Length == l.DFf))
                continue; // e.g. dead-only on a model with no dead unit: nothing to prune
            if (mask != null)
            {
                var pruned = Surgery.Prune(proto, sites, mask).Model;
                Runtime.GraphCheck.Verify(pruned, "pruned graph", Runtime.ProbeBatch.For(proto)); // as `prune` does: a graph that does not run is one clear line
                path = Path.Combine(work, $"pruned-{name.Replace(' ', '-')}.onnx");
                OnnxGraph.Save(pruned, path);
            }
            latency.Add(
                (
                    name,
                    Evaluator.Run(
                        new EvaluationRequest(path, text, tok, T, B, Threads: n, TimedRuns: 30, Device: device)
                    )
                )
            );
        }

        return new BenchResult(data, q, timings, agreement, memory, latency, pythonNote);
    }

    static UnitMask? Safe(Func<UnitMask> make)
    {
        try
        {
            return make();
        }
        catch (UserInputException)
        {
            return null;
        } // e.g. no dead unit: nothing to prune
    }
}
