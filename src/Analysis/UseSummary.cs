namespace Sparsity.Analysis;

/// <summary>
/// Distribution of a hidden-unit count (units per token, per sequence or per batch), computed
/// exactly from a histogram whose bin <c>c</c> holds how many observations had <c>c</c> units.
/// </summary>
/// <param name="Count">Observations (tokens, sequences or batches). Zero means the rest are NaN.</param>
/// <param name="Mean">Mean units per observation.</param>
/// <param name="StandardDeviation">Population standard deviation.</param>
/// <param name="P5">5th percentile (nearest rank).</param>
/// <param name="P50">Median (nearest rank).</param>
/// <param name="P95">95th percentile (nearest rank).</param>
/// <param name="Min">Smallest count seen.</param>
/// <param name="Max">Largest count seen.</param>
public readonly record struct UseSummary(
    long Count,
    double Mean,
    double StandardDeviation,
    double P5,
    double P50,
    double P95,
    double Min,
    double Max
)
{
    /// <summary>Summarises a histogram of unit counts.</summary>
    public static UseSummary FromHistogram(ReadOnlySpan<long> histogram)
    {
        long n = 0;
        double sum = 0,
            sumSquares = 0;
        int min = -1,
            max = -1;
        for (int units = 0; units < histogram.Length; units++)
        {
            long h = histogram[units];
            if (h == 0)
                continue;
            if (min < 0)
                min = units;
            max = units;
            n += h;
            sum += (double)h * units;
            sumSquares += (double)h * units * units;
        }
        if (n == 0)
            return new UseSummary(
                0,
                double.NaN,
                double.NaN,
                double.NaN,
                double.NaN,
                double.NaN,
                double.NaN,
                double.NaN
            );
        double mean = sum / n;
        double variance = Math.Max(0, sumSquares / n - mean * mean);
        return new UseSummary(
            n,
            mean,
            Math.Sqrt(variance),
            Percentile(histogram, n, 0.05),
            Percentile(histogram, n, 0.50),
            Percentile(histogram, n, 0.95),
            min,
            max
        );
    }

    /// <summary>Nearest-rank quantile <paramref name="p"/> of a histogram of unit counts: the smallest count with at
    /// least ⌈p·n⌉ observations at or below it (0 for an empty histogram).</summary>
    public static int Quantile(ReadOnlySpan<long> histogram, double p)
    {
        long n = 0;
        foreach (long h in histogram)
            n += h;
        return n == 0 ? 0 : (int)Percentile(histogram, n, p);
    }

    // Nearest-rank percentile: the smallest value with at least ceil(p·n) observations at or below it.
    static double Percentile(ReadOnlySpan<long> histogram, long n, double p)
    {
        long rank = Math.Max(1, (long)Math.Ceiling(p * n));
        long seen = 0;
        for (int units = 0; units < histogram.Length; units++)
        {
            seen += histogram[units];
            if (seen >= rank)
                return units;
        }
        return histogram.Length - 1;
    }
}
