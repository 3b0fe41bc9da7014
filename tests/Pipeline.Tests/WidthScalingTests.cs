using NUnit.Framework;
using Sparsity.Analysis;

namespace Sparsity.Tests;

public class WidthScalingTests
{
    [Test]
    public void ExactSquareRootPointsGiveTheSameLawFromBothFits()
    {
        double[] n = [1, 4, 16],
            y = [2, 4, 8]; // y = 2·√n
        var power = WidthScaling.PowerLaw(n, y);
        var sqrt = WidthScaling.SquareRootLaw(n, y);
        Assert.That(power.C, Is.EqualTo(2).Within(1e-12));
        Assert.That(power.Exponent, Is.EqualTo(0.5).Within(1e-12));
        Assert.That(power.RSquared, Is.EqualTo(1).Within(1e-12));
        Assert.That(sqrt.C, Is.EqualTo(2).Within(1e-12)); // (2·1 + 4·2 + 8·4) / (1 + 4 + 16) = 42 / 21
        Assert.That(sqrt.RootMeanSquareError, Is.EqualTo(0).Within(1e-12));
    }

    [Test]
    public void SquareRootLawOnLinearPointsMatchesHandComputation()
    {
        double[] n = [1, 4],
            y = [1, 4];
        var sqrt = WidthScaling.SquareRootLaw(n, y);
        // c = (1·1 + 4·2) / 5 = 1.8; fitted 1.8, 3.6; SS_res = 0.64 + 0.16 = 0.8; SS_tot = 4.5.
        Assert.That(sqrt.C, Is.EqualTo(1.8).Within(1e-12));
        Assert.That(sqrt.RSquared, Is.EqualTo(1 - 0.8 / 4.5).Within(1e-12));
        Assert.That(sqrt.RootMeanSquareError, Is.EqualTo(Math.Sqrt(0.4)).Within(1e-12));
        Assert.That(sqrt.MaxRelativeError, Is.EqualTo(0.8).Within(1e-12)); // |1.8 − 1| / 1
        var power = WidthScaling.PowerLaw(n, y);
        Assert.That(power.Exponent, Is.EqualTo(1).Within(1e-12));
        Assert.That(power.At(10), Is.EqualTo(10).Within(1e-9));
    }

    [Test]
    public void RefusesNonPositiveCountsAndMismatchedLengths()
    {
        Assert.Throws<ArgumentException>(() => WidthScaling.PowerLaw([1, 2], [0, 1]));
        Assert.Throws<ArgumentException>(() => WidthScaling.SquareRootLaw([1, 2], [1]));
        Assert.Throws<ArgumentException>(() => WidthScaling.PowerLaw([1], [1]));
    }

    [Test]
    public void SeedSpreadIsTheMeanAndSampleStandardDeviation()
    {
        var spread = new SeedSpread([1, 2, 3, 4]);
        Assert.That(spread.Mean, Is.EqualTo(2.5));
        Assert.That(spread.StandardDeviation, Is.EqualTo(Math.Sqrt(5.0 / 3)).Within(1e-12)); // (2.25 + 0.25 + 0.25 + 2.25) / 3
        Assert.That(spread.ToString("0.00"), Is.EqualTo("2.50 ± 1.29"));
        Assert.That(spread.ValuesText("0"), Is.EqualTo("1 / 2 / 3 / 4"));
        Assert.That(new SeedSpread([0.25]).ToString("0.00"), Is.EqualTo("0.25"), "one seed: no spread to state");
        Assert.That(new SeedSpread([0.25]).StandardDeviation, Is.EqualTo(0));
    }

    [Test]
    public void BootstrapOverSeedsSpansTheSeedsExponents()
    {
        double[] n = [64, 128, 256, 512, 1024, 2048, 4096];
        IReadOnlyList<double> Law(double alpha) => n.Select(w => 3 * Math.Pow(w, alpha)).ToArray();
        // Three seeds on one law: every resample is that law.
        var same = WidthScaling.BootstrapExponent(n, [Law(0.5), Law(0.5), Law(0.5)], resamples: 500);
        Assert.That(
            (same.Low, same.Exponent, same.High),
            Is.EqualTo((0.5, 0.5, 0.5))
                .Using<(double, double, double)>(
                    (a, b) =>
                        Math.Abs(a.Item1 - b.Item1) < 1e-9
                        && Math.Abs(a.Item2 - b.Item2) < 1e-9
                        && Math.Abs(a.Item3 - b.Item3) < 1e-9
                            ? 0
                            : 1
                )
        );
        Assert.That(same.Contains(0.5), Is.True);
        Assert.That(same.Contains(0.51), Is.False);
        // Seeds at 0.4, 0.5, 0.6: each seed's own fit is exact; a resample drawing one seed three times (1/27 each,
        // above the 2.5 % tails) is that seed's law, so the 95 % interval runs from 0.4 to 0.6.
        var spread = WidthScaling.BootstrapExponent(n, [Law(0.4), Law(0.5), Law(0.6)], resamples: 10_000);
        Assert.That(spread.PerSeed, Is.EqualTo(new[] { 0.4, 0.5, 0.6 }).Within(1e-9));
        Assert.That(spread.Low, Is.EqualTo(0.4).Within(1e-9));
        Assert.That(spread.High, Is.EqualTo(0.6).Within(1e-9));
        Assert.That(
            spread.Exponent,
            Is.GreaterThan(0.5).And.LessThan(0.6),
            "the mean of the counts is dominated by the steeper law at large n"
        );
        Assert.That(spread.Level, Is.EqualTo(0.95));
    }
}
