using NUnit.Framework;
using Sparsity.Analysis;
using Is = Sparsity.Checks.Is;

namespace RegressionChecks;

/// <summary>
/// The checks a team keeps beside its model: today's statistics (stats/current.json, written by `relu-sparsity
/// analyze`) against the release baseline (stats/baseline.json), every metric of every layer within tolerance.
/// </summary>
public class SparsityRegressionTests
{
    static string Stats(string name) => Path.Combine(TestContext.CurrentContext.TestDirectory, "stats", name);

    [Test]
    public void SparsityStaysWithinToleranceOfTheBaseline()
    {
        Assert.That(
            Stats("current.json"),
            Is.WithinSparsityTolerance(Stats("baseline.json")).For("nonzero_fraction", 0.01)
        );
    }

    [Test]
    public void ATighterToleranceCatchesTheDriftAndNamesIt()
    {
        var current = SparsityStats.Load(Stats("current.json"));
        var baseline = SparsityStats.Load(Stats("baseline.json"));
        var failure = Assert.Throws<AssertionException>(() =>
            Assert.That(current, Is.WithinSparsityTolerance(baseline).For("nonzero_fraction", 0.001))
        )!;
        Assert.That(failure.Message, Does.Contain("layer 1 nonzero_fraction"));
        Assert.That(failure.Message, Does.Contain("tolerance ±0.001"));
    }

    [Test]
    public void TheStatisticsAreTheModelsOwn()
    {
        var current = SparsityStats.Load(Stats("current.json"));
        Assert.That(current.Layers, Has.Count.EqualTo(2));
        Assert.That(current.Layers.Select(l => l.DFf), Is.All.EqualTo(256));
        Assert.That(
            current.Layers.Select(l => l.NonzeroFraction),
            Is.All.InRange(0.0, 0.5),
            "a trained ReLU model is sparse"
        );
    }
}
