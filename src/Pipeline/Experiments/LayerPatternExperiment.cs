using System.Globalization;
using System.Text;
using Sparsity.Analysis;
using Sparsity.Pipeline.Report;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>
/// Experiment 2: units used per token against per batch, by layer, over seeds. Wild &amp; Anderson: layer 0 uses few
/// units per batch but many per token; the last layer the reverse.
/// </summary>
public static class LayerPatternExperiment
{
    /// <summary>Runs the experiment on <paramref name="s"/>'s corpus and preset and returns its section of the report,
    /// adding its plots to <paramref name="f"/>.</summary>
    public static string Run(ExperimentSetup s, Figures f)
    {
        var runs = ExperimentRuns.EnsureSeeds(s, Experiment.Base(s));
        var stats = runs.Select(r => r.HeldOut).ToList();
        var st = stats[0];
        SeedSpread Of(int layer, Func<LayerStats, double> by) => SeedSpread.Over(stats, x => by(x.Layers[layer]));
        var md = new StringBuilder();
        md.AppendLine(
                $"Held-out Brown text ({st.Tokens:N0} tokens) through the base run's ONNX export, windows of {st.SeqLen} tokens, batches of {st.BatchSize} windows "
                    + $"(`analyze`), {SeedPlots.Seeds(runs)}. Units per token is the mean number of a layer's units active on a token; per sequence, on at least one token of a window; "
                    + "per batch, anywhere in the batch. Fractions are of d_ff."
            )
            .AppendLine();
        md.AppendLine(
            Table(
                [
                    "layer",
                    "d_ff",
                    "units / token",
                    "per token (fraction)",
                    "units / sequence",
                    "units / batch",
                    "per batch (fraction)",
                    "ever active",
                    "dead on held-out",
                ],
                st.Layers.Select(l =>
                    (IReadOnlyList<string>)
                        [
                            l.Index.ToString(),
                            l.DFf.ToString(),
                            Of(l.Index, x => x.PerTokenUnitsMean).ToString("0.0"),
                            Of(l.Index, x => x.NonzeroFraction).ToString("0.000"),
                            Of(l.Index, x => x.PerSequenceUnitsMean).ToString("0.0"),
                            Of(l.Index, x => x.PerBatchUnitsMean).ToString("0.0"),
                            Of(l.Index, x => x.PerBatchUnitsMean / x.DFf).ToString("0.000"),
                            Of(l.Index, x => x.UnitsEverActive).ToString("0"),
                            Of(l.Index, x => x.DeadUnits).ToString("0"),
                        ]
                )
            )
        );

        var tracked = runs.Select(DynamicsExperiment.Tracked).ToList();
        var (first, last) = (tracked[0][0], tracked[0][^1]);
        SeedSpread Logged(bool atEnd, int l, Func<Sparsity.Training.LayerLogEntry, double> by) =>
            SeedSpread.Over(tracked, t => by((atEnd ? t[^1] : t[0]).Layers![l]));
        md.AppendLine(
                CultureInfo.InvariantCulture,
                $"The same measures on the training batch ({last.BatchSize} windows) at step {first.Step} and at step {last.Step}, from `sparsity.jsonl`:"
            )
            .AppendLine();
        md.AppendLine(
            Table(
                [
                    "layer",
                    $"per token, step {first.Step}",
                    $"per batch, step {first.Step}",
                    $"per token, step {last.Step}",
                    $"per batch, step {last.Step}",
                ],
                Enumerable
                    .Range(0, last.Layers!.Count)
                    .Select(l =>
                        (IReadOnlyList<string>)
                            [
                                l.ToString(),
                                Logged(false, l, e => e.PerTokenUnitsMean).ToString("0.0"),
                                Logged(false, l, e => e.PerBatchUnitsMean).ToString("0.0"),
                                Logged(true, l, e => e.PerTokenUnitsMean).ToString("0.0"),
                                Logged(true, l, e => e.PerBatchUnitsMean).ToString("0.0"),
                            ]
                    )
            )
        );
        md.AppendLine(
                f.Add(
                    "layers.png",
                    SparsityReport.UnitUse(st),
                    $"units per token, sequence and batch by layer (seed {runs[0].Spec.Training.Seed})"
                )
            )
            .AppendLine();

        md.AppendLine("**Wild & Anderson's pattern, checked on these numbers** (each claim on each seed's run).")
            .AppendLine();
        foreach (string line in Verdicts(stats))
            md.AppendLine("- " + line);
        return md.ToString();
    }

    /// <summary>Each half of the claim as a yes/no per seed, with the numbers it rests on (mean ± sd over
    /// seeds).</summary>
    public static IEnumerable<string> Verdicts(IReadOnlyList<SparsityStats> seeds)
    {
        static double Token(LayerStats l) => l.NonzeroFraction;
        static double Batch(LayerStats l) => l.PerBatchUnitsMean / l.DFf;
        static double Sequence(LayerStats l) => l.PerSequenceUnitsMean / l.DFf;
        string Holds(Func<SparsityStats, bool> claim) =>
            seeds.Count(claim) switch
            {
                var k when k == seeds.Count => seeds.Count == 1 ? "**yes**" : $"**yes** in all {seeds.Count} seeds",
                0 => seeds.Count == 1 ? "**no**" : $"**no** in all {seeds.Count} seeds",
                var k => $"**in {k} of {seeds.Count} seeds**",
            };
        string Value(Func<SparsityStats, double> of) => SeedSpread.Over(seeds, of).ToString("0.000");
        yield return $"Layer 0 uses the most units per token: {Holds(st => st.Layers.All(l => Token(l) <= Token(st.Layers[0])))} ({Value(st => Token(st.Layers[0]))} of d_ff; "
            + $"the most: {Value(st => st.Layers.Max(Token))}).";
        yield return $"Layer 0 uses the fewest units per batch: {Holds(st => st.Layers.All(l => Batch(l) >= Batch(st.Layers[0])))} ({Value(st => Batch(st.Layers[0]))} of d_ff; "
            + $"the fewest: {Value(st => st.Layers.Min(Batch))}).";
        yield return $"The last layer uses few units per token relative to layer 0: {Holds(st => Token(st.Layers[^1]) < Token(st.Layers[0]))} ({Value(st => Token(st.Layers[^1]))} against {Value(st => Token(st.Layers[0]))}).";
        yield return $"The last layer uses more units per batch than layer 0: {Holds(st => Batch(st.Layers[^1]) > Batch(st.Layers[0]))} ({Value(st => Batch(st.Layers[^1]))} against {Value(st => Batch(st.Layers[0]))}).";
        var st0 = seeds[0];
        string Order(Func<LayerStats, double> by) =>
            string.Join(" > ", st0.Layers.OrderByDescending(by).Select(l => $"L{l.Index}"));
        yield return $"Per-batch use is {(seeds.All(st => st.Layers.All(l => Batch(l) > 0.9)) ? "close to saturation" : "far from saturation")} in every layer "
            + $"({Layers(st0.Layers.Select(Batch))} of d_ff at {st0.BatchSize} × {st0.SeqLen} tokens, first seed). "
            + $"Layers ordered by use per token: {Order(Token)}; per sequence of {st0.SeqLen} tokens: {Order(Sequence)}; per batch: {Order(Batch)} (first seed). "
            + "Section 9 examines the per-batch claim at smaller batches and shorter windows.";
    }
}
