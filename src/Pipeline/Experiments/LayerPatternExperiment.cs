using System.Globalization;
using System.Text;
using Sparsity.Analysis;
using Sparsity.Pipeline.Report;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Experiments;

/// <summary>
/// Experiment 2: units used per token against per batch, by layer. Wild &amp; Anderson: layer 0 uses few units
/// per batch but many per token; the last layer the reverse.
/// </summary>
public static class LayerPatternExperiment
{
    public static string Run(ExperimentSetup s, Figures f)
    {
        var run = ExperimentRuns.Ensure(s, Experiment.Base(s));
        var st = run.HeldOut;
        var md = new StringBuilder();
        md.AppendLine($"Held-out Brown text ({st.Tokens:N0} tokens) through the base run's ONNX export, windows of {st.SeqLen} tokens, batches of {st.BatchSize} windows " +
                      "(`analyze`). Units per token is the mean number of a layer's units active on a token; per sequence, on at least one token of a window; " +
                      "per batch, anywhere in the batch. Fractions are of d_ff.").AppendLine();
        md.AppendLine(Table(["layer", "d_ff", "units / token", "per token (fraction)", "units / sequence", "units / batch", "per batch (fraction)", "ever active", "dead on held-out"],
            st.Layers.Select(l => (IReadOnlyList<string>)[l.Index.ToString(), l.DFf.ToString(), F(l.PerTokenUnitsMean, "0.0"), F(l.NonzeroFraction), F(l.PerSequenceUnitsMean, "0.0"),
                F(l.PerBatchUnitsMean, "0.0"), F(l.PerBatchUnitsMean / l.DFf), l.UnitsEverActive.ToString(), l.DeadUnits.ToString()])));

        var first = run.Log.First(e => e.Layers != null);
        var last = run.Log.Last(e => e.Layers != null);
        md.AppendLine(CultureInfo.InvariantCulture, $"The same measures on the training batch ({last.BatchSize} windows) at step {first.Step} and at step {last.Step}, from `sparsity.jsonl`:").AppendLine();
        md.AppendLine(Table(["layer", $"per token, step {first.Step}", $"per batch, step {first.Step}", $"per token, step {last.Step}", $"per batch, step {last.Step}"],
            Enumerable.Range(0, last.Layers!.Count).Select(l => (IReadOnlyList<string>)[l.ToString(), F(first.Layers![l].PerTokenUnitsMean, "0.0"), F(first.Layers![l].PerBatchUnitsMean, "0.0"),
                F(last.Layers![l].PerTokenUnitsMean, "0.0"), F(last.Layers![l].PerBatchUnitsMean, "0.0")])));
        md.AppendLine(f.Add("layers.png", SparsityReport.UnitUse(st), "units per token, sequence and batch by layer")).AppendLine();

        md.AppendLine("**Wild & Anderson's pattern, checked on these numbers.**").AppendLine();
        foreach (string line in Verdicts(st)) md.AppendLine("- " + line);
        return md.ToString();
    }

    /// <summary>Each half of the claim as a yes/no with the numbers it rests on.</summary>
    public static IEnumerable<string> Verdicts(SparsityStats st)
    {
        var first = st.Layers[0];
        var last = st.Layers[^1];
        double Token(LayerStats l) => l.NonzeroFraction;
        double Batch(LayerStats l) => l.PerBatchUnitsMean / l.DFf;
        string Rank(LayerStats l, Func<LayerStats, double> by) => $"rank {st.Layers.OrderByDescending(by).ToList().IndexOf(l) + 1} of {st.Layers.Count}";
        yield return $"Layer 0 uses the most units per token: {(st.Layers.All(l => Token(l) <= Token(first)) ? "**yes**" : "**no**")} ({F(Token(first))} of d_ff, {Rank(first, Token)}).";
        yield return $"Layer 0 uses the fewest units per batch: {(st.Layers.All(l => Batch(l) >= Batch(first)) ? "**yes**" : "**no**")} ({F(Batch(first))} of d_ff, {Rank(first, Batch)}; " +
                     $"fewest is layer {st.Layers.MinBy(Batch)!.Index} with {F(Batch(st.Layers.MinBy(Batch)!))}).";
        yield return $"The last layer uses few units per token relative to layer 0: {(Token(last) < Token(first) ? "**yes**" : "**no**")} ({F(Token(last))} against {F(Token(first))}).";
        yield return $"The last layer uses more units per batch than layer 0: {(Batch(last) > Batch(first) ? "**yes**" : "**no**")} ({F(Batch(last))} against {F(Batch(first))}).";
        double Sequence(LayerStats l) => l.PerSequenceUnitsMean / l.DFf;
        string Order(Func<LayerStats, double> by) => string.Join(" > ", st.Layers.OrderByDescending(by).Select(l => $"L{l.Index}"));
        yield return $"Per-batch use is {(st.Layers.All(l => Batch(l) > 0.9) ? "close to saturation" : "far from saturation")} in every layer ({Layers(st.Layers.Select(Batch))} of d_ff at {st.BatchSize} × {st.SeqLen} tokens). " +
                     $"Layers ordered by use per token: {Order(Token)}; per sequence of {st.SeqLen} tokens: {Order(Sequence)}; per batch: {Order(Batch)}.";
    }
}
