using System.Globalization;
using System.Text;
using ScottPlot;
using Sparsity.Analysis;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>Experiment 8 (Li et al.: deeper models are sparser): half, the preset's and twice its layers at fixed
/// width, over seeds.</summary>
public static class DepthExperiment
{
    /// <summary>Depths as multiples of the preset's layers (2, 4, 8 for the quick preset).</summary>
    public static readonly double[] Depths = [0.5, 1, 2];

    /// <summary>One run per depth (the base run at the preset's).</summary>
    public static IReadOnlyList<RunSpec> Specs(ExperimentSetup s) =>
        Depths
            .Select(m => Math.Max(1, (int)Math.Round(s.Model.Layers * m)))
            .Select(n =>
                n == s.Model.Layers
                    ? Experiment.Base(s)
                    : new RunSpec($"layers_{n}", s.Model with { Layers = n }, s.Training)
            )
            .ToList();

    /// <summary>Runs the experiment on <paramref name="s"/>'s corpus and preset and returns its section of the report,
    /// adding its plots to <paramref name="f"/>.</summary>
    public static string Run(ExperimentSetup s, Figures f)
    {
        var runs = Specs(s).Select(spec => ExperimentRuns.EnsureSeeds(s, spec)).ToList(); // [depth][seed]
        int deepest = runs[^1][0].Spec.Model.Layers;
        var md = new StringBuilder();
        md.AppendLine(
                $"The {s.PresetName} recipe at {string.Join(", ", runs.Select(r => r[0].Spec.Model.Layers))} layers, d_model {s.Model.DModel}, d_ff {s.Model.DFf} "
                    + $"(same data order and steps), {SeedPlots.Seeds(runs[0])}. Held-out nonzero fraction per layer and averaged over layers:"
            )
            .AppendLine();
        md.AppendLine(
            Table(
                [
                    "layers",
                    .. Enumerable.Range(0, deepest).Select(l => $"L{l}"),
                    "mean nonzero",
                    "held-out loss",
                    "training time (mean)",
                ],
                runs.Select(r =>
                    (IReadOnlyList<string>)
                        [
                            r[0].Spec.Model.Layers.ToString(),
                            .. Enumerable
                                .Range(0, deepest)
                                .Select(l =>
                                    l < r[0].Spec.Model.Layers
                                        ? SeedSpread.Over(r, x => x.HeldOut.Layers[l].NonzeroFraction).ToString("0.000")
                                        : ""
                                ),
                            SeedSpread.Over(r, x => x.MeanNonzeroFraction).ToString("0.000"),
                            SeedSpread.Over(r, x => x.Evaluation.Loss).ToString("0.0000"),
                            Clock(TimeSpan.FromSeconds(r.Average(x => x.TrainSeconds))),
                        ]
                )
            )
        );
        md.AppendLine(
                f.Add(
                    "depth.png",
                    Plot(runs),
                    "nonzero fraction by relative layer position at each depth, ± sd over seeds"
                )
            )
            .AppendLine();

        md.AppendLine("**What the runs show.**").AppendLine();
        var means = runs.Select(r => SeedSpread.Over(r, x => x.MeanNonzeroFraction)).ToList();
        bool sparser = means.Zip(means.Skip(1)).All(p => p.Second.Band.High < p.First.Band.Low);
        bool direction = means.Zip(means.Skip(1)).All(p => p.Second.Mean < p.First.Mean);
        md.AppendLine(
            $"- Mean nonzero fraction by depth: {string.Join(" → ", runs.Select((r, i) => $"{r[0].Spec.Model.Layers} layers {means[i].ToString("0.000")}"))}. "
                + (
                    sparser ? "Deeper models are sparser, beyond the seeds' spread: Li et al.'s claim reproduces."
                    : direction
                        ? "Deeper models are sparser on average, but the steps lie within the seeds' spread, so this does not establish it."
                    : "Deeper models are not sparser here: Li et al.'s claim does not reproduce at this scale."
                )
        );
        md.AppendLine(
            "- Compare layers at the same relative depth in the plot: the mean over layers mixes depth with the position pattern of section 2."
        );
        md.AppendLine(
            $"- Scale: Li et al. compare T5 and ViT models of tens to hundreds of layers' worth of parameters; these are {runs[0][0].Spec.Training.Steps} steps on 1.6 M tokens."
        );
        return md.ToString();
    }

    static Plot Plot(List<IReadOnlyList<RunOutcome>> runs)
    {
        var plt = new Plot();
        for (int d = 0; d < runs.Count; d++)
        {
            int layers = runs[d][0].Spec.Model.Layers;
            double[] x = Enumerable
                .Range(0, layers)
                .Select(l => layers == 1 ? 0.5 : (double)l / (layers - 1))
                .ToArray();
            SeedPlots.Band(
                plt,
                x,
                runs[d].Select(r => r.HeldOut.Layers.Select(l => l.NonzeroFraction).ToArray()).ToList(),
                $"{layers} layers",
                Colors.Category10[d]
            );
        }
        plt.ShowLegend(Alignment.UpperRight);
        plt.Title("Held-out nonzero fraction by layer position");
        plt.XLabel("relative depth (0 = first layer, 1 = last)");
        plt.YLabel("fraction of units active per token");
        return plt;
    }
}
