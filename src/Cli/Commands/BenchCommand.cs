using System.CommandLine;
using Sparsity.Export;
using Sparsity.Pipeline.Benchmarking;
using Sparsity.Training;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>bench</c>: the pipeline against what users would otherwise run, on one machine in one run.</summary>
public static class BenchCommand
{
    /// <summary>The <c>bench</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Create(TextWriter output)
    {
        var checkpoint = new Option<string?>("--checkpoint")
        {
            Description =
                "Checkpoint folder from `train` (its weights are exported and also loaded by TorchSharp and PyTorch).",
        };
        var model = new Option<string?>("--model")
        {
            Description =
                "Or any ONNX language model (no libtorch needed): the rows that need a checkpoint (stats export, TorchSharp, PyTorch hooks) are left out, and the report says so.",
        };
        var corpus = new Option<string?>("--corpus")
        {
            Description = "Text every contender runs on (the held-out split; default: data/brown/heldout.txt).",
        };
        var tokenizer = new Option<string?>("--tokenizer")
        {
            Description = "Tokenizer spec of the model (default: the BPE learned on Brown).",
        };
        var seqLen = new Option<int>("--seq-len") { Description = "Window length T.", DefaultValueFactory = _ => 128 };
        var batch = new Option<int>("--batch-size")
        {
            Description = "Windows per batch B.",
            DefaultValueFactory = _ => 16,
        };
        var threads = new Option<int>("--threads")
        {
            Description = "Threads for every contender (ONNX Runtime intra-op, TorchSharp, PyTorch).",
            DefaultValueFactory = _ => Environment.ProcessorCount,
        };
        var repeats = new Option<int>("--repeats")
        {
            Description = "Timed repeats per contender, after one warm-up; medians and spread are reported.",
            DefaultValueFactory = _ => 5,
        };
        var python = new Option<string>("--python")
        {
            Description =
                "Python with torch and numpy for the PyTorch-hook reference (skipped, and said so, when it cannot run).",
            DefaultValueFactory = _ => "/usr/bin/python3",
        };
        var script = new Option<string>("--pytorch-script")
        {
            Description = "The PyTorch-hook reference script.",
            DefaultValueFactory = _ => "bench/pytorch_hooks.py",
        };
        var factor = new Option<int>("--memory-factor")
        {
            Description = "Peak memory of analyze is measured on the corpus and on this many copies of it.",
            DefaultValueFactory = _ => 8,
        };
        var device = new Option<string>("--device")
        {
            Description =
                "cpu, cuda, cuda:N or auto: where every ONNX Runtime row runs (analyze, bare forward, direct loop, memory, pruned latency); on a GPU the TorchSharp and PyTorch rows are left out.",
            DefaultValueFactory = _ => "cpu",
        };
        var outDir = new Option<string>("--out")
        {
            Description = "Folder for bench.json and bench.md.",
            Required = true,
        };
        var command = new Command(
            "bench",
            "Time analyze against the bare forward pass, a direct ONNX Runtime loop, TorchSharp and PyTorch hooks; peak memory; pruned latency."
        )
        {
            checkpoint,
            model,
            corpus,
            tokenizer,
            seqLen,
            batch,
            threads,
            repeats,
            python,
            script,
            factor,
            device,
            outDir,
        };
        command.SetAction(
            (parse, cancel) =>
            {
                string outFolder = parse.GetValue(outDir)!;
                string? ckpt = parse.GetValue(checkpoint),
                    graph = parse.GetValue(model);
                if ((ckpt == null) == (graph == null))
                    throw new UserInputException(
                        "Give --checkpoint DIR (a model trained here) or --model M.onnx (any graph), not both."
                    );
                if (ckpt != null)
                    Libtorch.Require("bench --checkpoint");
                var given = BrownDefaults.Apply(
                    output,
                    ("--corpus", parse.GetValue(corpus), BrownDefaults.Kind.HeldOutText),
                    ("--tokenizer", parse.GetValue(tokenizer), BrownDefaults.Kind.Tokenizer)
                );
                string text = given[0];
                if (ckpt != null && !File.Exists(Path.Combine(ckpt, Checkpoint.WeightsFile)))
                    throw new UserInputException(
                        $"{ckpt} has no {Checkpoint.WeightsFile}: pass a checkpoint folder written by `train`."
                    );
                if (graph != null)
                    OnnxGraph.Load(graph); // a missing or malformed model is one line before any work
                if (!File.Exists(text))
                    throw new UserInputException($"{text} does not exist.");
                var request = new BenchRequest(
                    ckpt,
                    text,
                    given[1],
                    parse.GetValue(seqLen),
                    parse.GetValue(batch),
                    parse.GetValue(threads),
                    parse.GetValue(repeats),
                    parse.GetValue(python)!,
                    parse.GetValue(script)!,
                    parse.GetValue(factor),
                    graph == null ? null : Path.GetFullPath(graph),
                    Runtime.Devices.Resolve(parse.GetValue(device)!, output)
                );
                string md = "";
                OutputFolder.Write(outFolder, "bench", dir =>
                    md = BenchReport.Write(BenchRun.Run(request, Path.Combine(dir, "work"), output, cancel), dir)
                );
                output.WriteLine(md);
                output.WriteLine($"Wrote {Path.Combine(outFolder, "bench.md")} and bench.json.");
                return Task.FromResult(0);
            }
        );
        return command;
    }
}

/// <summary><c>decode-bench</c>: batch-1 decoding latency of deployment variants (dense, no cache, sparse-decode,
/// pruned).</summary>
public static class DecodeBenchCommand
{
    /// <summary>The <c>decode-bench</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Create(TextWriter output)
    {
        var models = new Option<string[]>("--model")
        {
            Description =
                "LABEL=PATH of each model to time (the first is the reference); a label ending in ', no cache' recomputes each step.",
            Required = true,
            AllowMultipleArgumentsPerToken = true,
        };
        var corpus = new Option<string?>("--corpus")
        {
            Description = "The prompt is the start of this text (default: data/brown/heldout.txt).",
        };
        var tokenizer = new Option<string?>("--tokenizer")
        {
            Description = "Tokenizer spec of the models (default: the BPE learned on Brown).",
        };
        var promptTokens = new Option<int>("--prompt-tokens")
        {
            Description = "Prompt length.",
            DefaultValueFactory = _ => 64,
        };
        var newTokens = new Option<int>("--new-tokens")
        {
            Description = "Tokens to generate (greedy).",
            DefaultValueFactory = _ => 128,
        };
        var threads = new Option<string>("--threads")
        {
            Description = "Thread counts, comma-separated.",
            DefaultValueFactory = _ => "1,2",
        };
        var runs = new Option<int>("--runs")
        {
            Description = "Timed runs per model and thread count, after one warm-up.",
            DefaultValueFactory = _ => 5,
        };
        var device = new Option<string>("--device")
        {
            Description = "cpu, cuda, cuda:N or auto (the key/value cache stays on the device between steps).",
            DefaultValueFactory = _ => "cpu",
        };
        var outDir = new Option<string>("--out")
        {
            Description = "Folder for decode.md and decode.json.",
            Required = true,
        };
        var profile = new Option<bool>("--profile")
        {
            Description =
                "Also profile each model's single-token steps with ONNX Runtime's profiler (time per operator type, into decode.md and profile-N.csv); on a GPU, under CUDA_LAUNCH_BLOCKING=1 the kernels' own times.",
        };
        var command = new Command(
            "decode-bench",
            "Time batch-1 greedy decoding (per-token latency, prefill apart) of several models on one prompt, and check their tokens agree."
        )
        {
            models,
            corpus,
            tokenizer,
            promptTokens,
            newTokens,
            threads,
            runs,
            device,
            outDir,
            profile,
        };
        command.SetAction(parse =>
        {
            var pairs = parse
                .GetValue(models)!
                .Select(m =>
                    m.Split('=', 2) is [var label, var path] && label != "" && path != ""
                        ? (label, path)
                        : throw new UserInputException($"--model {m}: give LABEL=PATH.")
                )
                .ToList();
            foreach (var (_, path) in pairs)
                OnnxGraph.Load(path); // a missing model is one line before any work
            var threadCounts = parse
                .GetValue(threads)!
                .Split(',')
                .Select(t =>
                    int.TryParse(t, out int n) && n > 0
                        ? n
                        : throw new UserInputException(
                            $"--threads {parse.GetValue(threads)}: give positive integers, comma-separated."
                        )
                )
                .ToList();
            var text = BrownDefaults.Apply(
                output,
                ("--corpus", parse.GetValue(corpus), BrownDefaults.Kind.HeldOutText),
                ("--tokenizer", parse.GetValue(tokenizer), BrownDefaults.Kind.Tokenizer)
            );
            string md = "";
            OutputFolder.Write(parse.GetValue(outDir)!, "decode-bench", dir =>
                md = DecodeBench.Run(
                    new DecodeBenchRequest(
                        pairs,
                        text[0],
                        text[1],
                        dir,
                        parse.GetValue(promptTokens),
                        parse.GetValue(newTokens),
                        threadCounts,
                        Math.Max(1, parse.GetValue(runs)),
                        Runtime.Devices.Resolve(parse.GetValue(device)!, output),
                        parse.GetValue(profile)
                    ),
                    line => output.WriteLine(line)
                )
            );
            output.WriteLine(md);
            return 0;
        });
        return command;
    }
}
