using System.Globalization;
using System.Text;
using Sparsity.Pipeline.Report;
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

    public static string Run(ExperimentSetup s, Figures f)
    {
        var baseRun = ExperimentRuns.Ensure(s, Experiment.Base(s));
        int steps = s.Training.Steps, window = Math.Max(1, steps / 9);
        var masked = MaskSteps.Select(frac => (int)(steps * frac)).Select(at => ExperimentRuns.Ensure(s,
            new RunSpec($"mask_{at}", s.Model, s.Training with { MaskUnusedAt = at, MaskWindow = window }))).ToList();

        var death = baseRun.Death;
        int quarter = Math.Max(1, (death.LastStep + 1) / 4);
        string Q(int q) => $"died in steps {q * quarter}–{(q == 3 ? death.LastStep : (q + 1) * quarter - 1)}";
        var md = new StringBuilder();
        md.AppendLine($"A unit dies at step s when it is not active on any training token from s to the end of the run (`unit_death.json` of the base run, {death.LastStep + 1} steps). " +
                      "Units active at the last step are alive; a unit that was silent for a while and fired again is alive.").AppendLine();
        md.AppendLine(Table(["layer", "d_ff", "never active", Q(0), Q(1), Q(2), Q(3), "alive at the end", "silent for the last 10 %"],
            death.Layers.Select(l =>
            {
                int[] byQuarter = new int[4];
                foreach (long? d in l.DeathStep) if (d is long step && step > 0) byQuarter[Math.Min(3, (int)(step / quarter))]++;
                return (IReadOnlyList<string>)[l.Layer.ToString(), l.DFf.ToString(), l.NeverActive.ToString(), .. byQuarter.Select(c => c.ToString()),
                    l.DeathStep.Count(d => d == null).ToString(), l.SilentForLastTenth.ToString()];
            })));
        md.AppendLine(f.Add("death_steps.png", SparsityReport.DeathSteps(death), "death steps by layer")).AppendLine();

        md.AppendLine($"Masking: at step S, units that were not active on any training token in the previous {window} steps are masked (forced to zero) for the rest of training. " +
                      "Same seed, data order and schedule as the base run. Held-out figures are on the whole held-out text.").AppendLine();
        var rows = new List<IReadOnlyList<string>> { Row("no masking", baseRun, baseRun) };
        rows.AddRange(masked.Select(m => Row($"mask at step {m.Spec.Training.MaskUnusedAt}", m, baseRun)));
        md.AppendLine(Table(["run", "units masked per layer", "held-out nonzero (mean)", "held-out loss", "Δ loss", "accuracy", "ECE", "held-out loss during training (last eval)"], rows, "l"));

        md.AppendLine("**What the runs show.**").AppendLine();
        int died = death.Layers.Sum(l => l.DeathStep.Count(d => d != null));
        md.AppendLine(CultureInfo.InvariantCulture, $"- {died} of {death.Layers.Sum(l => l.DFf)} units died before the end of the base run ({Layers(death.Layers.Select(l => (double)l.DeathStep.Count(d => d != null)), "0")} per layer); " +
                      $"{death.Layers.Sum(l => l.NeverActive)} were never active. Layer 0 loses {death.Layers[0].DeathStep.Count(d => d != null)}.");
        foreach (var m in masked)
        {
            double delta = m.Evaluation.Loss - baseRun.Evaluation.Loss;
            md.AppendLine($"- Masking at step {m.Spec.Training.MaskUnusedAt} removed {m.Log.Last().Layers?.Sum(l => l.UnitsMasked) ?? 0} units and changed the held-out loss by {Signed(delta)} nats " +
                          $"({SignedPct(delta / baseRun.Evaluation.Loss)}). " + (delta == 0
                              ? "The loss is identical to the last digit: every masked unit would have stayed silent anyway, so masking only made their death explicit."
                              : $"Wild & Anderson found masking dead units harmless; {(Math.Abs(delta / baseRun.Evaluation.Loss) < 0.005 ? "here too (under 0.5 %)" : "here the change exceeds 0.5 %, so it is not free at this scale")}."));
        }
        return md.ToString();
    }

    static IReadOnlyList<string> Row(string name, RunOutcome r, RunOutcome baseRun)
    {
        var last = r.Log.Last(e => e.Layers != null);
        var lastEval = r.Log.Last(e => e.HeldOutLoss != null);
        return [name, string.Join(" / ", last.Layers!.Select(l => l.UnitsMasked)), F(r.MeanNonzeroFraction), F(r.Evaluation.Loss, "0.0000"),
            r == baseRun ? "" : SignedPct((r.Evaluation.Loss - baseRun.Evaluation.Loss) / baseRun.Evaluation.Loss), Pct(r.Evaluation.Accuracy),
            Pct(r.Evaluation.ExpectedCalibrationError), F(lastEval.HeldOutLoss!.Value, "0.0000")];
    }
}
