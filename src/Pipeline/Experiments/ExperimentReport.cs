using System.Diagnostics;
using System.Globalization;
using System.Text;
using Sparsity.Pipeline.Report;

namespace Sparsity.Pipeline.Experiments;

/// <summary>
/// <c>experiment NAME|all</c> as a library call: every training run the chosen experiments need (each seed of each
/// configuration) first, so the work is known up front and an interrupted call resumes; then each experiment's section
/// (its own Markdown file and plots in a folder beside the report); then results.md assembled from every section there.
/// </summary>
public static class ExperimentReport
{
    /// <summary>
    /// Runs <paramref name="chosen"/> on <paramref name="setup"/> and (re)writes <paramref name="reportPath"/>;
    /// <paramref name="commandLine"/> is how each section says it can be reproduced, <paramref name="smoke"/> marks a
    /// smoke test. Returns the folder of sections and plots.
    /// </summary>
    public static string Run(
        ExperimentSetup setup,
        IReadOnlyList<Experiment> chosen,
        string reportPath,
        string commandLine,
        bool smoke
    )
    {
        string reportDir = Path.GetDirectoryName(Path.GetFullPath(reportPath))!;
        var figures = new Figures(
            Path.Combine(reportDir, Path.GetFileNameWithoutExtension(reportPath)),
            Path.GetFileNameWithoutExtension(reportPath)
        );
        Directory.CreateDirectory(figures.Dir);
        // Every run first, each seed of each configuration, so the work is known up front and an interrupted call
        // resumes.
        var specs = chosen.SelectMany(e => e.Specs(setup)).DistinctBy(r => r.Name).ToList();
        var total = Stopwatch.StartNew();
        setup.Output.WriteLine(
            $"Experiments {string.Join(", ", chosen.Select(e => e.Name))}: {specs.Count} configuration{(specs.Count == 1 ? "" : "s")} × {setup.Seeds} seed{(setup.Seeds == 1 ? "" : "s")} = "
                + $"{specs.Count * setup.Seeds} training run{(specs.Count * setup.Seeds == 1 ? "" : "s")} of {setup.Training.Steps} steps (finished runs in {setup.WorkDir} are reused)."
        );
        foreach (var run in specs)
            ExperimentRuns.EnsureSeeds(setup, run);
        double compute = setup.Used.Values.Sum(r => r.TrainSeconds);
        int runCount = setup.Used.Count; // each section below clears Used for its own runs
        setup.Output.WriteLine(
            $"All {runCount} runs ready ({Markdown.Clock(total.Elapsed)} in this call); their training took {Markdown.Clock(TimeSpan.FromSeconds(compute))} in all."
        );
        foreach (var e in chosen)
        {
            setup.Output.WriteLine($"== {e.Title}");
            var clock = Stopwatch.StartNew();
            setup.Used.Clear();
            string body = e.Run(setup, figures);
            double trained = setup.Used.Values.Sum(r => r.TrainSeconds);
            string section =
                $"## {e.Title}\n\n"
                + $"_Reproduce: `dotnet cake --target=Experiment-{char.ToUpperInvariant(e.Name[0])}{e.Name[1..]}`, or `{commandLine.Replace(" all ", $" {e.Name} ")}`. "
                + $"Ran {DateTime.Now:yyyy-MM-dd} on {MachineDescription.Brief() + ", no GPU used"}; its {setup.Used.Count} training run{(setup.Used.Count == 1 ? "" : "s")} took {Markdown.Clock(TimeSpan.FromSeconds(trained))} "
                + $"(shared with other experiments and reused when unchanged), this report {Markdown.Clock(clock.Elapsed)}._\n\n"
                + body;
            AtomicFile.WriteAllText(Path.Combine(figures.Dir, e.Name + ".md"), section);
            setup.Output.WriteLine($"{e.Name}: done in {Markdown.Clock(clock.Elapsed)}.");
        }
        AtomicFile.WriteAllText(reportPath, Assemble(figures, setup, runCount, compute, smoke));
        return figures.Dir;
    }

    // results.md: every experiment that has a section so far, in the catalogue's order.
    static string Assemble(Figures figures, ExperimentSetup s, int runCount, double computeSeconds, bool smoke)
    {
        var md = new StringBuilder();
        md.AppendLine("# Reproducing the papers' findings").AppendLine();
        if (smoke)
            md.AppendLine("**Smoke test (`--fast`): runs far shorter than the preset's; nothing here may be cited.**")
                .AppendLine();
        md.AppendLine(
                CultureInfo.InvariantCulture,
                $"Each section was written by `relu-sparsity experiment NAME` from its own training runs; nothing here is copied from elsewhere. "
                    + $"Base recipe: the `{s.PresetName}` preset ({s.Model.Layers} layers, d_model {s.Model.DModel}, d_ff {s.Model.DFf}, seq_len {s.Model.SeqLen}, "
                    + $"{s.Training.Steps} steps of {s.Training.BatchSize} windows, seed {s.Training.Seed}); training text `{s.TrainCorpus}`, held-out text `{s.HeldOutCorpus}`, "
                    + $"tokenizer `{s.Tokenizer}`; {s.Seeds} seed{(s.Seeds == 1 ? "" : "s")} per configuration ({string.Join(", ", Enumerable.Range(s.Training.Seed, s.Seeds))}), "
                    + $"figures as mean ± sample standard deviation over seeds. All runs: `dotnet cake --target=Experiments`; "
                    + $"the {runCount} training runs behind this report took {Markdown.Clock(TimeSpan.FromSeconds(computeSeconds))} of training in all, on {MachineDescription.Brief()}."
            )
            .AppendLine();
        var present = Experiment.All.Where(e => File.Exists(Path.Combine(figures.Dir, e.Name + ".md"))).ToList();
        foreach (var e in present)
            md.AppendLine(CultureInfo.InvariantCulture, $"- [{e.Title}](#{Anchor(e.Title)})");
        md.AppendLine();
        foreach (var e in present)
            md.AppendLine(File.ReadAllText(Path.Combine(figures.Dir, e.Name + ".md")));
        return md.ToString();
    }

    static string Anchor(string title) =>
        new string(title.ToLowerInvariant().Where(c => char.IsLetterOrDigit(c) || c is ' ' or '-').ToArray()).Replace(
            ' ',
            '-'
        );
}
