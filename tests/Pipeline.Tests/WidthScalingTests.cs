using NUnit.Framework;
using Sparsity.Analysis;

namespace Sparsity.Tests;

public class WidthScalingTests
{
    [Test]
    public void ExactSquareRootPointsGiveTheSameLawFromBothFits()
    {
        double[] n = [1, 4, 16], y = [2, 4, 8]; // y = 2·√n
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
        double[] n = [1, 4], y = [1, 4];
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
}
