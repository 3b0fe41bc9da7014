using NUnit.Framework.Constraints;
using Sparsity.Analysis;

namespace Sparsity.Checks;

/// <summary>
/// Passes when sparsity statistics (a <see cref="SparsityStats"/>, or the path of a stats.json or of the analysis
/// folder holding it) are within tolerance of a baseline, metric by metric and layer by layer
/// (<see cref="SparsityCheck"/>: every metric is checked, with its default tolerance unless <see cref="For"/> sets
/// one). The failure message names each metric, layer, value, baseline and limit.
/// </summary>
public sealed class SparsityToleranceConstraint(SparsityStats baseline) : Constraint(baseline)
{
    readonly Dictionary<string, double> _tolerances = [];

    /// <summary>Sets the absolute tolerance of <paramref name="metric"/> (a stats.json name, e.g.
    /// nonzero_fraction).</summary>
    public SparsityToleranceConstraint For(string metric, double tolerance)
    {
        if (!SparsityCheck.Metrics.ContainsKey(metric))
            throw new ArgumentException(
                $"Unknown metric '{metric}': use one of {string.Join(", ", SparsityCheck.Metrics.Keys)}.",
                nameof(metric)
            );
        if (!(tolerance >= 0))
            throw new ArgumentException(
                $"The tolerance of {metric} must be zero or positive; got {tolerance}.",
                nameof(tolerance)
            );
        _tolerances[metric] = tolerance;
        return this;
    }

    /// <inheritdoc/>
    public override string Description =>
        $"sparsity statistics within tolerance of the baseline ({baseline.Model}, {baseline.Tokens:N0} tokens"
        + (_tolerances.Count == 0 ? "" : "; " + string.Join(", ", _tolerances.Select(t => $"{t.Key} ±{t.Value}")))
        + ")";

    /// <inheritdoc/>
    public override ConstraintResult ApplyTo<TActual>(TActual actual)
    {
        var stats = actual switch
        {
            SparsityStats s => s,
            string path => SparsityStats.Load(
                Directory.Exists(path) ? Path.Combine(path, SparsityStats.FileName) : path
            ),
            _ => throw new ArgumentException(
                $"Expected SparsityStats or the path of a stats.json, got {actual?.GetType().Name ?? "null"}.",
                nameof(actual)
            ),
        };
        return new Result(this, actual, SparsityCheck.Compare(stats, baseline, _tolerances));
    }

    sealed class Result(IConstraint constraint, object? actual, IReadOnlyList<MetricDeviation> deviations)
        : ConstraintResult(constraint, actual, deviations.Count == 0)
    {
        public override void WriteMessageTo(MessageWriter writer)
        {
            writer.WriteLine($"{deviations.Count} sparsity metric(s) outside tolerance of the baseline:");
            foreach (var d in deviations)
                writer.WriteLine("  " + d);
        }
    }
}

/// <summary>
/// NUnit's <c>Is</c> with the sparsity constraint added. In a test file, <c>using Is = Sparsity.Checks.Is;</c> makes
/// <c>Is.WithinSparsityTolerance</c> available beside every NUnit constraint (<c>Is.EqualTo</c>, …).
/// </summary>
public class Is : NUnit.Framework.Is
{
    /// <summary>Statistics within tolerance of <paramref name="baseline"/>.</summary>
    public static SparsityToleranceConstraint WithinSparsityTolerance(SparsityStats baseline) => new(baseline);

    /// <summary>Statistics within tolerance of the baseline stats.json at <paramref name="baselinePath"/> (a file, or
    /// an analysis folder).</summary>
    public static SparsityToleranceConstraint WithinSparsityTolerance(string baselinePath) =>
        new(
            SparsityStats.Load(
                Directory.Exists(baselinePath) ? Path.Combine(baselinePath, SparsityStats.FileName) : baselinePath
            )
        );
}
