using System.Globalization;
using System.Text;
using ScottPlot;
using Sparsity.Analysis;
using Sparsity.Pipeline.Variants;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>Experiment 6: L1 penalty on MLP activations against nonzero fraction, loss and ECE (Li et al. Table
/// C.1).</summary>
public static class L1Experiment
{
    /// <summary>λ values beside the unpenalised base run (loss += λ · mean over layers of mean |h|).</summary>
    public static readonly double[] Lambdas = [0.01, 0.1, 1];

    /// <summary>The unpenalised base run and one run per λ.</summary>
    public static IReadOnlyList<RunSpec> Specs(ExperimentSetup s) =>
        [
            Experiment.Base(s),
            .. Lambdas.Select(l => new RunSpec(
                $"l1_{l.ToString(CultureInfo.InvariantCulture)}",
                s.Model,
                s.Training with
                {
                    L1 = l,
                }
            )),
        ];

    /// <summary>Runs the experiment on <paramref name="s"/>'s corpus and preset and returns its section of the report,
    /// adding its plots to <paramref name="f"/>.</summary>
    public static string Run(ExperimentSetup s, Figures f)
    {
        var runs = Specs(s)
            .Select((spec, i) => (Lambda: i == 0 ? 0 : Lambdas[i - 1], Seeds: ExperimentRuns.EnsureSeeds(s, spec)))
            .ToList();
        var bases = runs[0].Seeds;
        string Of(IReadOnlyList<RunOutcome> r, Func<RunOutcome, double> by, string format = "0.0000") =>
            SeedSpread.Over(r, by).ToString(format);
        string Percent(IReadOnlyList<RunOutcome> r, Func<Evaluation, double> by) =>
            SeedSpread.Over(r, x => 100 * by(x.Evaluation)).ToString("0.00") + " %";

        var md = new StringBuilder();
        md.AppendLine(
                $"The {s.PresetName} recipe with loss += λ · (mean over layers of the mean |activation|), same data, {SeedPlots.Seeds(bases)} (Δ loss seed by seed). "
                    + "Held-out nonzero fraction from `analyze`, quality from `evaluate` on the held-out text. Loss is the cross-entropy alone (the penalty is not included)."
            )
            .AppendLine();
        md.AppendLine(
            Table(
                [
                    "λ",
                    "nonzero per layer (mean over seeds)",
                    "mean nonzero",
                    "dead units",
                    "loss",
                    "Δ loss",
                    "accuracy",
                    "ECE",
                    "noisy accuracy",
                ],
                runs.Select(r =>
                    (IReadOnlyList<string>)
                        [
                            F(r.Lambda, "0.###"),
                            Layers(
                                Enumerable
                                    .Range(0, s.Model.Layers)
                                    .Select(l => r.Seeds.Average(x => x.HeldOut.Layers[l].NonzeroFraction))
                            ),
                            Of(r.Seeds, x => x.MeanNonzeroFraction),
                            Of(r.Seeds, x => x.HeldOut.Layers.Sum(l => l.DeadUnits), "0.0"),
                            Of(r.Seeds, x => x.Evaluation.Loss),
                            r.Lambda == 0
                                ? ""
                                : SeedSpread
                                    .Over(r.Seeds.Zip(bases), p =>
                                        100
                                        * (p.First.Evaluation.Loss - p.Second.Evaluation.Loss)
                                        / p.Second.Evaluation.Loss
                                    )
                                    .ToString("0.00") + " %",
                            Percent(r.Seeds, e => e.Accuracy),
                            Percent(r.Seeds, e => e.ExpectedCalibrationError),
                            Percent(r.Seeds, e => e.NoisyAccuracy),
                        ]
                )
            )
        );
        md.AppendLine(f.Add("l1.png", Plot(runs), "nonzero fraction, loss and ECE against λ, ± sd over seeds"))
            .AppendLine();

        md.AppendLine("**What the runs show.**").AppendLine();
        var strongest = runs[^1];
        md.AppendLine(
            CultureInfo.InvariantCulture,
            $"- The nonzero fraction falls from {Of(bases, x => x.MeanNonzeroFraction, "0.000")} (λ = 0) to {Of(strongest.Seeds, x => x.MeanNonzeroFraction, "0.000")} "
                + $"(λ = {F(strongest.Lambda, "0.###")}), with the held-out loss changing by "
                + $"{SeedSpread.Over(strongest.Seeds.Zip(bases), p => 100 * (p.First.Evaluation.Loss - p.Second.Evaluation.Loss) / p.Second.Evaluation.Loss).ToString("0.00")} %."
        );
        bool Improves((double Lambda, IReadOnlyList<RunOutcome> Seeds) r) =>
            r
                .Seeds.Zip(bases)
                .All(p =>
                    p.First.Evaluation.ExpectedCalibrationError
                    < p.Second.Evaluation.ExpectedCalibrationError - EceResolution
                );
        md.AppendLine(
            CultureInfo.InvariantCulture,
            $"- ECE goes {string.Join(" → ", runs.Select(r => Percent(r.Seeds, e => e.ExpectedCalibrationError)))} across λ. Li et al. (Table C.1) saw L1 make T5 sparser with calibration "
                + $"improving like Top-k; here ECE {(runs.Skip(1).Any(Improves) ? "improves (by more than 0.05 percentage points, in every seed) for some λ" : "does not improve by more than 0.05 percentage points in every seed at any λ")}."
        );
        return md.ToString();
    }

    static Plot Plot(List<(double Lambda, IReadOnlyList<RunOutcome> Seeds)> runs)
    {
        var plt = new Plot();
        double[] x = Enumerable.Range(0, runs.Count).Select(i => (double)i).ToArray();
        int seeds = runs[0].Seeds.Count;
        List<double[]> PerSeed(Func<RunOutcome, double> by) =>
            Enumerable.Range(0, seeds).Select(j => runs.Select(r => by(r.Seeds[j])).ToArray()).ToList();
        SeedPlots.Band(plt, x, PerSeed(r => r.MeanNonzeroFraction), "mean nonzero fraction (left)", Colors.C0);
        SeedPlots.Band(plt, x, PerSeed(r => r.Evaluation.ExpectedCalibrationError), "ECE (left)", Colors.C1);
        var loss = plt.Add.Scatter(x, runs.Select(r => r.Seeds.Average(s => s.Evaluation.Loss)).ToArray());
        loss.LegendText = "held-out loss, mean over seeds (right)";
        loss.LineWidth = 2;
        loss.Color = Colors.C2;
        loss.Axes.YAxis = plt.Axes.Right;
        plt.Axes.Bottom.SetTicks(x, runs.Select(r => "λ = " + F(r.Lambda, "0.###")).ToArray());
        plt.Axes.Right.Label.Text = "held-out loss (nats/token)";
        plt.ShowLegend(Alignment.UpperCenter);
        plt.Title("L1 activation penalty: sparsity, calibration and loss");
        plt.YLabel("fraction");
        return plt;
    }
}
