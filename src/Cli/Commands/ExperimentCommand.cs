using System.CommandLine;
using Sparsity.Corpora;
using Sparsity.Pipeline.Experiments;
using Sparsity.Training;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>experiment NAME|all</c>: reproduces one of the seeds' findings (or all nine,
/// <see cref="Sparsity.Pipeline.Experiments.Experiment.All"/>) and writes results.md.</summary>
public static class ExperimentCommand
{
    /// <summary>The <c>experiment</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Create(TextWriter output, bool interactive)
    {
        var name = new Argument<string>("name")
        {
            Description = "Experiment: " + string.Join(", ", Experiment.All.Select(e => e.Name)) + ", or all.",
        };
        name.AcceptOnlyFromAmong([.. Experiment.All.Select(e => e.Name), "all"]);
        var corpus = new Option<string?>("--corpus")
        {
            Description = "Training documents (default: the built-in Brown corpus, data/brown/train.txt).",
        };
        var heldOut = new Option<string?>("--heldout")
        {
            Description = "Held-out documents: analysis and evaluation run on them (default: data/brown/heldout.txt).",
        };
        var tokenizer = new Option<string?>("--tokenizer")
        {
            Description = "Tokenizer spec, e.g. bpe:vocab.json,merges.txt (default: the BPE learned on Brown).",
        };
        var preset = new Option<string>("--preset")
        {
            Description = "Base recipe every run varies (quick, paper, or a preset JSON file).",
            DefaultValueFactory = _ => "quick",
        };
        var steps = new Option<int?>("--steps")
        {
            Description = "Override the preset's steps in every run (for a fast look; results.md says so).",
        };
        var work = new Option<string>("--work")
        {
            Description = "Folder for the runs; a run with an unchanged recipe is reused.",
            DefaultValueFactory = _ => "experiments/runs",
        };
        var seeds = new Option<int>("--seeds")
        {
            Description =
                "Training seeds per configuration (the preset's seed and the next ones); figures are reported as mean ± sd over them. The Cake targets use 3.",
            DefaultValueFactory = _ => 1,
        };
        var fast = new Option<bool>("--fast")
        {
            Description =
                "Smoke test only (CI): one seed and 30 steps per run unless --seeds/--steps say otherwise; results.md says so. Not for citing.",
        };
        var report = new Option<string>("--report")
        {
            Description =
                "results.md to (re)write; plots and per-experiment sections go to the folder of the same name beside it.",
            DefaultValueFactory = _ => "experiments/results.md",
        };
        var command = new Command(
            "experiment",
            "Reproduce the papers' findings on a corpus: training dynamics, layer patterns, neuron death, width scaling, Top-k, L1."
        )
        {
            name,
            corpus,
            heldOut,
            tokenizer,
            preset,
            steps,
            seeds,
            fast,
            work,
            report,
        };
        command.SetAction(
            (parse, cancel) =>
            {
                Libtorch.Require("experiment");
                var recipe = Preset.Load(parse.GetValue(preset)!);
                var (trainText, heldOutText, spec) = SharedOptions.TrainingText(
                    output,
                    parse.GetValue(corpus),
                    parse.GetValue(heldOut),
                    parse.GetValue(tokenizer)
                );
                var tok = TextTokenizer.FromSpec(spec);
                foreach (var path in new[] { trainText, heldOutText })
                    if (!File.Exists(path) && !Directory.Exists(path))
                        throw new UserInputException(
                            $"{path} does not exist: pass the training and held-out documents."
                        );
                bool smoke = parse.GetValue(fast);
                var training = recipe.Training with
                {
                    Steps = parse.GetValue(steps)
                        ?? (smoke ? Math.Min(30, recipe.Training.Steps) : recipe.Training.Steps),
                };
                if (smoke)
                    training = training with
                    {
                        WarmupSteps = Math.Min(training.WarmupSteps, training.Steps / 3),
                        TrackEvery = Math.Min(training.TrackEvery, 5),
                        EvalEvery = Math.Min(training.EvalEvery, training.Steps),
                    };
                training.Validate();
                int seedCount = parse.GetResult(seeds) != null || !smoke ? parse.GetValue(seeds) : 1;
                if (seedCount < 1)
                    throw new UserInputException($"--seeds {seedCount}: use at least 1.");
                var setup = new ExperimentSetup(
                    parse.GetValue(preset)!,
                    recipe.Model with
                    {
                        VocabSize = tok.VocabSize ?? recipe.Model.VocabSize,
                    },
                    training,
                    trainText,
                    heldOutText,
                    spec,
                    parse.GetValue(work)!,
                    output,
                    new ConsoleProgress(output, interactive),
                    cancel,
                    seedCount
                );

                string reportPath = parse.GetValue(report)!;
                var chosen =
                    parse.GetValue(name) == "all"
                        ? Experiment.All
                        : Experiment.All.Where(e => e.Name == parse.GetValue(name)).ToList();
                string figures = ExperimentReport.Run(
                    setup,
                    chosen,
                    reportPath,
                    SharedOptions.CommandLine(parse),
                    smoke
                );
                output.WriteLine($"Wrote {reportPath} (sections and plots in {figures}).");
                return Task.FromResult(0);
            }
        );
        return command;
    }
}
