using System.CommandLine;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Pipeline.Streaming;
using Sparsity.Training;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>analyze</c> and <c>merge</c>.</summary>
public static class AnalyzeCommands
{
    /// <summary>The <c>analyze</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Analyze(TextWriter output, bool interactive)
    {
        var model = new Option<string>("--model")
        {
            Description =
                "ONNX model: this project's export (dense or stats variant) or any graph with ReLU MLPs; an encoder-decoder graph (taking decoder_input_ids) or Optimum's folder (encoder_model.onnx, decoder_model.onnx).",
            Required = true,
        };
        var corpus = new Option<string?>("--corpus")
        {
            Description =
                ".txt (one document per line), .jsonl (field text), .tsv (last column), a folder of them, or .gz (default: the built-in Brown held-out text, data/brown/heldout.txt).",
        };
        var tokenizer = new Option<string?>("--tokenizer")
        {
            Description =
                "Tokenizer spec (bpe:vocab.json,merges.txt, tiktoken:cl100k_base, bytes, ids, …; default: the BPE learned on Brown).",
        };
        var seqLen = new Option<int>("--seq-len")
        {
            Description = "Window length T: documents are cut into non-overlapping windows of T tokens.",
            Required = true,
        };
        var batch = new Option<int>("--batch-size")
        {
            Description = "Windows per batch B (one ONNX Runtime call; per-batch use depends on it).",
            DefaultValueFactory = _ => 16,
        };
        var maxTokens = new Option<long?>("--max-tokens") { Description = "Stop after this many tokens." };
        var shard = new Option<string>("--shard")
        {
            Description =
                "Process batch g only when g mod n = i (i/n), or auto: i and n from the scheduler (Slurm job array, Kubernetes Indexed Job); merge shards with `merge`.",
            DefaultValueFactory = _ => "0/1",
        };
        var shardCount = new Option<int?>("--shard-count")
        {
            Description =
                $"With --shard auto on Kubernetes: the number of shards (the Job's completions; or set {ShardChoice.CountVariable}).",
        };
        var threshold = new Option<float>("--threshold")
        {
            Description = "A unit is active when its activation exceeds this.",
            DefaultValueFactory = _ => 0f,
        };
        var device = new Option<string>("--device")
        {
            Description =
                "cpu, cuda, cuda:N or auto (cuda:0 when CUDA 13 and cuDNN 9 can be loaded, else the CPU; it says which); several: cuda:0,cuda:1 or cuda:all (the corpus is read once and its batches dealt to the devices; the result equals one device's).",
            DefaultValueFactory = _ => "cpu",
        };
        var threads = new Option<int>("--threads")
        {
            Description = "ONNX Runtime intra-op threads of each device's session (0 = all cores).",
            DefaultValueFactory = _ => 0,
        };
        var activation = new Option<string[]>("--activation")
        {
            Description = "Activation op types of MLP hidden layers (default Relu).",
            DefaultValueFactory = _ => ["Relu"],
            AllowMultipleArgumentsPerToken = true,
        };
        var outDir = new Option<string>("--out")
        {
            Description = "Folder for stats.json, counts.json and layer_{i}.csv (replaced when complete).",
            Required = true,
        };
        var precision = new Option<string>("--precision")
        {
            Description =
                "fp32, or fp16 / bf16 on a GPU: weights and compute in that type, counts exact in fp32 (units within half-precision rounding of zero may flip; stats.json records it). A graph already in fp16 runs as exported.",
            DefaultValueFactory = _ => "fp32",
        };
        var timing = new Option<bool>("--timing")
        {
            Description =
                "Say where a batch's time goes (model run, waiting for input, counting) and how far analysis is from the model alone (the floor).",
        };
        var topExamples = new Option<int>("--top-examples")
        {
            Description =
                "Keep each unit's K top windows (the K windows whose largest activation of the unit is highest, with that peak's value and position) and the histogram of its values, for `report`'s unit dashboard and `unit` (0 = off).",
            DefaultValueFactory = _ => 0,
        };
        var noFuse = new Option<bool>("--no-fuse")
        {
            Description =
                "On a GPU, run the graph as it is: without it, attention runs as ONNX Runtime's fused MultiHeadAttention where the graph's pattern is known (checked on the CPU to give the same logits first; anything else stays as it is, and a line says so).",
        };
        var cudaGraph = new Option<bool>("--cuda-graph")
        {
            Description =
                "On a GPU, capture each batch's kernels once as a CUDA graph and replay them (inputs and outputs at fixed device addresses); the graph must run wholly on the GPU.",
        };
        var profile = new Option<bool>("--profile")
        {
            Description =
                "After the stream, profile 10 runs of the last batch with ONNX Runtime's profiler: time per operator type, nodes off the GPU, host/device copies (also profile.csv).",
        };
        var pairs = new Option<string?>("--pairs")
        {
            Description =
                "Encoder-decoder models: tsv (the default: a .tsv corpus of lines source<TAB>target; the decoder is teacher-forced on the target) or reconstruct (each window of a text corpus is its own target).",
        };
        var decoderStart = new Option<long?>("--decoder-start-id")
        {
            Description =
                "Encoder-decoder models: the decoder's start id (default: decoder_start_token_id of config.json beside the model; T5: 0).",
        };
        var padId = new Option<long?>("--pad-id")
        {
            Description =
                "Encoder-decoder models: the pad id (default: pad_token_id of config.json beside the model; T5: 0).",
        };
        var denseActivations = new Option<bool>("--dense-activations")
        {
            Description =
                "Read the MLP activations out of the runtime and count them in .NET, instead of counting inside the graph (slower; same counts).",
        };
        var command = new Command(
            "analyze",
            "Stream a corpus through an ONNX model and measure how each layer's MLP units are used."
        )
        {
            model,
            corpus,
            tokenizer,
            seqLen,
            batch,
            maxTokens,
            shard,
            shardCount,
            threshold,
            device,
            threads,
            activation,
            topExamples,
            denseActivations,
            precision,
            noFuse,
            cudaGraph,
            timing,
            profile,
            pairs,
            decoderStart,
            padId,
            outDir,
        };
        command.SetAction(
            (parse, cancel) =>
            {
                var chosen = ShardChoice.Parse(
                    parse.GetValue(shard)!,
                    parse.GetValue(shardCount),
                    Environment.GetEnvironmentVariable
                );
                if (chosen.Source != "--shard")
                    output.WriteLine($"Shard {chosen.Index}/{chosen.Count} from {chosen.Source}.");
                var text = BrownDefaults.Apply(
                    output,
                    ("--corpus", parse.GetValue(corpus), BrownDefaults.Kind.HeldOutText),
                    ("--tokenizer", parse.GetValue(tokenizer), BrownDefaults.Kind.Tokenizer)
                );
                var request = new AnalysisRequest
                {
                    Model = parse.GetValue(model)!,
                    Corpus = text[0],
                    Tokenizer = TokenizerSpec.Parse(text[1]),
                    SeqLen = parse.GetValue(seqLen),
                    BatchSize = parse.GetValue(batch),
                    MaxTokens = parse.GetValue(maxTokens),
                    ShardIndex = chosen.Index,
                    ShardCount = chosen.Count,
                    Threshold = parse.GetValue(threshold),
                    Devices = Devices.ResolveAll(parse.GetValue(device)!, output),
                    Threads = parse.GetValue(threads),
                    OutDir = parse.GetValue(outDir)!,
                    Activations = parse.GetValue(activation)!,
                    DenseActivations = parse.GetValue(denseActivations),
                    Timing = parse.GetValue(timing),
                    Precision = Precisions.Parse(parse.GetValue(precision)!),
                    TopExamples = parse.GetValue(topExamples),
                    Fuse = !parse.GetValue(noFuse),
                    CudaGraph = parse.GetValue(cudaGraph),
                    Profile = parse.GetValue(profile),
                    Pairs = PairCorpus.ParseSource(parse.GetValue(pairs)),
                    DecoderStartId = parse.GetValue(decoderStart),
                    PadId = parse.GetValue(padId),
                };
                var stats = Analyzer.Run(request, new ConsoleProgress(output, interactive), cancel, notes: output);
                PrintSummary(output, stats, parse.GetValue(outDir)!);
                return Task.FromResult(0);
            }
        );
        return command;
    }

    /// <summary>The <c>merge</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Merge(TextWriter output)
    {
        var inputs = new Option<string[]>("--inputs")
        {
            Description = "Analysis folders (shards) to combine.",
            Required = true,
            AllowMultipleArgumentsPerToken = true,
        };
        var outDir = new Option<string>("--out")
        {
            Description = "Folder for the merged stats.json, counts.json and CSVs.",
            Required = true,
        };
        var partial = new Option<bool>("--partial")
        {
            Description = "Merge although some shards i/n are missing (the output lists the shards it covers).",
        };
        var command = new Command(
            "merge",
            "Add the exact counts of analysis shards: the result equals one run over all their batches."
        )
        {
            inputs,
            outDir,
            partial,
        };
        command.SetAction(parse =>
        {
            string dir = parse.GetValue(outDir)!;
            var merged = Shards.Merge(parse.GetValue(inputs)!, parse.GetValue(partial), dir);
            if (merged.Header.MissingShards() is { Count: > 0 } missing)
                output.WriteLine(
                    $"Partial merge: shards {string.Join(", ", missing.Select(m => $"{m}/{merged.Header.ShardCount}"))} are missing; the statistics cover {merged.Header.Shards.Count} of {merged.Header.ShardCount} shards."
                );
            PrintSummary(output, SparsityStats.From(merged), dir);
            return 0;
        });
        return command;
    }

    /// <summary>The <c>report</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Report(TextWriter output)
    {
        var input = new Option<string>("--in")
        {
            Description = "Analysis folder (stats.json) written by analyze or merge.",
            Required = true,
        };
        var checkpoint = new Option<string?>("--checkpoint")
        {
            Description = "Checkpoint folder of the model, to plot its training trajectory and unit death steps.",
        };
        var corpus = new Option<string?>("--corpus")
        {
            Description =
                "With --top-examples analyses: the analysed corpus, if it has moved (checked against its recorded SHA-256).",
        };
        var command = new Command(
            "report",
            "Write report.md with PNG plots of an analysis (and of training, given the checkpoint); with top examples, units.html, the unit dashboard."
        )
        {
            input,
            checkpoint,
            corpus,
        };
        command.SetAction(parse =>
        {
            string path = Sparsity.Pipeline.Report.SparsityReport.Write(
                parse.GetValue(input)!,
                parse.GetValue(checkpoint),
                parse.GetValue(corpus)
            );
            output.WriteLine($"Wrote {path}");
            if (File.Exists(Path.Combine(parse.GetValue(input)!, Sparsity.Pipeline.Report.UnitDashboard.FileName)))
                output.WriteLine(
                    $"Wrote {Path.Combine(parse.GetValue(input)!, Sparsity.Pipeline.Report.UnitDashboard.FileName)}"
                );
            return 0;
        });
        return command;
    }

    /// <summary>The <c>unit</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Unit(TextWriter output)
    {
        var stats = new Option<string>("--stats")
        {
            Description = "Analysis folder written by analyze --top-examples (or merge).",
            Required = true,
        };
        var layer = new Option<string>("--layer")
        {
            Description = "Layer index, or encoder.N / decoder.N in an encoder-decoder model.",
            Required = true,
        };
        var unit = new Option<int>("--unit")
        {
            Description = "Unit (hidden neuron) index in the layer.",
            Required = true,
        };
        var corpus = new Option<string?>("--corpus")
        {
            Description =
                "The analysed corpus, if it has moved (default: the path the analysis recorded; checked against its SHA-256).",
        };
        var command = new Command(
            "unit",
            "Print one unit's frequency, activation histogram and top windows (the peak token marked)."
        )
        {
            stats,
            layer,
            unit,
            corpus,
        };
        command.SetAction(parse =>
        {
            var contexts = Sparsity.Pipeline.Report.UnitContexts.Open(parse.GetValue(stats)!, parse.GetValue(corpus));
            var view = contexts.Views([(contexts.LayerIndex(parse.GetValue(layer)!), parse.GetValue(unit))])[0];
            Sparsity.Pipeline.Report.UnitText.Print(output, view, contexts.Counts.Header);
            return 0;
        });
        return command;
    }

    /// <summary>The <c>check</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Check(TextWriter output)
    {
        var stats = new Option<string>("--stats") { Description = "stats.json to check.", Required = true };
        var baseline = new Option<string>("--baseline")
        {
            Description = "Baseline stats.json (e.g. from the last release).",
            Required = true,
        };
        var tolerance = new Option<string[]>("--tolerance")
        {
            Description =
                "Absolute tolerance per metric, metric=value (defaults: nonzero_fraction=0.01; unit counts 1 % of d_ff).",
            AllowMultipleArgumentsPerToken = true,
            DefaultValueFactory = _ => [],
        };
        var command = new Command(
            "check",
            "Compare sparsity statistics with a baseline; exit 1 naming each metric outside tolerance (for CI gates)."
        )
        {
            stats,
            baseline,
            tolerance,
        };
        command.SetAction(parse =>
        {
            var tolerances = new Dictionary<string, double>();
            foreach (string t in parse.GetValue(tolerance)!)
            {
                var parts = t.Split('=');
                if (
                    parts.Length != 2
                    || !double.TryParse(parts[1], System.Globalization.CultureInfo.InvariantCulture, out double v)
                    || !double.IsFinite(v)
                    || v < 0
                )
                    throw new UserInputException(
                        $"--tolerance '{t}': use metric=value with a finite value ≥ 0, e.g. nonzero_fraction=0.005."
                    );
                tolerances[parts[0]] = v;
            }
            var deviations = SparsityCheck.Compare(
                SparsityStats.Load(parse.GetValue(stats)!),
                SparsityStats.Load(parse.GetValue(baseline)!),
                tolerances
            );
            foreach (var d in deviations)
                output.WriteLine("FAIL " + d);
            output.WriteLine(
                deviations.Count == 0
                    ? $"All {SparsityCheck.Metrics.Count} metrics of every layer are within tolerance of {parse.GetValue(baseline)}."
                    : $"{deviations.Count} metric(s) outside tolerance."
            );
            return deviations.Count == 0 ? 0 : 1;
        });
        return command;
    }

    static void PrintSummary(TextWriter output, SparsityStats s, string dir)
    {
        if (s.PairCounts is { } pairs)
        {
            output.WriteLine(
                $"{pairs.Pairs:N0} pairs ({s.Pairs!.Source}; decoder start id {s.Pairs.DecoderStartId}, pad id {s.Pairs.PadId}), {s.Batches:N0} batches of {s.BatchSize} × {s.SeqLen}; "
                    + $"{pairs.TruncatedSources:N0} sources and {pairs.TruncatedTargets:N0} targets cut to {s.SeqLen} tokens (shards {string.Join(",", s.Shards)}):"
            );
            output.WriteLine(
                $"{"layer", -10}  tokens   d_ff  nonzero  units/token  units/sequence  units/batch  ever active  dead"
            );
            foreach (var l in s.Layers)
                output.WriteLine(
                    $"{l.Name, -10}  {l.Tokens, 6}  {l.DFf, 5}  {l.NonzeroFraction, 7:0.0000}  {l.PerTokenUnitsMean, 11:0.0}  {l.PerSequenceUnitsMean, 14:0.0}  {l.PerBatchUnitsMean, 11:0.0}  {l.UnitsEverActive, 11}  {l.DeadUnits, 4}"
                );
            output.WriteLine($"Wrote {Path.Combine(dir, SparsityStats.FileName)}");
            return;
        }
        output.WriteLine(
            $"{s.Tokens:N0} tokens, {s.Sequences:N0} sequences, {s.Batches:N0} batches of {s.BatchSize} × {s.SeqLen} (shards {string.Join(",", s.Shards)}):"
        );
        output.WriteLine("layer   d_ff  nonzero  units/token  units/sequence  units/batch  ever active  dead");
        foreach (var l in s.Layers)
            output.WriteLine(
                $"{l.Index, 5}  {l.DFf, 5}  {l.NonzeroFraction, 7:0.0000}  {l.PerTokenUnitsMean, 11:0.0}  {l.PerSequenceUnitsMean, 14:0.0}  {l.PerBatchUnitsMean, 11:0.0}  {l.UnitsEverActive, 11}  {l.DeadUnits, 4}"
            );
        output.WriteLine($"Wrote {Path.Combine(dir, SparsityStats.FileName)}");
    }
}
