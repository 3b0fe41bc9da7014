using System.Globalization;
using MathNet.Numerics.Statistics;

namespace Sparsity.Analysis;

/// <summary>
/// One headline figure over training seeds: the values, their mean and sample standard deviation (n − 1; 0 for one
/// seed), written "mean ± sd". A single seed cannot be cited; the spread says how far another seed may land.
/// </summary>
public sealed record SeedSpread(IReadOnlyList<double> Values)
{
    /// <summary>Mean over seeds.</summary>
    public double Mean => Values.Mean();

    /// <summary>Sample standard deviation over seeds (0 for one seed).</summary>
    public double StandardDeviation => Values.Count > 1 ? Values.StandardDeviation() : 0;

    /// <summary>Mean − sd and mean + sd, the band the plots draw.</summary>
    public (double Low, double High) Band => (Mean - StandardDeviation, Mean + StandardDeviation);

    /// <summary>The figure of each seed, from <paramref name="of"/>.</summary>
    public static SeedSpread Over<T>(IEnumerable<T> seeds, Func<T, double> of) => new(seeds.Select(of).ToArray());

    /// <summary>"mean ± sd" in <paramref name="format"/>, or the value alone for one seed.</summary>
    public string ToString(string format) =>
        Values.Count > 1
            ? $"{Mean.ToString(format, CultureInfo.InvariantCulture)} ± {StandardDeviation.ToString(format, CultureInfo.InvariantCulture)}"
            : Mean.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>The seeds' values, "a / b / c".</summary>
    public string ValuesText(string format) =>
        string.Join(" / ", Values.Select(v => v.ToString(format, CultureInfo.InvariantCulture)));

    /// <inheritdoc/>
    public override string ToString() => ToString("0.000");
}
