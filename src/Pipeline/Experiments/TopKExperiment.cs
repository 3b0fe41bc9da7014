using System.Globalization;
using System.Text;
using ScottPlot;
using Sparsity.Export;
using Sparsity.Pipeline.Variants;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>
/// Experiment 5: the same k trained in (Top-k from step 0) against applied to the dense base model after
/// training (the <c>topk</c> surgery), on held-out loss, accuracy, calibration and robustness.
/// </summary>
public static class TopKExperiment
{
    /// <summary>k as fractions of the preset's d_ff.</summary>
    public static readonly double[] Ks = [1.0 / 16, 1.0 / 8, 1.0 / 4];

    public static string Run(ExperimentSetup s, Figures f)
    {
        var baseRun = ExperimentRuns.Ensure(s, Experiment.Base(s));
        int[] ks = Ks.Select(x => Math.Max(1, (int)Math.Round(s.Model.DFf * x))).ToArray();
        var trained = ks.Select(k => ExperimentRuns.Ensure(s, new RunSpec($"topk_{k}", s.Model with { TopK = k }, s.Training))).ToList();

        var proto = OnnxGraph.Load(baseRun.OnnxModel);
        var sites = MlpSites.Find(proto);
        string appliedDir = Path.Combine(s.WorkDir, "topk_applied");
        Directory.CreateDirectory(appliedDir);
        var applied = ks.Select(k =>
        {
            string path = Path.Combine(appliedDir, $"k{k}.onnx");
            OnnxGraph.Save(Surgery.InsertTopK(proto, sites, [k]), path);
            s.Output.WriteLine($"Top-k applied after training, k = {k}: evaluating {path}.");
            return ExperimentRuns.Evaluate(s, path);
        }).ToList();

        var d = baseRun.Evaluation;
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"Trained: the {s.PresetName} recipe with Top-k in every MLP from step 0 (same seed and data). Applied: the dense base run's ONNX export with a TopK inserted after each ReLU, no retraining. " +
                      $"Held-out text, windows of {s.Model.SeqLen}; noisy accuracy replaces 10 % of input tokens with random ids. d_ff = {s.Model.DFf}.").AppendLine();
        var rows = new List<IReadOnlyList<string>> { Row("dense (no Top-k)", "", d, d) };
        for (int i = 0; i < ks.Length; i++)
        {
            rows.Add(Row($"k = {ks[i]} trained", F(trained[i].MeanNonzeroFraction), trained[i].Evaluation, d));
            rows.Add(Row($"k = {ks[i]} applied", "", applied[i], d));
        }
        md.AppendLine(Table(["model", "held-out nonzero", "loss", "Δ loss", "accuracy", "ECE", "noisy accuracy"], rows, "l"));
        md.AppendLine(f.Add("topk.png", Plot(ks, trained.Select(t => t.Evaluation).ToList(), applied, d), "loss and ECE against k, trained and applied")).AppendLine();

        md.AppendLine("**What the runs show.**").AppendLine();
        for (int i = 0; i < ks.Length; i++)
        {
            var t = trained[i].Evaluation;
            var a = applied[i];
            md.AppendLine(CultureInfo.InvariantCulture, $"- k = {ks[i]}: trained {F(t.Loss, "0.0000")} against applied {F(a.Loss, "0.0000")} (dense {F(d.Loss, "0.0000")}); " +
                          $"ECE trained {Pct(t.ExpectedCalibrationError)}, applied {Pct(a.ExpectedCalibrationError)}, dense {Pct(d.ExpectedCalibrationError)}; " +
                          $"noisy accuracy trained {Pct(t.NoisyAccuracy)}, applied {Pct(a.NoisyAccuracy)}, dense {Pct(d.NoisyAccuracy)}.");
        }
        bool trainedBetter = ks.Select((_, i) => trained[i].Evaluation.Loss < applied[i].Loss).All(b => b);
        int calibrated = ks.Select((_, i) => trained[i].Evaluation.ExpectedCalibrationError < d.ExpectedCalibrationError - EceResolution).Count(b => b);
        md.AppendLine(CultureInfo.InvariantCulture, $"- Training with Top-k {(trainedBetter ? "beats" : "does not always beat")} applying it afterwards on loss at every k. " +
                      $"Li et al. found trained Top-k as accurate as dense and better calibrated; here trained Top-k is better calibrated than dense (by more than 0.05 percentage points) at {calibrated} of {ks.Length} k.");
        return md.ToString();

        static IReadOnlyList<string> Row(string name, string nonzero, Evaluation e, Evaluation dense) =>
            [name, nonzero, F(e.Loss, "0.0000"), e == dense ? "" : SignedPct((e.Loss - dense.Loss) / dense.Loss), Pct(e.Accuracy), Pct(e.ExpectedCalibrationError), Pct(e.NoisyAccuracy)];
    }

    static Plot Plot(int[] ks, List<Evaluation> trained, List<Evaluation> applied, Evaluation dense)
    {
        var plt = new Plot();
        double[] x = ks.Select(k => Math.Log2(k)).ToArray();
        foreach (var (label, values, color) in new[] { ("trained", trained, Colors.C0), ("applied after training", applied, Colors.C1) })
        {
            var line = plt.Add.Scatter(x, values.Select(e => e.Loss).ToArray());
            line.LegendText = $"loss, {label}";
            line.Color = color;
            line.LineWidth = 2;
        }
        var reference = plt.Add.HorizontalLine(dense.Loss);
        reference.LegendText = "loss, dense";
        reference.LinePattern = LinePattern.Dashed;
        reference.Color = Colors.Gray;
        plt.Axes.Bottom.SetTicks(x, ks.Select(k => k.ToString()).ToArray());
        plt.ShowLegend(Alignment.UpperRight);
        plt.Title($"Held-out loss against k (ECE: see table)");
        plt.XLabel("k (units kept per token)");
        plt.YLabel("held-out loss (nats/token)");
        return plt;
    }
}
