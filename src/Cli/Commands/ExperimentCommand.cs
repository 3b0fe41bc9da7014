using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Sparsity.Pipeline.Report;
using Sparsity.Pipeline.Experiments;
using Sparsity.Training;
using Sparsity.Training.Data;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>experiment NAME|all</c>: reproduces one of the seeds' findings (or all nine, <see cref="Sparsity.Pipeline.Experiments.Experiment.All"/>) and writes results.md.</summary>
public static class ExperimentCommand
{
    /// <summary>The <c>experiment</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Create(TextWriter output, bool interactive)
    {
        var name = new Argument<string>("name") { Description = "Experiment: " + string.Join(", ", Experiment.All.Select(e => e.Name)) + ", or all." };
        name.AcceptOnlyFromAmong([.. Experiment.All.Select(e => e.Name), "all"]);
        var corpus = new Option<string?>("--corpus") { Description = "Training documents (default: the built-in Brown corpus, data/brown/train.txt)." };
        var heldOut = new Option<string?>("--heldout") { Description = "Held-out documents: analysis and evaluation run on them (default: data/brown/heldout.txt)." };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer spec, e.g. bpe:vocab.json,merges.txt (default: the BPE learned on Brown)." };
        var preset = new Option<string>("--preset") { Description = "Base recipe every run varies (quick, paper, or a preset JSON file).", DefaultValueFactory = _ => "quick" };
        var steps = new Option<int?>("--steps") { Description = "Override the preset's steps in every run (for a fast look; results.md says so)." };
        var work = new Option<string>("--work") { Description = "Folder for the runs; a run with an unchanged recipe is reused.", DefaultValueFactory = _ => "experiments/runs" };
        var seeds = new Option<int>("--seeds") { Description = "Training seeds per configuration (the preset's seed and the next ones); figures are reported as mean ± sd over them. The Cake targets use 3.", DefaultValueFactory = _ => 1 };
        var fast = new Option<bool>("--fast") { Description = "Smoke test only (CI): one seed and 30 steps per run unless --seeds/--steps say otherwise; results.md says so. Not for citing." };
        var report = new Option<string>("--report") { Description = "results.md to (re)write; plots and per-experiment sections go to the folder of the same name beside it.", DefaultValueFactory = _ => "experiments/results.md" };
        var command = new Command("experiment", "Reproduce the papers' findings on a corpus: training dynamics, layer patterns, neuron death, width scaling, Top-k, L1.")
        {
            name, corpus, heldOut, tokenizer, preset, steps, seeds, fast, work, report,
        };
        command.SetAction((parse, cancel) =>
        {
            Libtorch.Require("experiment");
            var recipe = Preset.Load(parse.GetValue(preset)!);
            var (trainText, heldOutText, spec) = TrainCommand.Defaults(output, parse.GetValue(corpus), parse.GetValue(heldOut), parse.GetValue(tokenizer));
            var tok = TextTokenizer.FromSpec(spec);
            foreach (var path in new[] { trainText, heldOutText })
                if (!File.Exists(path) && !Directory.Exists(path)) throw new UserInputException($"{path} does not exist: pass the training and held-out documents.");
            bool smoke = parse.GetValue(fast);
            var training = recipe.Training with { Steps = parse.GetValue(steps) ?? (smoke ? Math.Min(30, recipe.Training.Steps) : recipe.Training.Steps) };
            if (smoke) training = training with { WarmupSteps = Math.Min(training.WarmupSteps, training.Steps / 3), TrackEvery = Math.Min(training.TrackEvery, 5), EvalEvery = Math.Min(training.EvalEvery, training.Steps) };
            training.Validate();
            int seedCount = parse.GetResult(seeds) != null || !smoke ? parse.GetValue(seeds) : 1;
            if (seedCount < 1) throw new UserInputException($"--seeds {seedCount}: use at least 1.");
            var setup = new ExperimentSetup(parse.GetValue(preset)!, recipe.Model with { VocabSize = tok.VocabSize ?? recipe.Model.VocabSize }, training,
                trainText, heldOutText, spec, parse.GetValue(work)!, output, new ConsoleProgress(output, interactive), cancel, seedCount);

            string reportPath = parse.GetValue(report)!;
            string reportDir = Path.GetDirectoryName(Path.GetFullPath(reportPath))!;
            var figures = new Figures(Path.Combine(reportDir, Path.GetFileNameWithoutExtension(reportPath)), Path.GetFileNameWithoutExtension(reportPath));
            Directory.CreateDirectory(figures.Dir);
            var chosen = parse.GetValue(name) == "all" ? Experiment.All : Experiment.All.Where(e => e.Name == parse.GetValue(name)).ToList();
            // Every run first, each seed of each configuration, so the work is known up front and an interrupted call resumes.
            var specs = chosen.SelectMany(e => e.Specs(setup)).DistinctBy(r => r.Name).ToList();
            var total = Stopwatch.StartNew();
            output.WriteLine($"Experiments {string.Join(", ", chosen.Select(e => e.Name))}: {specs.Count} configuration{(specs.Count == 1 ? "" : "s")} × {seedCount} seed{(seedCount == 1 ? "" : "s")} = " +
                             $"{specs.Count * seedCount} training run{(specs.Count * seedCount == 1 ? "" : "s")} of {training.Steps} steps (finished runs in {setup.WorkDir} are reused).");
            foreach (var run in specs) ExperimentRuns.EnsureSeeds(setup, run);
            double compute = setup.Used.Values.Sum(r => r.TrainSeconds);
            int runCount = setup.Used.Count; // each section below clears Used for its own runs
            output.WriteLine($"All {runCount} runs ready ({Markdown.Clock(total.Elapsed)} in this call); their training took {Markdown.Clock(TimeSpan.FromSeconds(compute))} in all.");
            foreach (var e in chosen)
            {
                output.WriteLine($"== {e.Title}");
                var clock = Stopwatch.StartNew();
                setup.Used.Clear();
                string body = e.Run(setup, figures);
                double trained = setup.Used.Values.Sum(r => r.TrainSeconds);
                string section = $"## {e.Title}\n\n" +
                                 $"_Reproduce: `dotnet cake --target=Experiment-{char.ToUpperInvariant(e.Name[0])}{e.Name[1..]}`, or `{VariantCommands.CommandLine(parse).Replace(" all ", $" {e.Name} ")}`. " +
                                 $"Ran {DateTime.Now:yyyy-MM-dd} on {MachineDescription.Brief() + ", no GPU used"}; its {setup.Used.Count} training run{(setup.Used.Count == 1 ? "" : "s")} took {Markdown.Clock(TimeSpan.FromSeconds(trained))} " +
                                 $"(shared with other experiments and reused when unchanged), this report {Markdown.Clock(clock.Elapsed)}._\n\n" + body;
                AtomicFile.WriteAllText(Path.Combine(figures.Dir, e.Name + ".md"), section);
                output.WriteLine($"{e.Name}: done in {Markdown.Clock(clock.Elapsed)}.");
            }
            AtomicFile.WriteAllText(reportPath, Assemble(figures, setup, runCount, compute, smoke));
            output.WriteLine($"Wrote {reportPath} (sections and plots in {figures.Dir}).");
            return Task.FromResult(0);
        });
        return command;
    }

    // results.md: every experiment that has a section so far, in the catalogue's order.
    static string Assemble(Figures figures, ExperimentSetup s, int runCount, double computeSeconds, bool smoke)
    {
        var md = new StringBuilder();
        md.AppendLine("# Reproducing the papers' findings").AppendLine();
        if (smoke) md.AppendLine("**Smoke test (`--fast`): runs far shorter than the preset's; nothing here may be cited.**").AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Each section was written by `relu-sparsity experiment NAME` from its own training runs; nothing here is copied from elsewhere. " +
                      $"Base recipe: the `{s.PresetName}` preset ({s.Model.Layers} layers, d_model {s.Model.DModel}, d_ff {s.Model.DFf}, seq_len {s.Model.SeqLen}, " +
                      $"{s.Training.Steps} steps of {s.Training.BatchSize} windows, seed {s.Training.Seed}); training text `{s.TrainCorpus}`, held-out text `{s.HeldOutCorpus}`, " +
                      $"tokenizer `{s.Tokenizer}`; {s.Seeds} seed{(s.Seeds == 1 ? "" : "s")} per configuration ({string.Join(", ", Enumerable.Range(s.Training.Seed, s.Seeds))}), " +
                      $"figures as mean ± sample standard deviation over seeds. All runs: `dotnet cake --target=Experiments`; " +
                      $"the {runCount} training runs behind this report took {Markdown.Clock(TimeSpan.FromSeconds(computeSeconds))} of training in all, on {MachineDescription.Brief()}.").AppendLine();
        var present = Experiment.All.Where(e => File.Exists(Path.Combine(figures.Dir, e.Name + ".md"))).ToList();
        foreach (var e in present) md.AppendLine(CultureInfo.InvariantCulture, $"- [{e.Title}](#{Anchor(e.Title)})");
        md.AppendLine();
        foreach (var e in present) md.AppendLine(File.ReadAllText(Path.Combine(figures.Dir, e.Name + ".md")));
        return md.ToString();
    }

    static string Anchor(string title) => new string(title.ToLowerInvariant().Where(c => char.IsLetterOrDigit(c) || c is ' ' or '-').ToArray()).Replace(' ', '-');

}
