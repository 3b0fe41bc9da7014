using System.Globalization;
using System.Text;
using ScottPlot;
using Sparsity.Analysis;
using Sparsity.Pipeline.Report;
using Sparsity.Training;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>Experiment 1: per-layer nonzero fraction over training, from about 0.5 at step 0 (Li et al. Fig. 1), over
/// seeds.</summary>
public static class DynamicsExperiment
{
    /// <summary>Runs the experiment on <paramref name="s"/>'s corpus and preset and returns its section of the report,
    /// adding its plots to <paramref name="f"/>.</summary>
    public static string Run(ExperimentSetup s, Figures f)
    {
        var runs = ExperimentRuns.EnsureSeeds(s, Experiment.Base(s));
        var tracked = runs.Select(Tracked).ToList();
        int layers = tracked[0][0].Layers!.Count,
            lastStep = tracked[0][^1].Step;
        // Log-spaced early steps, where the fall happens, then every tenth of the run.
        var wanted = new[] { 0, 10, 20, 50, 100 }.Concat(Enumerable.Range(1, 10).Select(i => lastStep * i / 10));
        var steps = wanted.Select(w => tracked[0].MinBy(e => Math.Abs(e.Step - w))!.Step).Distinct().Order().ToList();
        SeedSpread At(int step, Func<TrainingLogEntry, double> of) =>
            SeedSpread.Over(tracked, t => of(t.First(e => e.Step == step)));

        var md = new StringBuilder();
        md.AppendLine(
                CultureInfo.InvariantCulture,
                $"Nonzero fraction (mean fraction of a layer's {runs[0].Spec.Model.DFf} units active per token) on the training batch of the step, "
                    + $"from `sparsity.jsonl` of the base run ({s.PresetName} preset), {SeedPlots.Seeds(runs)}."
            )
            .AppendLine();
        md.AppendLine(
            Table(
                ["step", "training loss", .. Enumerable.Range(0, layers).Select(l => $"layer {l}"), "mean"],
                steps.Select(step =>
                    (IReadOnlyList<string>)
                        [
                            step.ToString(),
                            At(step, e => e.Loss).ToString("0.000"),
                            .. Enumerable
                                .Range(0, layers)
                                .Select(l => At(step, e => e.Layers![l].NonzeroFraction).ToString("0.000")),
                            At(step, e => e.Layers!.Average(l => l.NonzeroFraction)).ToString("0.000"),
                        ]
                )
            )
        );
        md.AppendLine(
                f.Add(
                    "dynamics.png",
                    Plot(tracked, layers),
                    "nonzero fraction during training, mean and ± sd over seeds"
                )
            )
            .AppendLine();

        var start = SeedSpread.Over(tracked, t => t[0].Layers!.Average(l => l.NonzeroFraction));
        var end = SeedSpread.Over(tracked, t => t[^1].Layers!.Average(l => l.NonzeroFraction));
        var halfStep = SeedSpread.Over(tracked, t =>
        {
            double halfway =
                (t[0].Layers!.Average(l => l.NonzeroFraction) + t[^1].Layers!.Average(l => l.NonzeroFraction)) / 2;
            return t.First(e => e.Layers!.Average(l => l.NonzeroFraction) <= halfway).Step;
        });
        md.AppendLine("**What the runs show.**").AppendLine();
        md.AppendLine(
            CultureInfo.InvariantCulture,
            $"- At step 0 the mean nonzero fraction is {start.ToString("0.000")} (seeds: {start.ValuesText("0.000")}): "
                + $"{(Math.Abs(start.Mean - 0.5) < 0.05 ? "reproduces" : "does not reproduce")} Li et al.'s ≈ 0.5 at initialisation."
        );
        md.AppendLine(
            CultureInfo.InvariantCulture,
            $"- By the last step ({lastStep}) it is {end.ToString("0.000")} (seeds: {end.ValuesText("0.000")}); half of that fall happened by step "
                + $"{halfStep.ToString("0")} (seeds: {halfStep.ValuesText("0")}, {Pct(halfStep.Mean / lastStep)} of training on average), so sparsity emerges early, as in Li et al. Fig. 1."
        );
        var lows = Enumerable
            .Range(0, layers)
            .Select(l =>
                (
                    Layer: l,
                    Min: SeedSpread.Over(tracked, t => t.Min(e => e.Layers![l].NonzeroFraction)),
                    Rise: SeedSpread.Over(tracked, t =>
                        t[^1].Layers![l].NonzeroFraction - t.Min(e => e.Layers![l].NonzeroFraction)
                    )
                )
            )
            .ToList();
        md.AppendLine(
            $"- Lowest value per layer during training: {string.Join("; ", lows.Select(x => $"layer {x.Layer} {x.Min.ToString("0.000")}, {x.Rise.ToString("0.000")} below its last value"))}. "
                + "Where the minimum lies below the last value, the fraction rose again later in training."
        );
        md.AppendLine(
            CultureInfo.InvariantCulture,
            $"- Li et al. report ≈ 3 % for T5-Base after full training; these runs are {lastStep + 1} steps of a small model on 1.6 M tokens, so only the direction and the early fall are comparable."
        );
        return md.ToString();
    }

    /// <summary>The tracked entries of a run's training log (those with per-layer sparsity).</summary>
    public static List<TrainingLogEntry> Tracked(RunOutcome run) => run.Log.Where(e => e.Layers != null).ToList();

    static Plot Plot(List<List<TrainingLogEntry>> tracked, int layers)
    {
        var plt = new Plot();
        double[] x = tracked[0].Select(e => (double)e.Step).ToArray();
        for (int l = 0; l < layers; l++)
            SeedPlots.Band(
                plt,
                x,
                tracked.Select(t => t.Select(e => e.Layers![l].NonzeroFraction).ToArray()).ToList(),
                $"layer {l}",
                Colors.Category10[l % 10]
            );
        return SparsityReport.TrajectoryAxes(plt, "Nonzero fraction during training (band: ± sd over seeds)");
    }
}
