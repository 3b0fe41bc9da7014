using System.Globalization;
using System.Text;
using ScottPlot;
using Sparsity.Analysis;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>
/// Experiment 4: nonzero fraction and absolute active-unit count against MLP width at fixed depth, with
/// fits of count = c·n^α and of the blog's c·√n.
/// </summary>
public static class WidthExperiment
{
    /// <summary>Widths as multiples of the preset's d_ff (the preset itself is the base run): 64 … 4,096 for the quick
    /// preset.</summary>
    public static readonly double[] Widths = [0.125, 0.25, 0.5, 1, 2, 4, 8];

    /// <summary>One run per width (the base run at the preset's).</summary>
    public static IReadOnlyList<RunSpec> Specs(ExperimentSetup s) =>
        Widths
            .Select(m => (int)Math.Round(s.Model.DFf * m))
            .Select(n =>
                n == s.Model.DFf ? Experiment.Base(s) : new RunSpec($"dff_{n}", s.Model with { DFf = n }, s.Training)
            )
            .ToList();

    /// <summary>Runs the experiment on <paramref name="s"/>'s corpus and preset and returns its section of the report,
    /// adding its plots to <paramref name="f"/>.</summary>
    public static string Run(ExperimentSetup s, Figures f)
    {
        var runs = Specs(s).Select(spec => ExperimentRuns.EnsureSeeds(s, spec)).ToList(); // [width][seed]
        int layers = s.Model.Layers,
            seeds = runs[0].Count;
        double[] n = runs.Select(r => (double)r[0].Spec.Model.DFf).ToArray();
        static double MeanUnits(RunOutcome r) => r.HeldOut.Layers.Average(l => l.PerTokenUnitsMean);
        var spread = runs.Select(r => SeedSpread.Over(r, MeanUnits)).ToArray();
        double[] mean = spread.Select(x => x.Mean).ToArray();

        var md = new StringBuilder();
        md.AppendLine(
                $"{runs.Count} widths of the {s.PresetName} recipe that differ only in d_ff ({layers} layers, d_model {s.Model.DModel}, same data order), {SeedPlots.Seeds(runs[0])}. "
                    + "Active units per token on the held-out text, per layer and averaged over layers."
            )
            .AppendLine();
        md.AppendLine(
            Table(
                [
                    "d_ff",
                    .. Enumerable.Range(0, layers).Select(l => $"units/token L{l}"),
                    "mean units/token",
                    "mean nonzero fraction",
                    "held-out loss",
                    "training time (mean)",
                ],
                runs.Select(
                    (r, i) =>
                        (IReadOnlyList<string>)
                            [
                                r[0].Spec.Model.DFf.ToString(),
                                .. Enumerable
                                    .Range(0, layers)
                                    .Select(l =>
                                        SeedSpread.Over(r, x => x.HeldOut.Layers[l].PerTokenUnitsMean).ToString("0.0")
                                    ),
                                spread[i].ToString("0.0"),
                                SeedSpread.Over(r, x => x.MeanNonzeroFraction).ToString("0.000"),
                                SeedSpread.Over(r, x => x.Evaluation.Loss).ToString("0.0000"),
                                Clock(TimeSpan.FromSeconds(r.Average(x => x.TrainSeconds))),
                            ]
                )
            )
        );

        var fits = new List<(string Name, double[] Counts, ScalingFit Power, ScalingFit Sqrt)>
        {
            ("mean over layers", mean, WidthScaling.PowerLaw(n, mean), WidthScaling.SquareRootLaw(n, mean)),
        };
        for (int l = 0; l < layers; l++)
        {
            double[] c = runs.Select(r => r.Average(x => x.HeldOut.Layers[l].PerTokenUnitsMean)).ToArray();
            fits.Add(($"layer {l}", c, WidthScaling.PowerLaw(n, c), WidthScaling.SquareRootLaw(n, c)));
        }
        md.AppendLine(
                "Fits (MathNet.Numerics) to the counts averaged over seeds: count = c·n^α by least squares on log–log; count = c·√n by least squares on the counts. "
                    + "R² is 1 − SS_res/SS_tot on the counts; max error is the largest relative miss over the widths."
            )
            .AppendLine();
        md.AppendLine(
            Table(
                ["counts", "c (power law)", "α", "R²", "max error", "c (√n law)", "R² (√n)", "max error (√n)"],
                fits.Select(x =>
                    (IReadOnlyList<string>)
                        [
                            x.Name,
                            F(x.Power.C),
                            F(x.Power.Exponent),
                            F(x.Power.RSquared, "0.0000"),
                            Pct(x.Power.MaxRelativeError),
                            F(x.Sqrt.C),
                            F(x.Sqrt.RSquared, "0.0000"),
                            Pct(x.Sqrt.MaxRelativeError),
                        ]
                ),
                "l"
            )
        );
        var interval = WidthScaling.BootstrapExponent(
            n,
            Enumerable
                .Range(0, seeds)
                .Select(i => (IReadOnlyList<double>)runs.Select(r => MeanUnits(r[i])).ToArray())
                .ToList()
        );
        md.AppendLine(
                $"The exponent over seeds (mean over layers): α = {F(interval.Exponent)} fitted to the seeds' mean counts; each seed's own fit: "
                    + $"{string.Join(" / ", interval.PerSeed.Select(a => F(a)))}; {F(100 * interval.Level, "0")} % percentile bootstrap over seeds (10,000 resamples of the seeds, "
                    + $"counts averaged, α refitted): [{F(interval.Low)}, {F(interval.High)}]"
                    + (
                        seeds < 5
                            ? $". With {seeds} seed{(seeds == 1 ? "" : "s")} a bootstrap has few distinct resamples, so the interval is coarse: it spans the seeds' own exponents rather than a sampling distribution."
                            : "."
                    )
            )
            .AppendLine();
        md.AppendLine(
                f.Add(
                    "width.png",
                    Plot(n, fits, runs),
                    "active units per token against width, log-log, with the seeds' spread"
                )
            )
            .AppendLine();

        var all = fits[0];
        md.AppendLine("**What the runs show.**").AppendLine();
        var first = SeedSpread.Over(runs[0], x => x.MeanNonzeroFraction);
        var last = SeedSpread.Over(runs[^1], x => x.MeanNonzeroFraction);
        md.AppendLine(
            CultureInfo.InvariantCulture,
            $"- The nonzero fraction goes {first.ToString("0.000")} → {last.ToString("0.000")} from d_ff {n[0]} to {n[^1]}: "
                + $"{(last.Mean < first.Mean ? "wider layers are sparser in percentage" : "wider layers are not sparser in percentage")}, "
                + $"while the count goes {spread[0].ToString("0.0")} → {spread[^1].ToString("0.0")} units ({(mean[^1] > mean[0] ? "denser in count" : "not denser in count")}); Li et al. Fig. 4 report both."
        );
        md.AppendLine(
            $"- Power law: count ≈ {F(all.Power.C)}·n^{F(all.Power.Exponent)} (R² {F(all.Power.RSquared, "0.0000")}). The blog's law: count ≈ {F(all.Sqrt.C)}·√n "
                + $"(R² {F(all.Sqrt.RSquared, "0.0000")}, worst miss {Pct(all.Sqrt.MaxRelativeError)}; the blog's MLPs on MNIST gave c ≈ 3.2–3.6)."
        );
        md.AppendLine(
            $"- **α = 0.5 is {(interval.Contains(0.5) ? "inside" : "outside")} the interval [{F(interval.Low)}, {F(interval.High)}]**: "
                + (
                    interval.Contains(0.5)
                        ? "these runs do not reject the √n law."
                        : $"the √n law does not hold for this model and training length; the exponent is {(interval.Low > 0.5 ? "above" : "below")} ½ in every resample."
                )
        );
        return md.ToString();
    }

    static Plot Plot(
        double[] n,
        List<(string Name, double[] Counts, ScalingFit Power, ScalingFit Sqrt)> fits,
        List<IReadOnlyList<RunOutcome>> runs
    )
    {
        var plt = new Plot();
        double[] logN = n.Select(Math.Log10).ToArray();
        if (runs[0].Count > 1) // each seed's mean count, small and grey, under the means
        {
            var seeds = plt.Add.ScatterPoints(
                runs.SelectMany((r, i) => r.Select(_ => logN[i])).ToArray(),
                runs.SelectMany(r => r.Select(x => Math.Log10(x.HeldOut.Layers.Average(l => l.PerTokenUnitsMean))))
                    .ToArray()
            );
            seeds.Color = Colors.Gray;
            seeds.MarkerSize = 4;
            seeds.LegendText = "each seed (mean over layers)";
        }
        for (int i = 0; i < fits.Count; i++)
        {
            var points = plt.Add.Scatter(logN, fits[i].Counts.Select(Math.Log10).ToArray());
            points.LegendText = fits[i].Name;
            points.LineWidth = i == 0 ? 0 : 1;
            points.LinePattern = LinePattern.Dotted;
            points.MarkerSize = i == 0 ? 10 : 6;
        }
        double[] grid = Enumerable.Range(0, 41).Select(i => logN[0] + (logN[^1] - logN[0]) * i / 40).ToArray();
        foreach (
            var (law, label, pattern) in new[]
            {
                (fits[0].Power, $"c·n^α (α = {F(fits[0].Power.Exponent, "0.00")})", LinePattern.Solid),
                (fits[0].Sqrt, "c·√n", LinePattern.Dashed),
            }
        )
        {
            var line = plt.Add.ScatterLine(grid, grid.Select(x => Math.Log10(law.At(Math.Pow(10, x)))).ToArray());
            line.LegendText = label;
            line.LinePattern = pattern;
            line.LineWidth = 2;
            line.Color = Colors.Black;
        }
        string Pow10(double v) => Math.Pow(10, v).ToString("0", CultureInfo.InvariantCulture);
        plt.Axes.Bottom.SetTicks(logN, n.Select(v => v.ToString(CultureInfo.InvariantCulture)).ToArray());
        plt.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = Pow10 };
        plt.ShowLegend(Alignment.UpperLeft);
        plt.Title("Active units per token against d_ff (log-log)");
        plt.XLabel("d_ff");
        plt.YLabel("mean active units per token");
        return plt;
    }
}
