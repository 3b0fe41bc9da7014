using System.Globalization;

namespace Sparsity.Analysis;

/// <summary>A metric of one layer outside its tolerance.</summary>
/// <param name="Layer">Layer index.</param>
/// <param name="Metric">stats.json name of the metric.</param>
/// <param name="Actual">Value in the checked statistics.</param>
/// <param name="Baseline">Value in the baseline.</param>
/// <param name="Tolerance">Allowed absolute difference.</param>
/// <param name="LayerName">An encoder-decoder layer's name (encoder.3, decoder.3); null otherwise.</param>
public sealed record MetricDeviation(
    int Layer,
    string Metric,
    double Actual,
    double Baseline,
    double Tolerance,
    string? LayerName = null
)
{
    /// <summary>One line naming the metric, both values and the tolerance.</summary>
    public override string ToString() =>
        string.Create(
            CultureInfo.InvariantCulture,
            $"{LayerName ?? $"layer {Layer}"} {Metric}: {Actual:G6} vs baseline {Baseline:G6} (difference {Actual - Baseline:+0.######;-0.######}, tolerance ±{Tolerance:G4})"
        );
}

/// <summary>
/// Regression checks on sparsity metrics: compares statistics with a baseline stats.json, metric by
/// metric and layer by layer, each within an absolute tolerance. Meant for CI gates and for users'
/// own tests: <c>Assert.That(SparsityCheck.Compare(stats, baseline), Is.Empty)</c>.
/// </summary>
public static class SparsityCheck
{
    /// <summary>Metrics checked, with the default absolute tolerance of each (fractions ±0.01, unit counts ±1 % of
    /// d_ff).</summary>
    public static readonly IReadOnlyDictionary<string, Func<LayerStats, double>> Metrics = new Dictionary<
        string,
        Func<LayerStats, double>
    >
    {
        ["nonzero_fraction"] = l => l.NonzeroFraction,
        ["per_token_units_mean"] = l => l.PerTokenUnitsMean,
        ["per_sequence_units_mean"] = l => l.PerSequenceUnitsMean,
        ["per_batch_units_mean"] = l => l.PerBatchUnitsMean,
        ["units_ever_active"] = l => l.UnitsEverActive,
        ["dead_units"] = l => l.DeadUnits,
    };

    /// <summary>Default tolerance of a metric for a layer of <paramref name="dFf"/> units.</summary>
    public static double DefaultTolerance(string metric, int dFf) => metric == "nonzero_fraction" ? 0.01 : 0.01 * dFf;

    /// <summary>
    /// Every metric outside tolerance (empty when all pass). <paramref name="tolerances"/> overrides the
    /// default absolute tolerance per metric name. Layers must match in count and d_ff.
    /// </summary>
    public static IReadOnlyList<MetricDeviation> Compare(
        SparsityStats actual,
        SparsityStats baseline,
        IReadOnlyDictionary<string, double>? tolerances = null
    )
    {
        foreach (string name in tolerances?.Keys ?? [])
            if (!Metrics.ContainsKey(name))
                throw new UserInputException($"Unknown metric '{name}': use one of {string.Join(", ", Metrics.Keys)}.");
        if (actual.Layers.Count != baseline.Layers.Count)
            throw new UserInputException(
                $"The statistics have {actual.Layers.Count} layers, the baseline {baseline.Layers.Count}: not the same model."
            );
        if (
            actual.SeqLen != baseline.SeqLen
            || actual.BatchSize != baseline.BatchSize
            || actual.Threshold != baseline.Threshold
        )
            throw new UserInputException(
                $"Settings differ (seq_len {actual.SeqLen}/{baseline.SeqLen}, batch_size {actual.BatchSize}/{baseline.BatchSize}, threshold {actual.Threshold}/{baseline.Threshold}): per-sequence and per-batch use are not comparable."
            );
        var deviations = new List<MetricDeviation>();
        for (int i = 0; i < actual.Layers.Count; i++)
        {
            var (a, b) = (actual.Layers[i], baseline.Layers[i]);
            if (a.DFf != b.DFf)
                throw new UserInputException($"Layer {i} has {a.DFf} units, the baseline's {b.DFf}.");
            if (a.Label != b.Label)
                throw new UserInputException($"Layer {i} is {a.Label}, the baseline's {b.Label}: not the same model.");
            foreach (var (name, value) in Metrics)
            {
                double tolerance =
                    tolerances != null && tolerances.TryGetValue(name, out double t)
                        ? t
                        : DefaultTolerance(name, a.DFf);
                if (!(Math.Abs(value(a) - value(b)) <= tolerance))
                    deviations.Add(
                        new MetricDeviation(
                            a.Index,
                            name,
                            value(a),
                            value(b),
                            tolerance,
                            a.Stack == null ? null : a.Label
                        )
                    );
            }
        }
        return deviations;
    }
}
