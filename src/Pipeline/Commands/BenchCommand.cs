using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Sparsity.Pipeline.Exporting;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Streaming;
using Sparsity.Pipeline.Benchmarking;
using Sparsity.Pipeline.Variants;
using Sparsity.Training;
using Sparsity.Training.Data;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>bench</c>: the pipeline against what users would otherwise run, on one machine in one run.</summary>
public static class BenchCommand
{
    /// <summary>Statistics every contender reports, to check they measured the same thing.</summary>
    public sealed record Agreement(string Contender, long Tokens, long[] ActivePairs, double[] PerTokenMean, double[] PerBatchMean);

    /// <summary>Timings of one contender: wall seconds per repeat.</summary>
    public sealed record Timing(string Contender, string What, double[] Seconds, long Tokens)
    {
        public double Median => MathNet.Numerics.Statistics.Statistics.Median(Seconds);
        public double TokensPerSecond => Tokens / Median;
    }

    public static Command Create(TextWriter output)
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint folder from `train` (its weights are exported and also loaded by TorchSharp and PyTorch).", Required = true };
        var corpus = new Option<string>("--corpus") { Description = "Text every contender runs on (the held-out split).", Required = true };
        var tokenizer = new Option<string>("--tokenizer") { Description = "Tokenizer spec of the model.", Required = true };
        var seqLen = new Option<int>("--seq-len") { Description = "Window length T.", DefaultValueFactory = _ => 128 };
        var batch = new Option<int>("--batch-size") { Description = "Windows per batch B.", DefaultValueFactory = _ => 16 };
        var threads = new Option<int>("--threads") { Description = "Threads for every contender (ONNX Runtime intra-op, TorchSharp, PyTorch).", DefaultValueFactory = _ => Environment.ProcessorCount };
        var repeats = new Option<int>("--repeats") { Description = "Timed repeats per contender, after one warm-up; medians and spread are reported.", DefaultValueFactory = _ => 5 };
        var python = new Option<string>("--python") { Description = "Python with torch and numpy for the PyTorch-hook reference (skipped, and said so, when it cannot run).", DefaultValueFactory = _ => "/usr/bin/python3" };
        var script = new Option<string>("--pytorch-script") { Description = "The PyTorch-hook reference script.", DefaultValueFactory = _ => "bench/pytorch_hooks.py" };
        var factor = new Option<int>("--memory-factor") { Description = "Peak memory of analyze is measured on the corpus and on this many copies of it.", DefaultValueFactory = _ => 8 };
        var outDir = new Option<string>("--out") { Description = "Folder for bench.json and bench.md.", Required = true };
        var command = new Command("bench", "Time analyze against the bare forward pass, a direct ONNX Runtime loop, TorchSharp and PyTorch hooks; peak memory; pruned latency.")
        {
            checkpoint, corpus, tokenizer, seqLen, batch, threads, repeats, python, script, factor, outDir,
        };
        command.SetAction((parse, cancel) =>
        {
            Libtorch.Require("bench");
            string outFolder = parse.GetValue(outDir)!, ckpt = parse.GetValue(checkpoint)!, text = parse.GetValue(corpus)!, tok = parse.GetValue(tokenizer)!;
            int T = parse.GetValue(seqLen), B = parse.GetValue(batch), n = parse.GetValue(threads), R = Math.Max(1, parse.GetValue(repeats));
            if (!File.Exists(Path.Combine(ckpt, Checkpoint.WeightsFile))) throw new UserInputException($"{ckpt} has no {Checkpoint.WeightsFile}: pass a checkpoint folder written by `train`.");
            if (!File.Exists(text)) throw new UserInputException($"{text} does not exist.");
            OutputFolder.Write(outFolder, "bench", dir =>
            {
            string work = Path.Combine(dir, "work");
            Directory.CreateDirectory(work);

            // Same weights for everyone: export them once.
            string dense = Path.Combine(work, "model.onnx"), stats = Path.Combine(work, "model.stats.onnx");
            var (model, textTokenizer, info) = Checkpoint.Load(ckpt);
            using (model)
            {
                CheckedExport.Write(model, ExportVariant.Dense, 0f, dense);
                CheckedExport.Write(model, ExportVariant.Stats, 0f, stats);
            }
            long vocab = info.Model.VocabSize;
            var tokenizerObject = TextTokenizer.FromSpec(tok);
            var data = TokenBatches.From(text, tokenizerObject, T, B, vocab);
            output.WriteLine($"Bench: {data.Tokens:N0} tokens in {data.Batches.Count} batches of {B} × {T}, {n} threads, {R} repeats after a warm-up.");

            // The same text repeated: fixed costs (loading, ML.NET set-up, writing results) amortise, per-token costs remain.
            int k = parse.GetValue(factor);
            string copies = Path.Combine(work, $"corpus_x{k}.txt");
            File.WriteAllLines(copies, Enumerable.Repeat(TextDocuments.Read(text), k).SelectMany(d => d));
            var large = TokenBatches.From(copies, tokenizerObject, T, B, vocab);
            AnalysisRequest Analyze(string m, string o, string c, bool denseActivations = false) => new(m, c, tok, T, B, null, 0, 1, 0f, "cpu", n, Path.Combine(work, o), ["Relu"], denseActivations);
            var results = new Dictionary<string, LayerUnitUse[]>();
            var contenders = new (string Name, string What, Action Run)[]
            {
                ("tokenize", "load the tokenizer, read and tokenize the text, pack windows (included in analyze)", () => TokenBatches.From(text, TextTokenizer.FromSpec(tok), T, B, vocab)),
                ("bare forward", "ONNX Runtime, logits only, pre-tokenized batches, reused buffers", () => Contenders.BareForward(dense, data, n)),
                ("analyze (dense)", "`analyze --dense-activations` on model.onnx: activations leave the runtime and are counted in .NET; tokenization included, stats written", () => Analyzer.Run(Analyze(dense, "analyze-dense", text, denseActivations: true))),
                ("analyze (stats)", "`analyze` on model.stats.onnx: counts reduced inside the graph", () => Analyzer.Run(Analyze(stats, "analyze-stats", text))),
                ("analyze (any graph)", "`analyze` on model.onnx treated as an external graph: inputs bound, MLPs found and instrumented with in-graph counts", () => Analyzer.Run(Analyze(dense, "analyze-graph", text))),
                ("direct ORT loop", "ONNX Runtime without ML.NET, hidden outputs into bound buffers, AddDense; pre-tokenized", () => results["direct ORT loop"] = Contenders.DirectStatistics(dense, data, n)),
                ("TorchSharp", "checkpoint forward returning MLP activations, counts on the device; pre-tokenized", () => results["TorchSharp"] = Contenders.TorchSharpStatistics(ckpt, data, n)),
                ($"bare forward {k}×", $"the bare forward on the text repeated {k} times", () => Contenders.BareForward(dense, large, n)),
                ($"analyze (dense) {k}×", $"`analyze` (dense) on the text repeated {k} times", () => Analyzer.Run(Analyze(dense, "analyze-dense-large", copies, denseActivations: true))),
                ($"analyze (stats) {k}×", $"`analyze` (stats) on the text repeated {k} times", () => Analyzer.Run(Analyze(stats, "analyze-stats-large", copies))),
                ($"analyze (any graph) {k}×", $"`analyze` (any graph) on the text repeated {k} times", () => Analyzer.Run(Analyze(dense, "analyze-graph-large", copies))),
            };
            var seconds = contenders.ToDictionary(c => c.Name, _ => new List<double>());
            for (int r = 0; r <= R; r++)
            {
                foreach (var c in contenders) // interleaved, so drift in the machine's speed spreads over all of them
                {
                    cancel.ThrowIfCancellationRequested();
                    var clock = Stopwatch.StartNew();
                    c.Run();
                    if (r > 0) seconds[c.Name].Add(clock.Elapsed.TotalSeconds);
                }
                output.WriteLine(r == 0 ? "warm-up done" : $"repeat {r}/{R}: " + string.Join(", ", contenders.Select(c => $"{c.Name} {seconds[c.Name][^1]:0.000} s")));
            }
            var timings = contenders.Select(c => new Timing(c.Name, c.What, seconds[c.Name].ToArray(), c.Name.EndsWith($"{k}×") ? large.Tokens : data.Tokens)).ToList();
            var agreement = new List<Agreement> { Agree("analyze (dense)", SparsityCounts.Load(Path.Combine(work, "analyze-dense"))), Agree("analyze (stats)", SparsityCounts.Load(Path.Combine(work, "analyze-stats"))),
                Agree("analyze (any graph)", SparsityCounts.Load(Path.Combine(work, "analyze-graph"))) };
            agreement.AddRange(results.Select(kv => Agree(kv.Key, kv.Value)));

            string? pythonNote = RunPython(parse.GetValue(python)!, parse.GetValue(script)!, ckpt, data, work, n, R, timings, agreement, output);

            output.WriteLine("Peak memory of analyze (child processes)…");
            var memory = new[] { (Corpus: text, Label: "1×"), (Corpus: copies, Label: $"{k}×") }.Select(m =>
            {
                var (peak, elapsed) = PeakMemory.OfCommand(["analyze", "--model", dense, "--corpus", m.Corpus, "--tokenizer", tok, "--seq-len", $"{T}", "--batch-size", $"{B}",
                    "--threads", $"{n}", "--out", Path.Combine(work, "memory-" + m.Label)]);
                long tokens = SparsityStats.Load(Path.Combine(work, "memory-" + m.Label, SparsityStats.FileName)).Tokens;
                return (m.Label, Tokens: tokens, Peak: peak, Elapsed: elapsed);
            }).ToList();

            output.WriteLine("Pruned against dense latency (evaluate)…");
            var heldStats = SparsityStats.Load(Path.Combine(work, "analyze-dense", SparsityStats.FileName));
            var proto = OnnxGraph.Load(dense);
            var sites = MlpSites.Find(proto);
            var latency = new List<(string Name, Evaluation E)>();
            foreach (var (name, mask) in new (string, UnitMask?)[] { ("dense", null), ("dead-only", Safe(() => MaskRules.DeadOnly(heldStats))), ("flop-reduction 0.5", MaskRules.FlopReduction(heldStats, 0.5)) })
            {
                string path = dense;
                if (mask != null) { path = Path.Combine(work, $"pruned-{name.Replace(' ', '-')}.onnx"); OnnxGraph.Save(Surgery.Prune(proto, sites, mask).Model, path); }
                latency.Add((name, Evaluator.Run(new EvaluationRequest(path, text, tok, T, B, Threads: n, TimedRuns: 30))));
            }

            string md = Markdown(data, n, R, timings, agreement, memory, latency, pythonNote);
            AtomicFile.WriteAllText(Path.Combine(dir, "bench.md"), md);
            AtomicFile.WriteAllText(Path.Combine(dir, "bench.json"), JsonSerializer.Serialize(new
            {
                machine = MachineDescription.WithRuntimes(), tokens = data.Tokens, batch_size = B, seq_len = T, threads = n, repeats = R,
                timings = timings.Select(t => new { contender = t.Contender, what = t.What, seconds = t.Seconds, median = t.Median, tokens_per_second = t.TokensPerSecond }),
                agreement, memory = memory.Select(m => new { corpus = m.Label, m.Tokens, peak_bytes = m.Peak, seconds = m.Elapsed.TotalSeconds }),
                latency = latency.Select(l => new { variant = l.Name, l.E.MedianMsPerBatch, l.E.P10MsPerBatch, l.E.P90MsPerBatch, l.E.Loss, l.E.UnitsPerLayer }),
                python = pythonNote,
            }, ProjectJson.Options));
            output.WriteLine(md);
            });
            output.WriteLine($"Wrote {Path.Combine(outFolder, "bench.md")} and bench.json.");
            return Task.FromResult(0);
        });
        return command;
    }

    static UnitMask? Safe(Func<UnitMask> make)
    {
        try { return make(); }
        catch (UserInputException) { return null; } // e.g. no dead unit: nothing to prune
    }

    static Agreement Agree(string name, SparsityCounts counts) => Agree(name, counts.Layers.Select(l => l.ToUse()).ToArray());

    static Agreement Agree(string name, LayerUnitUse[] uses) => new(name, uses[0].Tokens,
        uses.Select(u => u.TokensPerUnit.ToArray().Sum()).ToArray(), uses.Select(u => u.PerTokenUnitUse.Mean).ToArray(), uses.Select(u => u.PerBatchUnitUse.Mean).ToArray());

    // The PyTorch-hook reference: a separate Python process on the same weights, ids and threads.
    static string? RunPython(string python, string script, string ckpt, TokenBatches data, string work, int threads, int repeats,
        List<Timing> timings, List<Agreement> agreement, TextWriter output)
    {
        if (!File.Exists(script)) return $"PyTorch reference skipped: {script} not found (run bench from the repository root).";
        string ids = Path.Combine(work, "batches.i64"), result = Path.Combine(work, "pytorch.json");
        data.Write(ids);
        var start = new ProcessStartInfo(python) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in new[] { script, "--checkpoint", ckpt, "--batches", ids, "--count", $"{data.Batches.Count}", "--batch-size", $"{data.BatchSize}",
                     "--seq-len", $"{data.SeqLen}", "--threads", $"{threads}", "--repeats", $"{repeats}", "--out", result }) start.ArgumentList.Add(a);
        output.WriteLine($"PyTorch reference: {python} {script} …");
        try
        {
            using var p = Process.Start(start)!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0) return $"PyTorch reference failed ({python}): {err.Trim().Split('\n')[^1]}";
        }
        catch (System.ComponentModel.Win32Exception e) { return $"PyTorch reference skipped: cannot start {python} ({e.Message})."; }
        using var json = JsonDocument.Parse(File.ReadAllText(result));
        var root = json.RootElement;
        timings.Add(new Timing("PyTorch hooks", $"Python {root.GetProperty("python").GetString()}, torch {root.GetProperty("torch").GetString()}: forward hooks on the ReLUs, counts in torch; pre-tokenized",
            root.GetProperty("seconds").EnumerateArray().Select(e => e.GetDouble()).ToArray(), data.Tokens));
        timings.Add(new Timing("PyTorch bare forward", "the same PyTorch model and weights without hooks (what the hooks cost)",
            root.GetProperty("bare_seconds").EnumerateArray().Select(e => e.GetDouble()).ToArray(), data.Tokens));
        var layers = root.GetProperty("layers").EnumerateArray().ToList();
        agreement.Add(new Agreement("PyTorch hooks", root.GetProperty("tokens").GetInt64(), layers.Select(l => l.GetProperty("active_pairs").GetInt64()).ToArray(),
            layers.Select(l => l.GetProperty("per_token_mean").GetDouble()).ToArray(), layers.Select(l => l.GetProperty("per_batch_mean").GetDouble()).ToArray()));
        return null;
    }

    static string Markdown(TokenBatches data, int threads, int repeats, List<Timing> timings, List<Agreement> agreement,
        List<(string Label, long Tokens, long Peak, TimeSpan Elapsed)> memory, List<(string Name, Evaluation E)> latency, string? pythonNote)
    {
        var md = new StringBuilder();
        var bare = timings.First(t => t.Contender == "bare forward");
        var tokenize = timings.First(t => t.Contender == "tokenize");
        md.AppendLine(CultureInfo.InvariantCulture, $"Machine: {MachineDescription.WithRuntimes()}. {data.Tokens:N0} tokens, batches of {data.BatchSize} × {data.SeqLen}, {threads} threads everywhere, median of {repeats} repeats after a warm-up (min–max in brackets).").AppendLine();
        md.AppendLine("| contender | what it runs | median s | min–max s | tokens/s | × bare forward (same tokens) | × (bare forward + tokenize) |");
        md.AppendLine("|---|---|---:|---:|---:|---:|---:|");
        foreach (var t in timings)
        {
            var reference = timings.FirstOrDefault(b => b.Contender.StartsWith("bare forward") && b.Tokens == t.Tokens) ?? bare; // the bare forward on the same tokens
            md.AppendLine(CultureInfo.InvariantCulture, $"| {t.Contender} | {t.What} | {t.Median:0.000} | {t.Seconds.Min():0.000}–{t.Seconds.Max():0.000} | {t.TokensPerSecond:N0} | {t.Median / reference.Median:0.00} | {(t.Tokens == data.Tokens ? (t.Median / (bare.Median + tokenize.Median)).ToString("0.00") : "")} |");
        }
        md.AppendLine();
        if (pythonNote != null) md.AppendLine(pythonNote).AppendLine();
        md.AppendLine("Same statistics from every contender (tokens; active (token, unit) pairs per layer; mean units per token and per batch, layer 0 / last):").AppendLine();
        md.AppendLine("| contender | tokens | active pairs per layer | units/token L0, last | units/batch L0, last |");
        md.AppendLine("|---|---:|---|---|---|");
        foreach (var a in agreement)
            md.AppendLine(CultureInfo.InvariantCulture, $"| {a.Contender} | {a.Tokens:N0} | {string.Join(" / ", a.ActivePairs.Select(x => x.ToString("N0", CultureInfo.InvariantCulture)))} | {a.PerTokenMean[0]:0.000}, {a.PerTokenMean[^1]:0.000} | {a.PerBatchMean[0]:0.00}, {a.PerBatchMean[^1]:0.00} |");
        md.AppendLine();
        md.AppendLine("Peak resident memory of `analyze` (dense model, child process, VmHWM):").AppendLine();
        md.AppendLine("| corpus | tokens | peak RSS MB | wall s | ratio to 1× |");
        md.AppendLine("|---|---:|---:|---:|---:|");
        foreach (var m in memory) md.AppendLine(CultureInfo.InvariantCulture, $"| {m.Label} | {m.Tokens:N0} | {m.Peak / 1e6:0.0} | {m.Elapsed.TotalSeconds:0.00} | {(double)m.Peak / memory[0].Peak:0.00} |");
        md.AppendLine();
        md.AppendLine("Latency of deployable variants (`evaluate`: logits only, one batch, 30 timed runs after 3 warm-ups):").AppendLine();
        md.AppendLine("| variant | units per layer | median ms | p10–p90 ms | × dense | held-out loss |");
        md.AppendLine("|---|---|---:|---:|---:|---:|");
        foreach (var (name, e) in latency)
            md.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {string.Join(" / ", e.UnitsPerLayer)} | {e.MedianMsPerBatch:0.00} | {e.P10MsPerBatch:0.00}–{e.P90MsPerBatch:0.00} | {e.MedianMsPerBatch / latency[0].E.MedianMsPerBatch:0.00} | {e.Loss:0.0000} |");
        return md.ToString();
    }
}
