using System.CommandLine;
using System.Text.Json;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Pipeline.Streaming;
using Sparsity.Pipeline.Variants;
using Sparsity.Training;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>evaluate</c>, <c>prune</c> and <c>topk</c>: deployment variants and what they cost and gain.</summary>
public static class VariantCommands
{
    // Evaluation options shared by the three commands.
    sealed record EvalOptions(
        Option<string?> Corpus,
        Option<string?> Tokenizer,
        Option<int> SeqLen,
        Option<int> BatchSize,
        Option<long?> MaxTokens,
        Option<double> Noise,
        Option<int> Threads,
        Option<int> Runs,
        Option<string> Device,
        Option<string?> Pairs,
        Option<long?> DecoderStart,
        Option<long?> PadId
    )
    {
        public static EvalOptions Create(bool required, string corpusName) =>
            new(
                new Option<string?>(corpusName)
                {
                    Description =
                        "Held-out text to evaluate on (.txt, .jsonl, .tsv, folder, .gz; default: data/brown/heldout.txt).",
                },
                new Option<string?>("--tokenizer")
                {
                    Description = "Tokenizer spec of the model (default: the BPE learned on Brown).",
                },
                new Option<int>("--seq-len") { Description = "Window length T.", Required = required },
                new Option<int>("--batch-size")
                {
                    Description = "Windows per batch (also the timed batch).",
                    DefaultValueFactory = _ => 16,
                },
                new Option<long?>("--max-tokens") { Description = "Evaluate on at most this many tokens." },
                new Option<double>("--noise")
                {
                    Description = "Fraction of input tokens replaced by random ids for the robustness accuracy.",
                    DefaultValueFactory = _ => 0.1,
                },
                new Option<int>("--threads")
                {
                    Description = "ONNX Runtime intra-op threads (stated in the output).",
                    DefaultValueFactory = _ => 2,
                },
                new Option<int>("--runs")
                {
                    Description = "Timed runs after 3 warm-up runs.",
                    DefaultValueFactory = _ => 20,
                },
                new Option<string>("--device")
                {
                    Description = "cpu, cuda, cuda:N or auto (says which it chose).",
                    DefaultValueFactory = _ => "cpu",
                },
                new Option<string?>("--pairs")
                {
                    Description =
                        "Encoder-decoder models: tsv (the default: lines source<TAB>target, scored teacher-forced on the targets) or reconstruct (each window its own target).",
                },
                new Option<long?>("--decoder-start-id")
                {
                    Description =
                        "Encoder-decoder models: the decoder's start id (default: config.json's decoder_start_token_id).",
                },
                new Option<long?>("--pad-id")
                {
                    Description = "Encoder-decoder models: the pad id (default: config.json's pad_token_id).",
                }
            );

        public IEnumerable<Option> All =>
            [Corpus, Tokenizer, SeqLen, BatchSize, MaxTokens, Noise, Threads, Runs, Device, Pairs, DecoderStart, PadId];

        public EvaluationRequest Request(ParseResult p, string model, TextWriter note)
        {
            int seqLen = p.GetValue(SeqLen) is > 0 and var t
                ? t
                : throw new UserInputException("--seq-len is required to evaluate variants.");
            var text = BrownDefaults.Apply(
                note,
                (Corpus.Name, p.GetValue(Corpus), BrownDefaults.Kind.HeldOutText),
                (Tokenizer.Name, p.GetValue(Tokenizer), BrownDefaults.Kind.Tokenizer)
            );
            return new(
                model,
                text[0],
                text[1],
                seqLen,
                p.GetValue(BatchSize),
                p.GetValue(MaxTokens),
                p.GetValue(Noise),
                0,
                p.GetValue(Threads),
                3,
                Math.Max(1, p.GetValue(Runs)),
                Device: Devices.Resolve(p.GetValue(Device)!, note),
                Pairs: PairCorpus.ParseSource(p.GetValue(Pairs)),
                DecoderStartId: p.GetValue(DecoderStart),
                PadId: p.GetValue(PadId)
            );
        }
    }

    /// <summary>The <c>evaluate</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Evaluate(TextWriter output)
    {
        var model = new Option<string>("--model")
        {
            Description =
                "ONNX language model with a logits output; an encoder-decoder graph or Optimum folder is scored teacher-forced on pairs.",
            Required = true,
        };
        var activation = SharedOptions.ActivationOption();
        var eval = EvalOptions.Create(required: true, "--corpus");
        var outDir = new Option<string?>("--out") { Description = "Folder for evaluation.json and evaluation.md." };
        var command = new Command(
            "evaluate",
            "Held-out loss, perplexity, accuracy, ECE, noise robustness, size, MLP FLOPs and latency of an ONNX model."
        )
        {
            model,
            activation,
            outDir,
        };
        foreach (var o in eval.All)
            command.Add(o);
        command.SetAction(p =>
        {
            var e = Evaluator.Run(
                eval.Request(p, p.GetValue(model)!, output) with
                {
                    Activations = p.GetValue(activation),
                }
            );
            output.WriteLine(VariantFolder.Table([(e.Model, e)]));
            if (p.GetValue(outDir) is string dir)
                VariantFolder.WriteEvaluation(dir, e);
            return 0;
        });
        return command;
    }

    /// <summary>The <c>prune</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Prune(TextWriter output)
    {
        var model = SharedOptions.ModelOption();
        var activation = SharedOptions.ActivationOption();
        var mask = new Option<string?>("--mask") { Description = "mask.json: per layer, the kept unit indices." };
        var stats = new Option<string?>("--stats")
        {
            Description = "stats.json of `analyze`, to derive the mask with one rule below.",
        };
        var deadOnly = new Option<bool>("--dead-only") { Description = "Remove units never active in the statistics." };
        var minFrequency = new Option<double?>("--min-frequency")
        {
            Description = "Remove units active on fewer than this fraction of tokens.",
        };
        var keepFraction = new Option<double?>("--keep-fraction")
        {
            Description = "Keep this fraction of each layer's units, the most active.",
        };
        var flopReduction = new Option<double?>("--flop-reduction")
        {
            Description = "Remove the least active units across layers until MLP FLOPs fall by this fraction.",
        };
        var allowStatsCorpus = new Option<bool>("--allow-stats-corpus")
        {
            Description = "Allow evaluating on the text the statistics came from.",
        };
        var outPath = new Option<string>("--out")
        {
            Description =
                "A .onnx file (the pruned graph only), or a folder: model, mask, tokenizer, evaluation against the input model, model card.",
            Required = true,
        };
        var eval = EvalOptions.Create(required: false, "--eval-corpus");
        var command = new Command(
            "prune",
            "Remove MLP units: slice the up- and down-projection weights; optionally evaluate the result against the input model."
        )
        {
            model,
            activation,
            mask,
            stats,
            deadOnly,
            minFrequency,
            keepFraction,
            flopReduction,
            allowStatsCorpus,
            outPath,
        };
        foreach (var o in eval.All)
            command.Add(o);
        command.SetAction(p =>
        {
            string path = p.GetValue(outPath)!;
            var unitMask = BuildMask(p, mask, stats, deadOnly, minFrequency, keepFraction, flopReduction);
            var request =
                VariantFolder.IsModelFile(path) || EncoderDecoder.IsFolder(p.GetValue(model)!)
                    ? null
                    : eval.Request(p, p.GetValue(model)!, output) with
                    {
                        Activations = p.GetValue(activation),
                    };
            var result = Pruning.Run(
                new PruneRequest(
                    p.GetValue(model)!,
                    unitMask,
                    path,
                    p.GetValue(activation)!,
                    p.GetValue(stats),
                    p.GetValue(deadOnly),
                    request,
                    p.GetValue(allowStatsCorpus),
                    SharedOptions.CommandLine(p)
                )
            );
            var report = result.Report;
            output.WriteLine(
                $"Units per layer: {string.Join(" ", report.UnitsBefore)} → {string.Join(" ", report.UnitsAfter)} ({unitMask.Rule})"
            );
            output.WriteLine(
                $"Parameters: {report.ParametersBefore:N0} → {report.ParametersAfter:N0} ({100.0 * report.ParametersAfter / report.ParametersBefore:0.0} %); bytes: {report.BytesBefore:N0} → {report.BytesAfter:N0}"
            );
            if (result.ExactOn is { } batch)
                output.WriteLine(
                    $"Exact on the statistics' text: max |Δ {result.Compared}| = {result.MaxLogitChange:E2} on a batch of {batch.Batch} × {batch.SeqLen}."
                );
            if (EncoderDecoderFolder.LeftOutLine(result.LeftOut) is { } leftOut)
                output.WriteLine(leftOut);
            if (result.Pruned is { } pruned)
            {
                output.WriteLine(VariantFolder.Table([("input model", result.Reference!), ("pruned", pruned)]));
                output.WriteLine($"Wrote {path}/ (model.onnx, mask.json, evaluation.json, README.md)");
            }
            else
                output.WriteLine($"Wrote {path}");
            return 0;
        });
        return command;
    }

    /// <summary>The <c>topk</c> command, writing to <paramref name="output"/>.</summary>
    public static Command TopK(TextWriter output)
    {
        var model = SharedOptions.ModelOption();
        var activation = SharedOptions.ActivationOption();
        var k = new Option<string?>("--k")
        {
            Description = "k values separated by commas: one variant per k (1 ≤ k ≤ d_ff).",
        };
        var kPerLayer = new Option<string?>("--k-per-layer")
        {
            Description = "One k per layer, separated by commas: a single variant.",
        };
        var outPath = new Option<string>("--out")
        {
            Description =
                "A .onnx file (one variant), or a folder: one evaluated variant folder per k and a comparison table.",
            Required = true,
        };
        var eval = EvalOptions.Create(required: false, "--eval-corpus");
        var command = new Command(
            "topk",
            "Keep only the k largest MLP activations per token (Li et al. §4.2), and measure what it does."
        )
        {
            model,
            activation,
            k,
            kPerLayer,
            outPath,
        };
        foreach (var o in eval.All)
            command.Add(o);
        command.SetAction(p =>
        {
            if ((p.GetValue(k) == null) == (p.GetValue(kPerLayer) == null))
                throw new UserInputException("Give either --k or --k-per-layer.");
            var variants = p.GetValue(kPerLayer) is string perLayer
                ?
                [
                    new TopKVariant(
                        "k=" + perLayer.Replace(',', '/'),
                        "k_" + perLayer.Replace(',', '_'),
                        Ints(perLayer, "--k-per-layer")
                    ),
                ]
                : Ints(p.GetValue(k)!, "--k").Select(v => new TopKVariant($"k={v}", $"k{v}", [v])).ToList();
            string path = p.GetValue(outPath)!;
            // An encoder-decoder folder is rewritten into folders of its layout, not evaluated variant folders.
            var request =
                VariantFolder.IsModelFile(path) || EncoderDecoder.IsFolder(p.GetValue(model)!)
                    ? null
                    : eval.Request(p, p.GetValue(model)!, output) with
                    {
                        Activations = p.GetValue(activation),
                    };
            var result = TopKVariants.Run(
                new TopKRequest(
                    p.GetValue(model)!,
                    variants,
                    path,
                    p.GetValue(activation)!,
                    request,
                    SharedOptions.CommandLine(p)
                )
            );
            if (result.MaxLogitChange is float change)
                output.WriteLine(
                    $"Note: k equals d_ff in every layer, so this model computes exactly what the input model does (checked: max |Δ logits| = {change:E2})."
                );
            foreach (var (name, e) in result.Rows.Skip(1))
                output.WriteLine(
                    $"{name}: loss {e.Loss:0.0000}, accuracy {e.Accuracy:P2}, ECE {e.ExpectedCalibrationError:P2}, noisy accuracy {e.NoisyAccuracy:P2}"
                );
            output.WriteLine(
                result.Table
                    ?? $"Top-k ({string.Join(", ", variants.Select(v => v.Name))}) inserted in {result.Layers} layers. Wrote {path}"
            );
            if (EncoderDecoderFolder.LeftOutLine(result.LeftOut) is { } leftOut)
                output.WriteLine(leftOut);
            return 0;
        });
        return command;
    }

    static UnitMask BuildMask(
        ParseResult p,
        Option<string?> mask,
        Option<string?> stats,
        Option<bool> deadOnly,
        Option<double?> minFrequency,
        Option<double?> keepFraction,
        Option<double?> flopReduction
    )
    {
        int rules =
            (p.GetValue(deadOnly) ? 1 : 0)
            + new[] { p.GetValue(minFrequency), p.GetValue(keepFraction), p.GetValue(flopReduction) }.Count(v =>
                v != null
            );
        if (p.GetValue(mask) is string maskPath)
            return rules == 0 && p.GetValue(stats) == null
                ? UnitMask.Load(maskPath)
                : throw new UserInputException("--mask cannot be combined with --stats or a rule.");
        if (p.GetValue(stats) is not string statsPath)
            throw new UserInputException(
                "Give --mask mask.json, or --stats stats.json with one rule (--dead-only, --min-frequency, --keep-fraction, --flop-reduction)."
            );
        if (rules != 1)
            throw new UserInputException(
                "With --stats give exactly one rule: --dead-only, --min-frequency f, --keep-fraction p or --flop-reduction r."
            );
        var s = SparsityStats.Load(statsPath);
        if (p.GetValue(deadOnly))
            return MaskRules.DeadOnly(s);
        if (p.GetValue(minFrequency) is double f)
            return MaskRules.MinFrequency(s, f);
        if (p.GetValue(keepFraction) is double kf)
            return MaskRules.KeepFraction(s, kf);
        return MaskRules.FlopReduction(s, p.GetValue(flopReduction)!.Value);
    }

    static List<int> Ints(string list, string option) =>
        list.Split(',')
            .Select(s =>
                int.TryParse(s.Trim(), out int v)
                    ? v
                    : throw new UserInputException($"{option} '{s}' is not an integer.")
            )
            .ToList();

    /// <summary>The <c>sparse-decode</c> command, writing to <paramref name="output"/>.</summary>
    public static Command SparseDecode(TextWriter output)
    {
        var model = SharedOptions.ModelOption();
        var stats = new Option<string>("--stats")
        {
            Description = "stats.json of this model (from `analyze`): the measured activity per layer.",
            Required = true,
        };
        var outPath = new Option<string>("--out")
        {
            Description = "model.onnx file (graph and sidecar) or a folder (also MODEL_CARD.md).",
            Required = true,
        };
        var breakEven = new Option<double>("--break-even")
        {
            Description = "Rewrite layers whose share of active units per token is below this.",
            DefaultValueFactory = _ => SparseDecoding.DefaultBreakEven,
        };
        var target = new Option<string>("--device")
        {
            Description =
                "Where the variant will decode: cpu (units found with NonZero, as many as fire) or cuda (fixed shapes: each layer's capacity of units from TopK, a step with more recomputed densely; capturable as a CUDA graph).",
            DefaultValueFactory = _ => "cpu",
        };
        target.AcceptOnlyFromAmong("cpu", "cuda");
        var capacityQuantile = new Option<double>("--capacity-quantile")
        {
            Description =
                "With --device cuda: each layer's capacity is this quantile of its active units per token (counts.json beside --stats), rounded up to a multiple of 32.",
            DefaultValueFactory = _ => SparseDecoding.DefaultCapacityQuantile,
        };
        var activation = SharedOptions.ActivationOption();
        var command = new Command(
            "sparse-decode",
            "Rewrite MLPs whose units are mostly zero into an exact sparse form (down-projection over active units; gated: up-projection too) that is faster for batch-1 decoding."
        )
        {
            model,
            stats,
            outPath,
            breakEven,
            target,
            capacityQuantile,
            activation,
        };
        command.SetAction(p =>
        {
            // The fixed form is checked where it runs when a GPU is here (a 1B model's checks take minutes on a CPU).
            var check = p.GetValue(target) == "cuda" ? Devices.Resolve("auto") : Device.Cpu;
            var r = SparseDecoding.Run(
                new SparseDecodeRequest(
                    p.GetValue(model)!,
                    p.GetValue(stats)!,
                    p.GetValue(outPath)!,
                    p.GetValue(breakEven),
                    p.GetValue(activation)!,
                    SharedOptions.CommandLine(p),
                    FixedShape: p.GetValue(target) == "cuda",
                    CapacityQuantile: p.GetValue(capacityQuantile),
                    CheckDevice: check
                )
            );
            foreach (var c in r.Choices)
                output.WriteLine(
                    $"layer {c.Layer}: {(c.Sparse ? c.SparseUp ? "sparse down- and up-projection" : "sparse down-projection" : "dense")} ({c.Reason})"
                );
            output.WriteLine(
                $"Exact: max |Δ logits| = {r.MaxLogitChange:E2} against the input model at batch × sequence {string.Join(", ", r.CheckedShapes)} ({check})."
            );
            output.WriteLine($"Wrote {p.GetValue(outPath)}");
            return 0;
        });
        return command;
    }
}
