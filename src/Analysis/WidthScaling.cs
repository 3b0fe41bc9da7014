using MathNet.Numerics;

namespace Sparsity.Analysis;

/// <summary>A fitted law <c>count = C · width^Exponent</c> and how well it explains the points.</summary>
/// <param name="C">Scale.</param>
/// <param name="Exponent">Power of the width (fixed at 0.5 for the square-root law).</param>
/// <param name="RSquared">Coefficient of determination 1 − SS_res/SS_tot on the counts themselves (not their
/// logarithms).</param>
/// <param name="RootMeanSquareError">√(SS_res / n), in units.</param>
/// <param name="MaxRelativeError">Largest |fit − count| / count over the points.</param>
public sealed record ScalingFit(
    double C,
    double Exponent,
    double RSquared,
    double RootMeanSquareError,
    double MaxRelativeError
)
{
    /// <summary>The law's count at a width.</summary>
    public double At(double width) => C * Math.Pow(width, Exponent);
}

/// <summary>The exponent α of count = c·n^α fitted to the mean over seeds, its bootstrap interval, and each seed's own
/// α.</summary>
public sealed record ExponentInterval(
    double Exponent,
    double Low,
    double High,
    double Level,
    IReadOnlyList<double> PerSeed
)
{
    /// <summary>Whether <paramref name="alpha"/> lies inside the interval.</summary>
    public bool Contains(double alpha) => alpha >= Low && alpha <= High;
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

    /// <summary>
    /// The power law's exponent fitted to each seed's counts (<paramref name="countsBySeed"/>[seed][width]) and a
    /// percentile bootstrap over seeds: <paramref name="resamples"/> times, draw as many seeds as there are with
    /// replacement, average their counts per width and fit α; the interval holds the middle <paramref name="level"/>
    /// of those α. With few seeds the interval is coarse (3 seeds give at most 10 distinct resamples), and says so by
    /// its width.
    /// </summary>
    public static ExponentInterval BootstrapExponent(
        IReadOnlyList<double> widths,
        IReadOnlyList<IReadOnlyList<double>> countsBySeed,
        int resamples = 10_000,
        double level = 0.95,
        int seed = 0
    )
    {
        if (countsBySeed.Count == 0)
            throw new ArgumentException("No seeds to fit.");
        var perSeed = countsBySeed.Select(c => PowerLaw(widths, c).Exponent).ToArray();
        var rng = new Random(seed);
        var alphas = new double[resamples];
        var mean = new double[widths.Count];
        for (int r = 0; r < resamples; r++)
        {
            Array.Clear(mean);
            for (int i = 0; i < countsBySeed.Count; i++)
            {
                var drawn = countsBySeed[rng.Next(countsBySeed.Count)];
                for (int w = 0; w < mean.Length; w++)
                    mean[w] += drawn[w] / countsBySeed.Count;
            }
            alphas[r] = PowerLaw(widths, mean).Exponent;
        }
        double all = PowerLaw(
            widths,
            Enumerable.Range(0, widths.Count).Select(w => countsBySeed.Average(c => c[w])).ToArray()
        ).Exponent;
        double tail = (1 - level) / 2;
        return new ExponentInterval(
            all,
            MathNet.Numerics.Statistics.Statistics.Quantile(alphas, tail),
            MathNet.Numerics.Statistics.Statistics.Quantile(alphas, 1 - tail),
            level,
            perSeed
        );
    }

    static ScalingFit Quality(IReadOnlyList<double> widths, IReadOnlyList<double> counts, double c, double exponent)
    {
        double[] fitted = widths.Select(n => c * Math.Pow(n, exponent)).ToArray();
        double mean = counts.Average();
        double ssRes = counts.Zip(fitted, (y, f) => (y - f) * (y - f)).Sum();
        double ssTot = counts.Sum(y => (y - mean) * (y - mean));
        double maxRel = counts.Zip(fitted, (y, f) => Math.Abs(f - y) / y).Max();
        return new ScalingFit(
            c,
            exponent,
            ssTot > 0 ? 1 - ssRes / ssTot : double.NaN,
            Math.Sqrt(ssRes / counts.Count),
            maxRel
        );
    }

    static void Check(IReadOnlyList<double> widths, IReadOnlyList<double> counts, int minimum)
    {
        if (widths.Count != counts.Count)
            throw new ArgumentException($"{widths.Count} widths but {counts.Count} counts.");
        if (widths.Count < minimum)
            throw new ArgumentException($"A fit needs at least {minimum} widths; got {widths.Count}.");
        if (widths.Any(n => !(n > 0)) || counts.Any(y => !(y > 0)))
            throw new ArgumentException("Widths and counts must be positive to fit a power law.");
    }
}
