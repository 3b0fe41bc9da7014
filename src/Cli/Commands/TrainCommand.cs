using System.CommandLine;
using Sparsity.Corpora;
using Sparsity.Pipeline.Report;
using Sparsity.Training;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>train</c>: trains a ReLU transformer from a preset, with command-line overrides.</summary>
public static class TrainCommand
{
    /// <summary>The <c>train</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Create(TextWriter output, bool interactive)
    {
        var preset = new Option<string>("--preset")
        {
            Description = "Preset name (quick, paper) or path to a preset JSON file.",
            DefaultValueFactory = _ => "quick",
        };
        var corpus = new Option<string?>("--corpus")
        {
            Description =
                "Training documents: .txt (one per line), .jsonl, .tsv, a folder, or .gz (default: the built-in Brown corpus, data/brown/train.txt).",
        };
        var heldOut = new Option<string?>("--heldout")
        {
            Description = "Held-out documents (never trained on), same formats (default: data/brown/heldout.txt).",
        };
        var tokenizer = new Option<string?>("--tokenizer")
        {
            Description =
                "Tokenizer spec, e.g. bpe:vocab.json,merges.txt or bytes (default: the BPE learned on Brown, data/brown/tokenizer).",
        };
        var outDir = new Option<string>("--out")
        {
            Description =
                "Checkpoint folder to write: new, empty, or an earlier checkpoint (replaced, with what was derived from it); a folder with other files is refused.",
            Required = true,
        };
        var steps = new Option<int?>("--steps") { Description = "Override the preset's steps." };
        var batch = new Option<int?>("--batch-size") { Description = "Override windows per step." };
        var lr = new Option<double?>("--lr") { Description = "Override the peak learning rate." };
        var seed = new Option<int?>("--seed") { Description = "Override the seed." };
        var layers = new Option<int?>("--layers") { Description = "Override the number of layers." };
        var dFf = new Option<int?>("--d-ff") { Description = "Override MLP hidden units per layer." };
        var topK = new Option<int?>("--top-k")
        {
            Description = "Train with Top-k activations (keep the k largest per token; 0 = off).",
        };
        var l1 = new Option<double?>("--l1") { Description = "L1 penalty λ on MLP activations." };
        var maskAt = new Option<int?>("--mask-unused-at")
        {
            Description = "At this step, mask units silent for --mask-window steps, for the rest of training.",
        };
        var maskWindow = new Option<int?>("--mask-window") { Description = "Silent steps before a unit is masked." };
        var trackEvery = new Option<int?>("--track-every") { Description = "Log sparsity every N steps." };
        var evalEvery = new Option<int?>("--eval-every") { Description = "Evaluate held-out loss every N steps." };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)." };

        var command = new Command("train", "Train a decoder-only ReLU transformer, logging MLP sparsity as it trains.")
        {
            preset,
            corpus,
            heldOut,
            tokenizer,
            outDir,
            steps,
            batch,
            lr,
            seed,
            layers,
            dFf,
            topK,
            l1,
            maskAt,
            maskWindow,
            trackEvery,
            evalEvery,
            threads,
        };
        command.SetAction(
            (parse, cancel) =>
            {
                Libtorch.Require("train");
                var recipe = Preset.Load(parse.GetValue(preset)!);
                var (trainText, heldOutText, spec) = SharedOptions.TrainingText(
                    output,
                    parse.GetValue(corpus),
                    parse.GetValue(heldOut),
                    parse.GetValue(tokenizer)
                );
                var tok = TextTokenizer.FromSpec(spec);
                var model = recipe.Model with
                {
                    VocabSize = tok.VocabSize ?? recipe.Model.VocabSize,
                    Layers = parse.GetValue(layers) ?? recipe.Model.Layers,
                    DFf = parse.GetValue(dFf) ?? recipe.Model.DFf,
                    TopK = parse.GetValue(topK) ?? recipe.Model.TopK,
                };
                var t = recipe.Training;
                var options = t with
                {
                    Steps = parse.GetValue(steps) ?? t.Steps,
                    BatchSize = parse.GetValue(batch) ?? t.BatchSize,
                    LearningRate = parse.GetValue(lr) ?? t.LearningRate,
                    MinLearningRate = Math.Min(t.MinLearningRate, parse.GetValue(lr) ?? t.LearningRate),
                    Seed = parse.GetValue(seed) ?? t.Seed,
                    L1 = parse.GetValue(l1) ?? t.L1,
                    MaskUnusedAt = parse.GetValue(maskAt) ?? t.MaskUnusedAt,
                    MaskWindow = parse.GetValue(maskWindow) ?? t.MaskWindow,
                    TrackEvery = parse.GetValue(trackEvery) ?? t.TrackEvery,
                    EvalEvery = parse.GetValue(evalEvery) ?? t.EvalEvery,
                    Threads = parse.GetValue(threads) ?? t.Threads,
                };
                model.Validate();
                if (model.VocabSize < 2)
                    throw new UserInputException("With --tokenizer ids, give the preset's model a vocab_size.");

                output.WriteLine(
                    $"Training {model.Layers} layers × d_ff {model.DFf} (d_model {model.DModel}, vocab {model.VocabSize}, seq_len {model.SeqLen}"
                        + $"{(model.UsesTopK ? $", top-k {model.TopK}" : "")}) for {options.Steps} steps of {options.BatchSize} windows on {(options.Threads > 0 ? options.Threads : Environment.ProcessorCount)} threads."
                );
                var summary = Trainer.Run(
                    new TrainRequest(model, options, tok, trainText, heldOutText, parse.GetValue(outDir)!),
                    new ConsoleProgress(output, interactive),
                    cancel
                );

                output.WriteLine(
                    $"Trained on {summary.TrainTokens:N0} tokens ({summary.HeldOutTokens:N0} held out) in {Markdown.Clock(summary.Elapsed)}: "
                        + $"loss {summary.FinalLoss:0.000}, held-out loss {summary.FinalHeldOutLoss:0.000}."
                );
                output.WriteLine("layer  nonzero fraction (first → last tracked)  silent for the last 10 %  masked");
                for (int l = 0; l < model.Layers; l++)
                    output.WriteLine(
                        $"{l, 5}  {summary.FirstNonzeroFraction[l], 8:0.000} → {summary.LastNonzeroFraction[l], -26:0.000}  {summary.SilentForLastTenth[l], 24}  {summary.MaskedUnits[l], 6}"
                    );
                output.WriteLine(
                    $"Checkpoint: {summary.OutDir} ({Checkpoint.ConfigFile}, {Checkpoint.WeightsFile}, {Checkpoint.LogFile}, {Checkpoint.DeathFile})"
                );
                return Task.FromResult(0);
            }
        );
        return command;
    }
}
