using System.Diagnostics;
using System.Text.Json;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Training.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Sparsity.Training;

/// <summary>What to train and where to write it.</summary>
/// <param name="Model">Architecture (vocab size must match the tokenizer).</param>
/// <param name="Options">Training options.</param>
/// <param name="Tokenizer">Tokenizer for both corpora; its files are copied into the checkpoint.</param>
/// <param name="TrainCorpus">Training documents (any format <see cref="TextDocuments"/> reads).</param>
/// <param name="HeldOutCorpus">Held-out documents, never trained on.</param>
/// <param name="OutDir">Checkpoint folder; written beside it and swapped in when complete
/// (<see cref="OutputFolder"/>).</param>
public sealed record TrainRequest(
    ModelConfig Model,
    TrainOptions Options,
    TextTokenizer Tokenizer,
    string TrainCorpus,
    string HeldOutCorpus,
    string OutDir
);

/// <summary>
/// Trains a <see cref="ReluTransformer"/> with AdamW on random windows of the training corpus, tracking
/// MLP sparsity with the <see cref="LayerUnitUse"/> and <see cref="UnitLastActive"/> accumulators.
/// Activations are reduced to counts on the device; only counts reach the host.
/// </summary>
public static class Trainer
{
    /// <summary>Runs training to completion and writes the checkpoint.</summary>
    public static TrainSummary Run(
        TrainRequest request,
        IProgress<TrainProgress>? progress = null,
        CancellationToken cancel = default
    )
    {
        var (config, options) = (request.Model, request.Options);
        config.Validate();
        options.Validate();
        if (request.Tokenizer.VocabSize is int v && v > config.VocabSize)
            throw new UserInputException(
                $"The tokenizer has {v} ids but the model's vocab_size is {config.VocabSize}."
            );
        OutputFolder.RequireWritable(request.OutDir, "train");

        TrainSummary? summary = null;
        OutputFolder.Write(request.OutDir, "train", dir => summary = Train(request, dir, progress, cancel));
        return summary! with { OutDir = request.OutDir };
    }

    static TrainSummary Train(
        TrainRequest request,
        string dir,
        IProgress<TrainProgress>? progress,
        CancellationToken cancel
    )
    {
        var (config, options) = (request.Model, request.Options);
        int B = options.BatchSize,
            T = config.SeqLen;
        torch.set_num_threads(options.Threads > 0 ? options.Threads : Environment.ProcessorCount);
        torch.random.manual_seed(options.Seed);
        var rng = new Random(options.Seed);

        progress?.Report(
            new TrainProgress(
                0,
                options.Steps,
                double.NaN,
                0,
                TimeSpan.Zero,
                TimeSpan.Zero,
                null,
                null,
                "Tokenizing the corpora…"
            )
        );
        string tokenDir = Path.Combine(dir, ".tokens");
        using var train = Tokenize(
            request.TrainCorpus,
            request.Tokenizer,
            Path.Combine(tokenDir, "train.bin"),
            config,
            "training"
        );
        using var heldOut = Tokenize(
            request.HeldOutCorpus,
            request.Tokenizer,
            Path.Combine(tokenDir, "heldout.bin"),
            config,
            "held-out"
        );

        using var model = new ReluTransformer(config);
        var mlps = model.Mlps;
        var decay = model.parameters().Where(p => p.dim() >= 2).ToList(); // nanoGPT: decay matrices, not biases or norms
        var noDecay = model.parameters().Where(p => p.dim() < 2).ToList();
        using var optimizer = optim.AdamW(
            new[]
            {
                new AdamW.ParamGroup(decay, new AdamW.Options { weight_decay = options.WeightDecay }),
                new AdamW.ParamGroup(noDecay, new AdamW.Options { weight_decay = 0 }),
            },
            options.LearningRate,
            options.Beta1,
            options.Beta2,
            1e-8,
            options.WeightDecay
        );

        var lastActive = mlps.Select(_ => new UnitLastActive(config.DFf)).ToArray();
        var masked = new int[config.Layers];
        double[]? firstFraction = null,
            lastFraction = null;
        double loss = double.NaN;
        double? heldOutLoss = null;
        var window = new long[B * (T + 1)];
        var randomTargets = options.RandomTargets ? new long[B * T] : null;
        var targetRng = new Random(unchecked(options.Seed * 31 + 7)); // its own stream: the windows drawn stay those of the real-label run
        var clock = Stopwatch.StartNew();
        using var log = new StreamWriter(Path.Combine(dir, Checkpoint.LogFile));

        for (int step = 0; step < options.Steps; step++)
        {
            cancel.ThrowIfCancellationRequested();
            if (options.MaskUnusedAt > 0 && step == options.MaskUnusedAt)
            {
                for (int l = 0; l < config.Layers; l++)
                {
                    bool[] unused = lastActive[l].UnusedSince(step - options.MaskWindow);
                    mlps[l].SetUnitMask(unused.Select(u => !u).ToArray());
                    masked[l] = unused.Count(u => u);
                }
                progress?.Report(
                    new TrainProgress(
                        step,
                        options.Steps,
                        loss,
                        0,
                        clock.Elapsed,
                        TimeSpan.Zero,
                        null,
                        null,
                        $"Masked units unused since step {step - options.MaskWindow}: {string.Join(", ", masked)} per layer."
                    )
                );
            }

            bool track = step % options.TrackEvery == 0 || step == options.Steps - 1;
            bool evaluate = step % options.EvalEvery == 0 || step == options.Steps - 1;
            double lr = options.LearningRateAt(step);
            foreach (var group in optimizer.ParamGroups)
                group.LearningRate = lr;
            List<LayerLogEntry>? layers = track ? new() : null;

            using (var scope = NewDisposeScope())
            {
                for (int b = 0; b < B; b++)
                    train.Read(rng.NextInt64(0, train.Length - T), window.AsSpan(b * (T + 1), T + 1));
                var batch = tensor(window, new long[] { B, T + 1 });
                var x = batch.narrow(1, 0, T); // (B, T)
                var y = batch.narrow(1, 1, T);
                if (randomTargets != null)
                {
                    RandomTokens.FillTargets(randomTargets, targetRng, config.VocabSize);
                    y = tensor(randomTargets, new long[] { B, T });
                }
                var (logits, hidden) = model.Forward(x);
                var ce = nn.functional.cross_entropy(logits.view(-1, config.VocabSize), y.reshape(-1));
                var total = options.L1 > 0 ? ce + options.L1 * stack(hidden.Select(h => h.abs().mean())).mean() : ce;
                optimizer.zero_grad();
                total.backward();
                if (options.GradClip > 0)
                    nn.utils.clip_grad_norm_(model.parameters(), options.GradClip);
                optimizer.step();
                loss = ce.item<float>();

                using var _ = no_grad();
                for (int l = 0; l < config.Layers; l++)
                {
                    var counts = HiddenCounts.Of(hidden[l].detach(), null, options.Threshold);
                    lastActive[l].Observe(step, counts.TokensPerUnit);
                    if (!track)
                        continue;
                    var use = new LayerUnitUse(config.DFf);
                    use.AddBatch(counts.UnitsPerToken, counts.UnitsPerSequence, counts.TokensPerUnit);
                    layers!.Add(
                        new LayerLogEntry(
                            l,
                            use.NonzeroFraction,
                            use.PerTokenUnitUse.Mean,
                            use.PerSequenceUnitUse.Mean,
                            use.PerBatchUnitUse.Mean,
                            masked[l]
                        )
                    );
                }
            }

            if (evaluate)
                heldOutLoss = Evaluate(model, heldOut, options, config);
            if (layers != null)
            {
                firstFraction ??= layers.Select(e => e.NonzeroFraction).ToArray();
                lastFraction = layers.Select(e => e.NonzeroFraction).ToArray();
            }
            if (track || evaluate)
            {
                log.WriteLine(
                    JsonSerializer.Serialize(
                        new TrainingLogEntry(
                            step,
                            (long)step * B * T,
                            loss,
                            lr,
                            evaluate ? heldOutLoss : null,
                            B,
                            layers
                        ),
                        ProjectJson.Lines
                    )
                );
                log.Flush();
            }
            double seconds = clock.Elapsed.TotalSeconds;
            progress?.Report(
                new TrainProgress(
                    step + 1,
                    options.Steps,
                    loss,
                    (step + 1.0) * B * T / seconds,
                    clock.Elapsed,
                    TimeSpan.FromSeconds(seconds / (step + 1) * (options.Steps - step - 1)),
                    evaluate ? heldOutLoss : null,
                    layers
                )
            );
        }

        log.Close();
        Directory.Delete(tokenDir, recursive: true);
        var death = WriteDeathLog(dir, lastActive, options);
        Checkpoint.Save(dir, model, request.Tokenizer, options, options.Steps);
        return new TrainSummary(
            dir,
            options.Steps,
            clock.Elapsed,
            train.Length,
            heldOut.Length,
            loss,
            heldOutLoss,
            firstFraction!,
            lastFraction!,
            death.Layers.Select(d => d.SilentForLastTenth).ToArray(),
            masked
        );
    }

    /// <summary>Mean cross-entropy over fixed held-out windows (the first eval_batches × batch_size windows of T
    /// tokens).</summary>
    public static double Evaluate(ReluTransformer model, TokenFile heldOut, TrainOptions options, ModelConfig config)
    {
        int T = config.SeqLen;
        long windows = Math.Min((long)options.EvalBatches * options.BatchSize, (heldOut.Length - 1) / T);
        double sum = 0;
        long count = 0;
        model.eval();
        using (no_grad())
        {
            for (long first = 0; first < windows; first += options.BatchSize)
            {
                using var scope = NewDisposeScope();
                int rows = (int)Math.Min(options.BatchSize, windows - first);
                var buffer = new long[rows * (T + 1)];
                for (int r = 0; r < rows; r++)
                    heldOut.Read((first + r) * T, buffer.AsSpan(r * (T + 1), T + 1));
                var batch = tensor(buffer, new long[] { rows, T + 1 });
                var logits = model.forward(batch.narrow(1, 0, T));
                sum +=
                    nn.functional.cross_entropy(logits.view(-1, config.VocabSize), batch.narrow(1, 1, T).reshape(-1))
                        .item<float>()
                    * rows
                    * T;
                count += (long)rows * T;
            }
        }
        model.train();
        return sum / count;
    }

    static TokenFile Tokenize(string corpus, TextTokenizer tokenizer, string path, ModelConfig config, string what)
    {
        long tokens = TokenFile.Write(TextDocuments.Read(corpus), tokenizer, path, tokenizer.EndOfTextId);
        if (tokens < config.SeqLen + 1)
            throw new UserInputException(
                $"The {what} corpus {corpus} has {tokens} tokens; training needs at least seq_len + 1 = {config.SeqLen + 1}."
            );
        var file = TokenFile.Open(path);
        if (tokenizer.VocabSize == null)
        {
            // `ids` input: the only place the ids can be checked against the model.
            var chunk = new long[4096];
            for (long start = 0; start < file.Length; start += chunk.Length)
            {
                var span = chunk.AsSpan(0, (int)Math.Min(chunk.Length, file.Length - start));
                file.Read(start, span);
                foreach (long id in span)
                    if (id >= config.VocabSize)
                    {
                        file.Dispose();
                        throw new UserInputException(
                            $"The {what} corpus holds token id {id}, beyond the model's vocab_size {config.VocabSize}."
                        );
                    }
            }
        }
        return file;
    }

    static UnitDeathLog WriteDeathLog(string dir, UnitLastActive[] lastActive, TrainOptions options)
    {
        int lastStep = options.Steps - 1;
        var layers = lastActive
            .Select(
                (tracker, l) =>
                {
                    var death = tracker.DeathSteps(lastStep);
                    return new LayerDeath(
                        l,
                        tracker.DFf,
                        tracker.LastActiveStep.ToArray().Count(s => s < 0),
                        death.Count(d => d is long s && s <= 0.9 * lastStep),
                        tracker.LastActiveStep.ToArray(),
                        death
                    );
                }
            )
            .ToList();
        var log = new UnitDeathLog(lastStep, options.Threshold, layers);
        AtomicFile.WriteAllText(
            Path.Combine(dir, Checkpoint.DeathFile),
            JsonSerializer.Serialize(log, ProjectJson.Options)
        );
        return log;
    }
}
