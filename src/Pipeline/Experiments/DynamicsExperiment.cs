using System.Globalization;
using System.Text;
using Sparsity.Pipeline.Report;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>Experiment 1: per-layer nonzero fraction over training, from about 0.5 at step 0 (Li et al. Fig. 1).</summary>
public static class DynamicsExperiment
{
    public static string Run(ExperimentSetup s, Figures f)
    {
        var run = ExperimentRuns.Ensure(s, Experiment.Base(s));
        var tracked = run.Log.Where(e => e.Layers != null).ToList();
        int layers = tracked[0].Layers!.Count, lastStep = tracked[^1].Step;
        // Log-spaced early steps, where the fall happens, then every tenth of the run.
        var wanted = new[] { 0, 10, 20, 50, 100 }.Concat(Enumerable.Range(1, 10).Select(i => lastStep * i / 10));
        var rows = wanted.Select(w => tracked.MinBy(e => Math.Abs(e.Step - w))!).DistinctBy(e => e.Step).OrderBy(e => e.Step).ToList();

        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"Nonzero fraction (mean fraction of a layer's {run.Spec.Model.DFf} units active per token) on the training batch of the step, " +
                      $"from `sparsity.jsonl` of the base run ({s.PresetName} preset, trained in {Clock(TimeSpan.FromSeconds(run.TrainSeconds))}).").AppendLine();
        md.AppendLine(Table(["step", "training loss", .. Enumerable.Range(0, layers).Select(l => $"layer {l}"), "mean"],
            rows.Select(e => (IReadOnlyList<string>)[e.Step.ToString(), F(e.Loss), .. e.Layers!.Select(l => F(l.NonzeroFraction)), F(e.Layers!.Average(l => l.NonzeroFraction))])));
        md.AppendLine(f.Add("dynamics.png", SparsityReport.Trajectory(run.Log.ToList()), "nonzero fraction during training")).AppendLine();

        double start = tracked[0].Layers!.Average(l => l.NonzeroFraction), end = tracked[^1].Layers!.Average(l => l.NonzeroFraction);
        double halfway = (start + end) / 2;
        int halfStep = tracked.First(e => e.Layers!.Average(l => l.NonzeroFraction) <= halfway).Step;
        var low = Enumerable.Range(0, layers).Select(l => tracked.MinBy(e => e.Layers![l].NonzeroFraction)!).ToList();
        md.AppendLine("**What the run shows.**").AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"- At step 0 the mean nonzero fraction is {F(start)} (layers {Layers(tracked[0].Layers!.Select(l => l.NonzeroFraction))}): " +
                      $"{(Math.Abs(start - 0.5) < 0.05 ? "reproduces" : "does not reproduce")} Li et al.'s ≈ 0.5 at initialisation.");
        md.AppendLine(CultureInfo.InvariantCulture, $"- By the last step ({lastStep}) it is {F(end)} (layers {Layers(tracked[^1].Layers!.Select(l => l.NonzeroFraction))}); " +
                      $"half of that fall happened by step {halfStep} ({Pct((double)halfStep / lastStep)} of training), so sparsity emerges early, as in Li et al. Fig. 1.");
        md.AppendLine($"- Lowest value per layer and its step: {string.Join("; ", low.Select((e, l) => $"layer {l} {F(e.Layers![l].NonzeroFraction)} at step {e.Step}"))}. " +
                      "Where the minimum comes before the last step, the fraction rose again later in training.");
        md.AppendLine(CultureInfo.InvariantCulture, $"- Li et al. report ≈ 3 % for T5-Base after full training; this run is {lastStep + 1} steps of a small model on 1.6 M tokens, so only the direction and the early fall are comparable.");
        return md.ToString();
    }
}
