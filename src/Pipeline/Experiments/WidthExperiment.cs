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
    /// <summary>Widths as multiples of the preset's d_ff (the preset itself is the base run).</summary>
    public static readonly double[] Widths = [0.25, 0.5, 1, 2, 4];

    public static string Run(ExperimentSetup s, Figures f)
    {
        var runs = Widths.Select(m => (int)Math.Round(s.Model.DFf * m)).Select(n => n == s.Model.DFf
            ? ExperimentRuns.Ensure(s, Experiment.Base(s))
            : ExperimentRuns.Ensure(s, new RunSpec($"dff_{n}", s.Model with { DFf = n }, s.Training))).ToList();
        int layers = s.Model.Layers;
        double[] n = runs.Select(r => (double)r.Spec.Model.DFf).ToArray();
        double[] mean = runs.Select(r => r.HeldOut.Layers.Average(l => l.PerTokenUnitsMean)).ToArray();

        var md = new StringBuilder();
        md.AppendLine($"{runs.Count} runs of the {s.PresetName} recipe that differ only in d_ff ({layers} layers, d_model {s.Model.DModel}, same seed and data order). " +
                      "Active units per token on the held-out text, per layer and averaged over layers.").AppendLine();
        md.AppendLine(Table(["d_ff", .. Enumerable.Range(0, layers).Select(l => $"units/token L{l}"), "mean units/token", "mean nonzero fraction", "held-out loss", "training time"],
            runs.Select((r, i) => (IReadOnlyList<string>)[r.Spec.Model.DFf.ToString(), .. r.HeldOut.Layers.Select(l => F(l.PerTokenUnitsMean, "0.0")), F(mean[i], "0.0"),
                F(r.MeanNonzeroFraction), F(r.Evaluation.Loss, "0.0000"), Clock(TimeSpan.FromSeconds(r.TrainSeconds))])));

        var fits = new List<(string Name, double[] Counts, ScalingFit Power, ScalingFit Sqrt)> { ("mean over layers", mean, WidthScaling.PowerLaw(n, mean), WidthScaling.SquareRootLaw(n, mean)) };
        for (int l = 0; l < layers; l++)
        {
            double[] c = runs.Select(r => r.HeldOut.Layers[l].PerTokenUnitsMean).ToArray();
            fits.Add(($"layer {l}", c, WidthScaling.PowerLaw(n, c), WidthScaling.SquareRootLaw(n, c)));
        }
        md.AppendLine("Fits (MathNet.Numerics): count = c·n^α by least squares on log–log; count = c·√n by least squares on the counts. " +
                      "R² is 1 − SS_res/SS_tot on the counts; max error is the largest relative miss over the widths.").AppendLine();
        md.AppendLine(Table(["counts", "c (power law)", "α", "R²", "max error", "c (√n law)", "R² (√n)", "max error (√n)"],
            fits.Select(x => (IReadOnlyList<string>)[x.Name, F(x.Power.C), F(x.Power.Exponent), F(x.Power.RSquared, "0.0000"), Pct(x.Power.MaxRelativeError),
                F(x.Sqrt.C), F(x.Sqrt.RSquared, "0.0000"), Pct(x.Sqrt.MaxRelativeError)]), "l"));
        md.AppendLine(f.Add("width.png", Plot(n, fits), "active units per token against width, log-log")).AppendLine();

        var all = fits[0];
        md.AppendLine("**What the runs show.**").AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"- The nonzero fraction goes {F(runs[0].MeanNonzeroFraction)} → {F(runs[^1].MeanNonzeroFraction)} from d_ff {n[0]} to {n[^1]}: " +
                      $"{(runs[^1].MeanNonzeroFraction < runs[0].MeanNonzeroFraction ? "wider layers are sparser in percentage" : "wider layers are not sparser in percentage")}, " +
                      $"while the count goes {F(mean[0], "0.0")} → {F(mean[^1], "0.0")} units ({(mean[^1] > mean[0] ? "denser in count" : "not denser in count")}); Li et al. Fig. 4 report both.");
        md.AppendLine($"- Power law: count ≈ {F(all.Power.C)}·n^{F(all.Power.Exponent)} (R² {F(all.Power.RSquared, "0.0000")}). The blog's law: count ≈ {F(all.Sqrt.C)}·√n " +
                      $"(R² {F(all.Sqrt.RSquared, "0.0000")}, worst miss {Pct(all.Sqrt.MaxRelativeError)}; the blog's MLPs on MNIST gave c ≈ 3.2–3.6). " +
                      (Math.Abs(all.Power.Exponent - 0.5) < 0.1 ? "The free exponent is close to ½, so the √n law holds here."
                          : $"The free exponent is {(all.Power.Exponent > 0.5 ? "above" : "below")} ½, so the √n law {(all.Sqrt.RSquared > 0.9 ? "fits only roughly" : "does not hold")} for this model and training length."));
        return md.ToString();
    }

    static Plot Plot(double[] n, List<(string Name, double[] Counts, ScalingFit Power, ScalingFit Sqrt)> fits)
    {
        var plt = new Plot();
        double[] logN = n.Select(Math.Log10).ToArray();
        for (int i = 0; i < fits.Count; i++)
        {
            var points = plt.Add.Scatter(logN, fits[i].Counts.Select(Math.Log10).ToArray());
            points.LegendText = fits[i].Name;
            points.LineWidth = i == 0 ? 0 : 1;
            points.LinePattern = LinePattern.Dotted;
            points.MarkerSize = i == 0 ? 10 : 6;
        }
        double[] grid = Enumerable.Range(0, 41).Select(i => logN[0] + (logN[^1] - logN[0]) * i / 40).ToArray();
        foreach (var (law, label, pattern) in new[] { (fits[0].Power, $"c·n^α (α = {F(fits[0].Power.Exponent, "0.00")})", LinePattern.Solid), (fits[0].Sqrt, "c·√n", LinePattern.Dashed) })
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
