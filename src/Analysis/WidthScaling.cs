using MathNet.Numerics;

namespace Sparsity.Analysis;

/// <summary>A fitted law <c>count = C · width^Exponent</c> and how well it explains the points.</summary>
/// <param name="C">Scale.</param>
/// <param name="Exponent">Power of the width (fixed at 0.5 for the square-root law).</param>
/// <param name="RSquared">Coefficient of determination 1 − SS_res/SS_tot on the counts themselves (not their logarithms).</param>
/// <param name="RootMeanSquareError">√(SS_res / n), in units.</param>
/// <param name="MaxRelativeError">Largest |fit − count| / count over the points.</param>
public sealed record ScalingFit(double C, double Exponent, double RSquared, double RootMeanSquareError, double MaxRelativeError)
{
    /// <summary>The law's count at a width.</summary>
    public double At(double width) => C * Math.Pow(width, Exponent);
}

/// <summary>
/// How the number of active units grows with layer width n: the free power law c·n^α (least squares on
/// log–log, MathNet's Fit.Power) and the blog's square-root law c·√n
/// (least squares in the counts: c = Σ yᵢ√nᵢ / Σ nᵢ).
/// </summary>
public static class WidthScaling
{
    /// <summary>Fits count = c·n^α.</summary>
    public static ScalingFit PowerLaw(IReadOnlyList<double> widths, IReadOnlyList<double> counts)
    {
        Check(widths, counts, minimum: 2);
        var (c, alpha) = Fit.Power(widths.ToArray(), counts.ToArray());
        return Quality(widths, counts, c, alpha);
    }

    /// <summary>Fits count = c·√n (one parameter).</summary>
    public static ScalingFit SquareRootLaw(IReadOnlyList<double> widths, IReadOnlyList<double> counts)
    {
        Check(widths, counts, minimum: 1);
        double c = widths.Zip(counts, (n, y) => y * Math.Sqrt(n)).Sum() / widths.Sum();
        return Quality(widths, counts, c, 0.5);
    }

    static ScalingFit Quality(IReadOnlyList<double> widths, IReadOnlyList<double> counts, double c, double exponent)
    {
        double[] fitted = widths.Select(n => c * Math.Pow(n, exponent)).ToArray();
        double mean = counts.Average();
        double ssRes = counts.Zip(fitted, (y, f) => (y - f) * (y - f)).Sum();
        double ssTot = counts.Sum(y => (y - mean) * (y - mean));
        double maxRel = counts.Zip(fitted, (y, f) => Math.Abs(f - y) / y).Max();
        return new ScalingFit(c, exponent, ssTot > 0 ? 1 - ssRes / ssTot : double.NaN, Math.Sqrt(ssRes / counts.Count), maxRel);
    }

    static void Check(IReadOnlyList<double> widths, IReadOnlyList<double> counts, int minimum)
    {
        if (widths.Count != counts.Count) throw new ArgumentException($"{widths.Count} widths but {counts.Count} counts.");
        if (widths.Count < minimum) throw new ArgumentException($"A fit needs at least {minimum} widths; got {widths.Count}.");
        if (widths.Any(n => !(n > 0)) || counts.Any(y => !(y > 0))) throw new ArgumentException("Widths and counts must be positive to fit a power law.");
    }
}
