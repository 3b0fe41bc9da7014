using System.Globalization;
using System.Text;
using ScottPlot;
using Sparsity.Analysis;
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

    /// <summary>The dense base run and one run trained with Top-k per k.</summary>
    public static IReadOnlyList<RunSpec> Specs(ExperimentSetup s) =>
        [
            Experiment.Base(s),
            .. KValues(s).Select(k => new RunSpec($"topk_{k}", s.Model with { TopK = k }, s.Training)),
        ];

    static int[] KValues(ExperimentSetup s) => Ks.Select(x => Math.Max(1, (int)Math.Round(s.Model.DFf * x))).ToArray();

    /// <summary>Runs the experiment on <paramref name="s"/>'s corpus and preset and returns its section of the report,
    /// adding its plots to <paramref name="f"/>.</summary>
    public static string Run(ExperimentSetup s, Figures f)
    {
        var specs = Specs(s);
        var bases = ExperimentRuns.EnsureSeeds(s, specs[0]);
        int[] ks = KValues(s);
        var trained = specs.Skip(1).Select(spec => ExperimentRuns.EnsureSeeds(s, spec)).ToList(); // [k][seed]
        // Applied: each seed's dense base run with a TopK after each ReLU, no retraining.
        var applied = ks.Select(k =>
                bases
                    .Select(b =>
                    {
                        var proto = OnnxGraph.Load(b.OnnxModel);
                        string dir = Path.Combine(s.WorkDir, "topk_applied", Path.GetFileName(b.Dir));
                        Directory.CreateDirectory(dir);
                        string path = Path.Combine(dir, $"k{k}.onnx");
                        OnnxGraph.Save(Surgery.InsertTopK(proto, MlpSites.Find(proto), [k]), path);
                        s.Output.WriteLine($"Top-k applied after training, k = {k}: evaluating {path}.");
                        return ExperimentRuns.Evaluate(s, path);
                    })
                    .ToList()
            )
            .ToList(); // [k][seed]
        var dense = bases.Select(b => b.Evaluation).ToList();

        var md = new StringBuilder();
        md.AppendLine(
                $"Trained: the {s.PresetName} recipe with Top-k in every MLP from step 0 (same data). Applied: the dense base run's ONNX export with a TopK inserted after each ReLU, no retraining. "
                    + $"Held-out text, windows of {s.Model.SeqLen}; noisy accuracy replaces 10 % of input tokens with random ids. d_ff = {s.Model.DFf}; {SeedPlots.Seeds(bases)} "
                    + "(a seed's Top-k runs are compared with the same seed's dense run)."
            )
            .AppendLine();
        var rows = new List<IReadOnlyList<string>> { Row("dense (no Top-k)", "", dense, dense) };
        for (int i = 0; i < ks.Length; i++)
        {
            rows.Add(
                Row(
                    $"k = {ks[i]} trained",
                    SeedSpread.Over(trained[i], r => r.MeanNonzeroFraction).ToString("0.000"),
                    trained[i].Select(r => r.Evaluation).ToList(),
                    dense
                )
            );
            rows.Add(Row($"k = {ks[i]} applied", "", applied[i], dense));
        }
        md.AppendLine(
            Table(["model", "held-out nonzero", "loss", "Δ loss", "accuracy", "ECE", "noisy accuracy"], rows, "l")
        );
        md.AppendLine(
                f.Add(
                    "topk.png",
                    Plot(ks, trained.Select(t => t.Select(r => r.Evaluation).ToList()).ToList(), applied, dense),
                    "loss against k, trained and applied, ± sd over seeds"
                )
            )
            .AppendLine();

        md.AppendLine("**What the runs show.**").AppendLine();
        for (int i = 0; i < ks.Length; i++)
        {
            var t = trained[i].Select(r => r.Evaluation).ToList();
            string Of(IEnumerable<Evaluation> e, Func<Evaluation, double> by, bool percent = false) =>
                percent
                    ? SeedSpread.Over(e, x => 100 * by(x)).ToString("0.00") + " %"
                    : SeedSpread.Over(e, by).ToString("0.0000");
            md.AppendLine(
                $"- k = {ks[i]}: loss trained {Of(t, e => e.Loss)} against applied {Of(applied[i], e => e.Loss)} (dense {Of(dense, e => e.Loss)}); "
                    + $"ECE trained {Of(t, e => e.ExpectedCalibrationError, true)}, applied {Of(applied[i], e => e.ExpectedCalibrationError, true)}, dense {Of(dense, e => e.ExpectedCalibrationError, true)}; "
                    + $"noisy accuracy trained {Of(t, e => e.NoisyAccuracy, true)}, applied {Of(applied[i], e => e.NoisyAccuracy, true)}, dense {Of(dense, e => e.NoisyAccuracy, true)}."
            );
        }
        int seeds = bases.Count;
        int trainedBetter = Enumerable
            .Range(0, seeds)
            .Count(j => ks.Select((_, i) => trained[i][j].Evaluation.Loss < applied[i][j].Loss).All(b => b));
        int calibrated = Enumerable
            .Range(0, ks.Length)
            .Count(i =>
                Enumerable
                    .Range(0, seeds)
                    .All(j =>
                        trained[i][j].Evaluation.ExpectedCalibrationError
                        < dense[j].ExpectedCalibrationError - EceResolution
                    )
            );
        md.AppendLine(
            $"- Training with Top-k beats applying it afterwards on loss at every k in {trainedBetter} of {seeds} seeds. "
                + $"Li et al. found trained Top-k as accurate as dense and better calibrated; here trained Top-k is better calibrated than dense (by more than 0.05 percentage points, in every seed) at {calibrated} of {ks.Length} k."
        );
        return md.ToString();

        static IReadOnlyList<string> Row(
            string name,
            string nonzero,
            IReadOnlyList<Evaluation> e,
            IReadOnlyList<Evaluation> dense
        ) =>
            [
                name,
                nonzero,
                SeedSpread.Over(e, x => x.Loss).ToString("0.0000"),
                ReferenceEquals(e, dense)
                    ? ""
                    : SeedSpread
                        .Over(e.Zip(dense), p => 100 * (p.First.Loss - p.Second.Loss) / p.Second.Loss)
                        .ToString("0.00") + " %",
                SeedSpread.Over(e, x => 100 * x.Accuracy).ToString("0.00") + " %",
                SeedSpread.Over(e, x => 100 * x.ExpectedCalibrationError).ToString("0.00") + " %",
                SeedSpread.Over(e, x => 100 * x.NoisyAccuracy).ToString("0.00") + " %",
            ];
    }

    static Plot Plot(int[] ks, List<List<Evaluation>> trained, List<List<Evaluation>> applied, List<Evaluation> dense)
    {
        var plt = new Plot();
        double[] x = ks.Select(k => Math.Log2(k)).ToArray();
        foreach (
            var (label, values, color) in new[]
            {
                ("trained", trained, Colors.C0),
                ("applied after training", applied, Colors.C1),
            }
        )
            SeedPlots.Band(
                plt,
                x,
                Enumerable.Range(0, dense.Count).Select(j => values.Select(v => v[j].Loss).ToArray()).ToList(),
                $"loss, {label}",
                color
            );
        var reference = plt.Add.HorizontalLine(dense.Average(e => e.Loss));
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
