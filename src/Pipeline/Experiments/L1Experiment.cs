using System.Globalization;
using System.Text;
using ScottPlot;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>Experiment 6: L1 penalty on MLP activations against nonzero fraction, loss and ECE (Li et al. Table C.1).</summary>
public static class L1Experiment
{
    /// <summary>λ values beside the unpenalised base run (loss += λ · mean over layers of mean |h|).</summary>
    public static readonly double[] Lambdas = [0.01, 0.1, 1];

    public static string Run(ExperimentSetup s, Figures f)
    {
        var runs = new List<(double Lambda, RunOutcome Run)> { (0, ExperimentRuns.Ensure(s, Experiment.Base(s))) };
        runs.AddRange(Lambdas.Select(l => (l, ExperimentRuns.Ensure(s, new RunSpec($"l1_{l.ToString(CultureInfo.InvariantCulture)}", s.Model, s.Training with { L1 = l })))));
        var d = runs[0].Run.Evaluation;

        var md = new StringBuilder();
        md.AppendLine($"The {s.PresetName} recipe with loss += λ · (mean over layers of the mean |activation|), same seed and data. Held-out nonzero fraction from `analyze`, " +
                      "quality from `evaluate` on the held-out text. Loss is the cross-entropy alone (the penalty is not included).").AppendLine();
        md.AppendLine(Table(["λ", "nonzero per layer", "mean nonzero", "dead units", "loss", "Δ loss", "accuracy", "ECE", "noisy accuracy"],
            runs.Select(r => (IReadOnlyList<string>)[F(r.Lambda, "0.###"), Layers(r.Run.HeldOut.Layers.Select(l => l.NonzeroFraction)), F(r.Run.MeanNonzeroFraction, "0.0000"),
                r.Run.HeldOut.Layers.Sum(l => l.DeadUnits).ToString(), F(r.Run.Evaluation.Loss, "0.0000"), r.Lambda == 0 ? "" : SignedPct((r.Run.Evaluation.Loss - d.Loss) / d.Loss),
                Pct(r.Run.Evaluation.Accuracy), Pct(r.Run.Evaluation.ExpectedCalibrationError), Pct(r.Run.Evaluation.NoisyAccuracy)])));
        md.AppendLine(f.Add("l1.png", Plot(runs), "nonzero fraction, loss and ECE against λ")).AppendLine();

        md.AppendLine("**What the runs show.**").AppendLine();
        var strongest = runs[^1].Run;
        md.AppendLine(CultureInfo.InvariantCulture, $"- The nonzero fraction falls from {F(runs[0].Run.MeanNonzeroFraction)} (λ = 0) to {F(strongest.MeanNonzeroFraction)} (λ = {F(runs[^1].Lambda, "0.###")}), " +
                      $"with the held-out loss changing by {SignedPct((strongest.Evaluation.Loss - d.Loss) / d.Loss)}.");
        md.AppendLine(CultureInfo.InvariantCulture, $"- ECE goes {string.Join(" → ", runs.Select(r => Pct(r.Run.Evaluation.ExpectedCalibrationError)))} across λ. Li et al. (Table C.1) saw L1 make T5 sparser with calibration " +
                      $"improving like Top-k; here ECE {(runs.Skip(1).Any(r => r.Run.Evaluation.ExpectedCalibrationError < d.ExpectedCalibrationError - EceResolution) ? "improves (by more than 0.05 percentage points) for some λ" : "does not improve by more than 0.05 percentage points at any λ")}.");
        return md.ToString();
    }

    static Plot Plot(List<(double Lambda, RunOutcome Run)> runs)
    {
        var plt = new Plot();
        double[] x = Enumerable.Range(0, runs.Count).Select(i => (double)i).ToArray();
        var nonzero = plt.Add.Scatter(x, runs.Select(r => r.Run.MeanNonzeroFraction).ToArray());
        nonzero.LegendText = "mean nonzero fraction (left)";
        nonzero.LineWidth = 2;
        var ece = plt.Add.Scatter(x, runs.Select(r => r.Run.Evaluation.ExpectedCalibrationError).ToArray());
        ece.LegendText = "ECE (left)";
        ece.LineWidth = 2;
        var loss = plt.Add.Scatter(x, runs.Select(r => r.Run.Evaluation.Loss).ToArray());
        loss.LegendText = "held-out loss (right)";
        loss.LineWidth = 2;
        loss.Axes.YAxis = plt.Axes.Right;
        plt.Axes.Bottom.SetTicks(x, runs.Select(r => "λ = " + F(r.Lambda, "0.###")).ToArray());
        plt.Axes.Right.Label.Text = "held-out loss (nats/token)";
        plt.ShowLegend(Alignment.UpperCenter);
        plt.Title("L1 activation penalty: sparsity, calibration and loss");
        plt.YLabel("fraction");
        return plt;
    }
}
