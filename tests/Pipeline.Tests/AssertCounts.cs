using NUnit.Framework;
using Sparsity.Analysis;

namespace Sparsity.Tests;

/// <summary>Assertions shared by the metric tests.</summary>
public static class AssertCounts
{
    /// <summary>Two accumulators hold identical counts: per unit, and the histograms per token, sequence and
    /// batch.</summary>
    public static void Equal(LayerUnitUse actual, LayerUnitUse expected, string what = "")
    {
        Assert.That(actual.TokensPerUnit.ToArray(), Is.EqualTo(expected.TokensPerUnit.ToArray()), what + " per unit");
        Assert.That(
            actual.UnitsPerTokenHistogram.ToArray(),
            Is.EqualTo(expected.UnitsPerTokenHistogram.ToArray()),
            what + " per token"
        );
        Assert.That(
            actual.UnitsPerSequenceHistogram.ToArray(),
            Is.EqualTo(expected.UnitsPerSequenceHistogram.ToArray()),
            what + " per sequence"
        );
        Assert.That(
            actual.UnitsPerBatchHistogram.ToArray(),
            Is.EqualTo(expected.UnitsPerBatchHistogram.ToArray()),
            what + " per batch"
        );
    }
}
