using ScottPlot;
using Sparsity.Analysis;

namespace Sparsity.Pipeline.Experiments;

/// <summary>Figures over training seeds in plots: the mean as a line, one standard deviation either side as a
/// band.</summary>
static class SeedPlots
{
    /// <summary>Adds the mean of <paramref name="perSeed"/> (one series per seed, over <paramref name="x"/>) and its ±
    /// sd band.</summary>
    public static void Band(
        Plot plt,
        double[] x,
        IReadOnlyList<double[]> perSeed,
        string label,
        Color color,
        LinePattern? pattern = null,
        MarkerShape? marker = null
    )
    {
        var spread = Enumerable
            .Range(0, x.Length)
            .Select(i => new SeedSpread(perSeed.Select(p => p[i]).ToArray()))
            .ToArray();
        if (perSeed.Count > 1)
        {
            var band = plt.Add.FillY(
                x,
                spread.Select(v => v.Band.Low).ToArray(),
                spread.Select(v => v.Band.High).ToArray()
            );
            band.FillColor = color.WithAlpha(0.2);
            band.LineWidth = 0;
        }
        var line = plt.Add.ScatterLine(x, spread.Select(v => v.Mean).ToArray());
        line.Color = color;
        line.LegendText = label;
        line.LineWidth = 2;
        if (pattern is LinePattern p)
            line.LinePattern = p;
        if (marker is MarkerShape m)
        {
            line.MarkerShape = m;
            line.MarkerSize = 6;
        }
    }

    /// <summary>Which seeds the runs are ("seeds 1337, 1338, 1339").</summary>
    public static string Seeds(IEnumerable<RunOutcome> runs)
    {
        var seeds = runs.Select(r => r.Spec.Training.Seed).ToList();
        return seeds.Count == 1
            ? $"one seed ({seeds[0]}; no spread can be given)"
            : $"{seeds.Count} seeds ({string.Join(", ", seeds)}), mean ± standard deviation over seeds";
    }
}
