using System.CommandLine;
using System.Text.Json;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Streaming;
using Sparsity.Pipeline.Variants;
using Sparsity.Training.Data;
using Sparsity.Training;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>evaluate</c>, <c>prune</c> and <c>topk</c>: deployment variants and what they cost and gain.</summary>
public static class VariantCommands
{
    // Evaluation options shared by the three commands.
    sealed record EvalOptions(Option<string> Corpus, Option<string> Tokenizer, Option<int> SeqLen, Option<int> BatchSize, Option<long?> MaxTokens,
        Option<double> Noise, Option<int> Threads, Option<int> Runs, Option<string> Device)
    {
        public static EvalOptions Create(bool required, string corpusName) => new(
            new Option<string>(corpusName) { Description = "Held-out text to evaluate on (.txt, .jsonl, .tsv, folder, .gz).", Required = required },
            new Option<string>("--tokenizer") { Description = "Tokenizer spec of the model.", Required = required },
            new Option<int>("--seq-len") { Description = "Window length T.", Required = required },
            new Option<int>("--batch-size") { Description = "Windows per batch (also the timed batch).", DefaultValueFactory = _ => 16 },
            new Option<long?>("--max-tokens") { Description = "Evaluate on at most this many tokens." },
            new Option<double>("--noise") { Description = "Fraction of input tokens replaced by random ids for the robustness accuracy.", DefaultValueFactory = _ => 0.1 },
            new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads (stated in the output).", DefaultValueFactory = _ => 2 },
            new Option<int>("--runs") { Description = "Timed runs after 3 warm-up runs.", DefaultValueFactory = _ => 20 },
            new Option<string>("--device") { Description = "cpu, cuda, cuda:N or auto (says which it chose).", DefaultValueFactory = _ => "cpu" });

        public IEnumerable<Option> All => [Corpus, Tokenizer, SeqLen, BatchSize, MaxTokens, Noise, Threads, Runs, Device];

        public EvaluationRequest Request(ParseResult p, string model, TextWriter? note = null) =>
            new(model, p.GetValue(Corpus) ?? throw new UserInputException($"{Corpus.Name} is required to evaluate variants."),
                p.GetValue(Tokenizer) ?? throw new UserInputException("--tokenizer is required to evaluate variants."),
                p.GetValue(SeqLen) is > 0 and var t ? t : throw new UserInputException("--seq-len is required to evaluate variants."),
                p.GetValue(BatchSize), p.GetValue(MaxTokens), p.GetValue(Noise), 0, p.GetValue(Threads), 3, Math.Max(1, p.GetValue(Runs)),
                Device: Devices.Resolve(p.GetValue(Device)!, note));
    }

    internal static string CommandLine(ParseResult p) => "relu-sparsity " + string.Join(' ', p.Tokens.Select(t => t.Value.Contains(' ') ? $"\"{t.Value}\"" : t.Value));
    static bool IsFile(string path) => path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);

    public static Command Evaluate(TextWriter output)
    {
        var model = new Option<string>("--model") { Description = "ONNX language model with a logits output.", Required = true };
        var activation = ExportCommands.ActivationOption();
        var eval = EvalOptions.Create(required: true, "--corpus");
        var outDir = new Option<string?>("--out") { Description = "Folder for evaluation.json and evaluation.md." };
        var command = new Command("evaluate", "Held-out loss, perplexity, accuracy, ECE, noise robustness, size, MLP FLOPs and latency of an ONNX model.") { model, activation, outDir };
        foreach (var o in eval.All) command.Add(o);
        command.SetAction(p =>
        {
            var e = Evaluator.Run(eval.Request(p, p.GetValue(model)!, output) with { Activations = p.GetValue(activation) });
            string table = VariantFolder.Table([(e.Model, e)]);
            output.WriteLine(table);
            if (p.GetValue(outDir) is string dir)
                OutputFolder.Write(dir, "evaluate", d =>
                {
                    File.WriteAllText(Path.Combine(d, "evaluation.json"), JsonSerializer.Serialize(e, ProjectJson.Options));
                    File.WriteAllText(Path.Combine(d, "evaluation.md"), table);
                });
            return 0;
        });
        return command;
    }

    public static Command Prune(TextWriter output)
    {
        var model = ExportCommands.ModelOption();
        var activation = ExportCommands.ActivationOption();
        var mask = new Option<string?>("--mask") { Description = "mask.json: per layer, the kept unit indices." };
        var stats = new Option<string?>("--stats") { Description = "stats.json of `analyze`, to derive the mask with one rule below." };
        var deadOnly = new Option<bool>("--dead-only") { Description = "Remove units never active in the statistics." };
        var minFrequency = new Option<double?>("--min-frequency") { Description = "Remove units active on fewer than this fraction of tokens." };
        var keepFraction = new Option<double?>("--keep-fraction") { Description = "Keep this fraction of each layer's units, the most active." };
        var flopReduction = new Option<double?>("--flop-reduction") { Description = "Remove the least active units across layers until MLP FLOPs fall by this fraction." };
        var allowStatsCorpus = new Option<bool>("--allow-stats-corpus") { Description = "Allow evaluating on the text the statistics came from." };
        var outPath = new Option<string>("--out") { Description = "A .onnx file (the pruned graph only), or a folder: model, mask, tokenizer, evaluation against the input model, model card.", Required = true };
        var eval = EvalOptions.Create(required: false, "--eval-corpus");
        var command = new Command("prune", "Remove MLP units: slice the up- and down-projection weights; optionally evaluate the result against the input model.")
        { model, activation, mask, stats, deadOnly, minFrequency, keepFraction, flopReduction, allowStatsCorpus, outPath };
        foreach (var o in eval.All) command.Add(o);
        command.SetAction(p =>
        {
            var (proto, sites) = ExportCommands.LoadSites(p, model, activation);
            if (p.GetValue(stats) is string statsFile) RequireStatsOf(statsFile, p.GetValue(model)!);
            var unitMask = BuildMask(p, mask, stats, deadOnly, minFrequency, keepFraction, flopReduction);
            var (pruned, prunedSites, report) = Surgery.Prune(proto, sites, unitMask);
            output.WriteLine($"Units per layer: {string.Join(" ", report.UnitsBefore)} → {string.Join(" ", report.UnitsAfter)} ({unitMask.Rule})");
            output.WriteLine($"Parameters: {report.ParametersBefore:N0} → {report.ParametersAfter:N0} ({100.0 * report.ParametersAfter / report.ParametersBefore:0.0} %); bytes: {report.BytesBefore:N0} → {report.BytesAfter:N0}");
            // Dead units are dead on the text the statistics came from: on a batch of it the pruned model must be exact.
            var statsBatch = p.GetValue(deadOnly) && p.GetValue(stats) is string sp ? StatsBatch(sp, GraphInputs.VocabularySize(proto)) : null;
            if (statsBatch != null)
                output.WriteLine($"Exact on the statistics' text: max |Δ logits| = {GraphCheck.Verify(pruned, "pruned graph", statsBatch, reference: proto):E2} on a batch of {statsBatch.Batch} × {statsBatch.SeqLen}.");
            else
                GraphCheck.Verify(pruned, "pruned graph", Probe(proto));
            string path = p.GetValue(outPath)!;
            if (IsFile(path))
            {
                OnnxGraph.Save(pruned, path);
                MlpSidecar.Write(path, prunedSites);
                output.WriteLine($"Wrote {path}");
                return 0;
            }
            OutputFolder.RequireWritable(path, "prune");
            var request = eval.Request(p, p.GetValue(model)!, output) with { Activations = p.GetValue(activation) };
            if (p.GetValue(stats) is string statsPath && !p.GetValue(allowStatsCorpus) && SameFile(StatsCorpus(statsPath), request.Corpus))
                throw new UserInputException($"--eval-corpus is the text the statistics came from ({request.Corpus}): evaluate on held-out text, or pass --allow-stats-corpus.");
            var reference = Evaluator.Run(request);
            Evaluation result = null!;
            OutputFolder.Write(path, "prune", dir => result = VariantFolder.Write(dir, pruned, $"Pruned {Path.GetFileNameWithoutExtension(p.GetValue(model))}", CommandLine(p), request, reference, unitMask));
            output.WriteLine(VariantFolder.Table([("input model", reference), ("pruned", result)]));
            output.WriteLine($"Wrote {path}/ (model.onnx, mask.json, evaluation.json, README.md)");
            return 0;
        });
        return command;
    }

    public static Command TopK(TextWriter output)
    {
        var model = ExportCommands.ModelOption();
        var activation = ExportCommands.ActivationOption();
        var k = new Option<string?>("--k") { Description = "k values separated by commas: one variant per k (1 ≤ k ≤ d_ff)." };
        var kPerLayer = new Option<string?>("--k-per-layer") { Description = "One k per layer, separated by commas: a single variant." };
        var outPath = new Option<string>("--out") { Description = "A .onnx file (one variant), or a folder: one evaluated variant folder per k and a comparison table.", Required = true };
        var eval = EvalOptions.Create(required: false, "--eval-corpus");
        var command = new Command("topk", "Keep only the k largest MLP activations per token (Li et al. §4.2), and measure what it does.") { model, activation, k, kPerLayer, outPath };
        foreach (var o in eval.All) command.Add(o);
        command.SetAction(p =>
        {
            var (proto, sites) = ExportCommands.LoadSites(p, model, activation);
            if ((p.GetValue(k) == null) == (p.GetValue(kPerLayer) == null)) throw new UserInputException("Give either --k or --k-per-layer.");
            var variants = p.GetValue(kPerLayer) is string perLayer
                ? [(Name: "k=" + perLayer.Replace(',', '/'), Folder: "k_" + perLayer.Replace(',', '_'), Ks: Ints(perLayer, "--k-per-layer"))]
                : Ints(p.GetValue(k)!, "--k").Select(v => (Name: $"k={v}", Folder: $"k{v}", Ks: new List<int> { v })).ToList();
            string path = p.GetValue(outPath)!;
            if (IsFile(path))
            {
                if (variants.Count != 1) throw new UserInputException("A .onnx --out takes one variant: give one --k, or write a folder.");
                var topK = Surgery.InsertTopK(proto, sites, variants[0].Ks);
                if (sites.All(s => variants[0].Ks[variants[0].Ks.Count == 1 ? 0 : s.Layer] == s.DFf))
                    output.WriteLine($"Note: k equals d_ff in every layer, so this model computes exactly what the input model does (checked: max |Δ logits| = {GraphCheck.Verify(topK, "Top-k graph", Probe(proto), reference: proto):E2}).");
                else
                    GraphCheck.Verify(topK, "Top-k graph", Probe(proto));
                OnnxGraph.Save(topK, path);
                MlpSidecar.Write(path, sites);
                output.WriteLine($"Top-k ({variants[0].Name}) inserted in {sites.Count} layers. Wrote {path}");
                return 0;
            }
            OutputFolder.RequireWritable(path, "topk");
            var built = variants.Select(v => (Variant: v, Model: Surgery.InsertTopK(proto, sites, v.Ks))).ToList(); // every k checked before any long work
            foreach (var (v, m) in built) GraphCheck.Verify(m, $"Top-k graph ({v.Name})", Probe(proto), reference: sites.All(s => v.Ks[v.Ks.Count == 1 ? 0 : s.Layer] == s.DFf) ? proto : null);
            var request = eval.Request(p, p.GetValue(model)!, output) with { Activations = p.GetValue(activation) };
            var reference = Evaluator.Run(request);
            var rows = new List<(string, Evaluation)> { ("dense", reference) };
            string table = "";
            OutputFolder.Write(path, "topk", dir =>
            {
                foreach (var (v, topKModel) in built)
                {
                    var e = VariantFolder.Write(Path.Combine(dir, v.Folder), topKModel, $"Top-k variant ({v.Name}) of {Path.GetFileNameWithoutExtension(p.GetValue(model))}", CommandLine(p), request, reference, null);
                    rows.Add((v.Name, e));
                    output.WriteLine($"{v.Name}: loss {e.Loss:0.0000}, accuracy {e.Accuracy:P2}, ECE {e.ExpectedCalibrationError:P2}, noisy accuracy {e.NoisyAccuracy:P2}");
                }
                table = VariantFolder.Table(rows);
                File.WriteAllText(Path.Combine(dir, "topk.md"), "# Top-k variants\n\n" + table);
                File.WriteAllText(Path.Combine(dir, "topk.json"), JsonSerializer.Serialize(rows.Select(r => new { variant = r.Item1, evaluation = r.Item2 }), ProjectJson.Options));
            });
            output.WriteLine(table);
            return 0;
        });
        return command;
    }

    static UnitMask BuildMask(ParseResult p, Option<string?> mask, Option<string?> stats, Option<bool> deadOnly, Option<double?> minFrequency, Option<double?> keepFraction, Option<double?> flopReduction)
    {
        int rules = (p.GetValue(deadOnly) ? 1 : 0) + new[] { p.GetValue(minFrequency), p.GetValue(keepFraction), p.GetValue(flopReduction) }.Count(v => v != null);
        if (p.GetValue(mask) is string maskPath)
            return rules == 0 && p.GetValue(stats) == null ? UnitMask.Load(maskPath) : throw new UserInputException("--mask cannot be combined with --stats or a rule.");
        if (p.GetValue(stats) is not string statsPath) throw new UserInputException("Give --mask mask.json, or --stats stats.json with one rule (--dead-only, --min-frequency, --keep-fraction, --flop-reduction).");
        if (rules != 1) throw new UserInputException("With --stats give exactly one rule: --dead-only, --min-frequency f, --keep-fraction p or --flop-reduction r.");
        var s = SparsityStats.Load(statsPath);
        if (p.GetValue(deadOnly)) return MaskRules.DeadOnly(s);
        if (p.GetValue(minFrequency) is double f) return MaskRules.MinFrequency(s, f);
        if (p.GetValue(keepFraction) is double kf) return MaskRules.KeepFraction(s, kf);
        return MaskRules.FlopReduction(s, p.GetValue(flopReduction)!.Value);
    }

    // A mask from another model's statistics would remove the wrong units: the stats record the model's SHA-256.
    static void RequireStatsOf(string statsPath, string modelPath)
    {
        var s = SparsityStats.Load(statsPath);
        if (s.ModelSha256 != null && s.ModelSha256 != Provenance.ModelSha256(modelPath))
            throw new UserInputException($"{statsPath} describes another model ({s.Model}, SHA-256 {s.ModelSha256[..12]}…), not {modelPath}: analyze this model first.");
    }

    // A probe batch of seeded ids for checking that a written graph loads and runs.
    internal static ProbeBatch Probe(Onnx.ModelProto model) => ProbeBatch.Random(GraphInputs.VocabularySize(model) ?? 2);

    // The first batch of the text the statistics came from, when it is still readable; null otherwise.
    static ProbeBatch? StatsBatch(string statsPath, long? vocab)
    {
        var s = SparsityStats.Load(statsPath);
        if (!File.Exists(s.Corpus) && !Directory.Exists(s.Corpus)) return null;
        var tokenizer = TextTokenizer.FromSpec(s.Tokenizer);
        var documents = TextDocuments.Read(s.Corpus).Select(d => tokenizer.Encode(d).Select(i => (long)i).ToArray());
        var first = CorpusBatches.Pack(documents, s.SeqLen, s.BatchSize, null, 0, 1, vocab ?? long.MaxValue, new StreamCounters()).FirstOrDefault();
        return first == null ? null : new ProbeBatch(first.InputIds, first.AttentionMask, s.BatchSize, s.SeqLen);
    }

    static string StatsCorpus(string statsPath) => SparsityStats.Load(statsPath).Corpus;
    static bool SameFile(string a, string b) => Path.GetFullPath(a) == Path.GetFullPath(b);

    static List<int> Ints(string list, string option) => list.Split(',').Select(s => int.TryParse(s.Trim(), out int v) ? v
        : throw new UserInputException($"{option} '{s}' is not an integer.")).ToList();
}
