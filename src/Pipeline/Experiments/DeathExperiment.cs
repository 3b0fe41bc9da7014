using System.Globalization;
using System.Text;
using Sparsity.Analysis;
using Sparsity.Pipeline.Report;
using Sparsity.Training;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>
/// Experiment 3: when units die during training, and whether masking units unused since step S−W for the
/// rest of training changes the final held-out loss (Wild &amp; Anderson §4).
/// </summary>
public static class DeathExperiment
{
    /// <summary>Masking steps S as fractions of the run; the window is a ninth of the run.</summary>
    public static readonly double[] MaskSteps = [1.0 / 3, 2.0 / 3];

    /// <summary>The base run and one run per masking step.</summary>
    public static IReadOnlyList<RunSpec> Specs(ExperimentSetup s)
    {
        int steps = s.Training.Steps,
            window = Math.Max(1, steps / 9);
        return
        [
            Experiment.Base(s),
            .. MaskSteps
                .Select(frac => (int)(steps * frac))
                .Select(at => new RunSpec(
                    $"mask_{at}",
                    s.Model,
                    s.Training with
                    {
                        MaskUnusedAt = at,
                        MaskWindow = window,
                    }
                )),
        ];
    }

    /// <summary>Runs the experiment on <paramref name="s"/>'s corpus and preset and returns its section of the report,
    /// adding its plots to <paramref name="f"/>.</summary>
    public static string Run(ExperimentSetup s, Figures f)
    {
        var specs = Specs(s);
        var bases = ExperimentRuns.EnsureSeeds(s, specs[0]);
        var masked = specs.Skip(1).Select(spec => ExperimentRuns.EnsureSeeds(s, spec)).ToList(); // [mask step][seed], seeds paired with bases
        int window = specs[1].Training.MaskWindow;

        var death = bases[0].Death;
        int quarter = Math.Max(1, (death.LastStep + 1) / 4);
        string Q(int q) => $"died in steps {q * quarter}–{(q == 3 ? death.LastStep : (q + 1) * quarter - 1)}";
        int[] ByQuarter(LayerDeath l)
        {
            int[] counts = new int[4];
            foreach (long? d in l.DeathStep)
                if (d is long step && step > 0)
                    counts[Math.Min(3, (int)(step / quarter))]++;
            return counts;
        }
        SeedSpread Of(int layer, Func<LayerDeath, double> by) => SeedSpread.Over(bases, r => by(r.Death.Layers[layer]));
        var md = new StringBuilder();
        md.AppendLine(
                $"A unit dies at step s when it is not active on any training token from s to the end of the run (`unit_death.json` of the base run, {death.LastStep + 1} steps), "
                    + $"{SeedPlots.Seeds(bases)}. Units active at the last step are alive; a unit that was silent for a while and fired again is alive."
            )
            .AppendLine();
        md.AppendLine(
            Table(
                [
                    "layer",
                    "d_ff",
                    "never active",
                    Q(0),
                    Q(1),
                    Q(2),
                    Q(3),
                    "alive at the end",
                    "silent for the last 10 %",
                ],
                death.Layers.Select(l =>
                    (IReadOnlyList<string>)
                        [
                            l.Layer.ToString(),
                            l.DFf.ToString(),
                            Of(l.Layer, x => x.NeverActive).ToString("0.0"),
                            .. Enumerable.Range(0, 4).Select(q => Of(l.Layer, x => ByQuarter(x)[q]).ToString("0.0")),
                            Of(l.Layer, x => x.DeathStep.Count(d => d == null)).ToString("0.0"),
                            Of(l.Layer, x => x.SilentForLastTenth).ToString("0.0"),
                        ]
                )
            )
        );
        md.AppendLine(
                f.Add(
                    "death_steps.png",
                    SparsityReport.DeathSteps(death),
                    $"death steps by layer (seed {bases[0].Spec.Training.Seed})"
                )
            )
            .AppendLine();

        md.AppendLine(
                $"Masking: at step S, units that were not active on any training token in the previous {window} steps are masked (forced to zero) for the rest of training. "
                    + "Each seed's masked run has the same seed, data order and schedule as that seed's base run; Δ loss is taken seed by seed. Held-out figures are on the whole held-out text."
            )
            .AppendLine();
        var rows = new List<IReadOnlyList<string>> { Row("no masking", bases, bases) };
        rows.AddRange(masked.Select(m => Row($"mask at step {m[0].Spec.Training.MaskUnusedAt}", m, bases)));
        md.AppendLine(
            Table(
                [
                    "run",
                    "units masked (all layers)",
                    "held-out nonzero (mean)",
                    "held-out loss",
                    "Δ loss",
                    "accuracy",
                    "ECE",
                ],
                rows,
                "l"
            )
        );

        md.AppendLine("**What the runs show.**").AppendLine();
        var died = SeedSpread.Over(bases, r => r.Death.Layers.Sum(l => l.DeathStep.Count(d => d != null)));
        md.AppendLine(
            CultureInfo.InvariantCulture,
            $"- {died.ToString("0.0")} of {death.Layers.Sum(l => l.DFf)} units died before the end of the base run (seeds: {died.ValuesText("0")}); "
                + $"{SeedSpread.Over(bases, r => r.Death.Layers.Sum(l => l.NeverActive)).ToString("0.0")} were never active. "
                + $"Layer 0 loses {Of(0, x => x.DeathStep.Count(d => d != null)).ToString("0.0")}."
        );
        foreach (var m in masked)
        {
            var delta = SeedSpread.Over(m.Zip(bases), p =>
                (p.First.Evaluation.Loss - p.Second.Evaluation.Loss) / p.Second.Evaluation.Loss
            );
            bool identical = m.Zip(bases).All(p => p.First.Evaluation.Loss == p.Second.Evaluation.Loss);
            md.AppendLine(
                $"- Masking at step {m[0].Spec.Training.MaskUnusedAt} removed {SeedSpread.Over(m, r => r.Log.Last().Layers?.Sum(l => l.UnitsMasked) ?? 0).ToString("0.0")} units "
                    + $"and changed the held-out loss by {delta.ToString("0.0000")} (relative; seeds: {delta.ValuesText("0.0000")}). "
                    + (
                        identical
                            ? "The loss is identical to the last digit in every seed: every masked unit would have stayed silent anyway, so masking only made their death explicit."
                            : $"Wild & Anderson found masking dead units harmless; {(Math.Abs(delta.Mean) + delta.StandardDeviation < 0.005 ? "here too (under 0.5 % including the spread)" : "here the change or its spread reaches 0.5 %, so it is not shown to be free at this scale")}."
                    )
            );
        }
        return md.ToString();
    }

    static IReadOnlyList<string> Row(string name, IReadOnlyList<RunOutcome> runs, IReadOnlyList<RunOutcome> bases) =>
        [
            name,
            SeedSpread
                .Over(runs, r => r.Log.Last(e => e.Layers != null).Layers!.Sum(l => l.UnitsMasked))
                .ToString("0.0"),
            SeedSpread.Over(runs, r => r.MeanNonzeroFraction).ToString("0.000"),
            SeedSpread.Over(runs, r => r.Evaluation.Loss).ToString("0.0000"),
            runs == bases
                ? ""
                : SeedSpread
                    .Over(runs.Zip(bases), p =>
                        100 * (p.First.Evaluation.Loss - p.Second.Evaluation.Loss) / p.Second.Evaluation.Loss
                    )
                    .ToString("0.00") + " %",
            SeedSpread.Over(runs, r => 100 * r.Evaluation.Accuracy).ToString("0.00") + " %",
            SeedSpread.Over(runs, r => 100 * r.Evaluation.ExpectedCalibrationError).ToString("0.00") + " %",
        ];
}
