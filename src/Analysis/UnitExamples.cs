using System.Globalization;
using System.Text;

namespace Sparsity.Analysis;

/// <summary>One layer's top examples and activation histograms.</summary>
public sealed record LayerExamples(int Index, UnitTopExamples Top, ActivationHistogram Histogram);

/// <summary>
/// What <c>analyze --top-examples K</c> adds to an analysis folder: per layer, top_examples_{i}.csv (unit, rank, value,
/// document, window_start, position: each unit's K top windows, <see cref="TopExample.Precedes"/> order; the format
/// <see cref="Format"/>, which the analysis header names) and
/// activation_histogram_{i}.csv (unit, then the counts of <see cref="ActivationHistogram"/>'s bins). Values are written
/// so they read back to the same float, so a merge of shards writes the same files as one run, byte for byte.
/// </summary>
public sealed record UnitExamples(int K, IReadOnlyList<LayerExamples> Layers)
{
    /// <summary>Top-examples file of layer <paramref name="layer"/>.</summary>
    public static string TopFile(int layer) => $"top_examples_{layer}.csv";

    /// <summary>Histogram file of layer <paramref name="layer"/>.</summary>
    public static string HistogramFile(int layer) => $"activation_histogram_{layer}.csv";

    const string TopHeader = "unit,rank,value,document,window_start,position";
    const string PerTokenHeader = "unit,rank,value,document,position"; // before top windows: a unit's K largest token activations

    /// <summary>
    /// The definition of top examples these files hold, recorded in the analysis header (<c>top_examples_format</c>) so
    /// <c>merge</c> never mixes definitions: each unit's K windows of highest peak activation.
    /// </summary>
    public const string Format = "top-windows/1";

    /// <summary>Empty accumulators for layers of the given widths.</summary>
    public static UnitExamples Empty(IReadOnlyList<int> dFf, int k) =>
        new(
            k,
            dFf.Select((d, i) => new LayerExamples(i, new UnitTopExamples(d, k), new ActivationHistogram(d))).ToList()
        );

    /// <summary>Writes the two CSVs of every layer into <paramref name="dir"/>.</summary>
    public void Write(string dir)
    {
        var inv = CultureInfo.InvariantCulture;
        foreach (var layer in Layers)
        {
            var top = new StringBuilder(TopHeader).Append('\n');
            for (int u = 0; u < layer.Top.DFf; u++)
            {
                var examples = layer.Top.Of(u);
                for (int r = 0; r < examples.Length; r++)
                    top.Append(
                        inv,
                        $"{u},{r},{examples[r].Value.ToString("R", inv)},{examples[r].Document},{examples[r].WindowStart},{examples[r].Position}\n"
                    );
            }
            AtomicFile.WriteAllText(Path.Combine(dir, TopFile(layer.Index)), top.ToString());
            var histogram = new StringBuilder(HistogramHeader()).Append('\n');
            for (int u = 0; u < layer.Histogram.DFf; u++)
                histogram
                    .Append(u.ToString(inv))
                    .Append(',')
                    .AppendJoin(',', layer.Histogram.Of(u).ToArray())
                    .Append('\n');
            AtomicFile.WriteAllText(Path.Combine(dir, HistogramFile(layer.Index)), histogram.ToString());
        }
    }

    // Columns named by each bin's lower edge: below_2^-10, 2^-10, …, 2^10.
    static string HistogramHeader() =>
        "unit,below_2^-10,"
        + string.Join(
            ',',
            Enumerable
                .Range(1, ActivationHistogram.Bins - 1)
                .Select(b => $"2^{b - 1 + ActivationHistogram.LowestExponent}")
        );

    /// <summary>
    /// Reads the examples of an analysis folder with <paramref name="k"/> top examples per unit and layers of widths
    /// <paramref name="dFf"/>; a missing or malformed file is an error naming it.
    /// </summary>
    public static UnitExamples Load(string dir, int k, IReadOnlyList<int> dFf)
    {
        var result = Empty(dFf, k);
        foreach (var layer in result.Layers)
        {
            int d = dFf[layer.Index];
            string topPath = Path.Combine(dir, TopFile(layer.Index)),
                histogramPath = Path.Combine(dir, HistogramFile(layer.Index));
            foreach (var (fields, line) in Rows(topPath, TopHeader, 6))
            {
                if (
                    !int.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out int unit)
                    || unit >= d
                    || !float.TryParse(fields[2], NumberStyles.Float, CultureInfo.InvariantCulture, out float value)
                    || !long.TryParse(fields[3], NumberStyles.None, CultureInfo.InvariantCulture, out long document)
                    || !int.TryParse(fields[4], NumberStyles.None, CultureInfo.InvariantCulture, out int start)
                    || !int.TryParse(fields[5], NumberStyles.None, CultureInfo.InvariantCulture, out int position)
                    || position < start
                )
                    throw new UserInputException(
                        $"{topPath}:{line} is not a top window (unit < {d}, rank, value, document, window_start, position ≥ window_start)."
                    );
                layer.Top.Add(unit, new TopExample(value, document, start, position));
            }
            var seen = new bool[d];
            var counts = new long[ActivationHistogram.Bins];
            foreach (var (fields, line) in Rows(histogramPath, HistogramHeader(), 1 + ActivationHistogram.Bins))
            {
                if (
                    !int.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out int unit)
                    || unit >= d
                    || seen[unit]
                    || fields
                        .Skip(1)
                        .Select(
                            (f, i) => long.TryParse(f, NumberStyles.None, CultureInfo.InvariantCulture, out counts[i])
                        )
                        .Any(ok => !ok)
                )
                    throw new UserInputException(
                        $"{histogramPath}:{line} is not a histogram row (a unit < {d} once, then {ActivationHistogram.Bins} counts)."
                    );
                seen[unit] = true;
                layer.Histogram.Set(unit, counts);
            }
        }
        return result;
    }

    static IEnumerable<(string[] Fields, int Line)> Rows(string path, string header, int columns)
    {
        if (!File.Exists(path))
            throw new UserInputException(
                $"{path} is missing: the analysis folder is incomplete (re-run analyze with --top-examples)."
            );
        int line = 0;
        foreach (string text in File.ReadLines(path))
        {
            line++;
            if (line == 1)
            {
                if (text == PerTokenHeader)
                    throw new UserInputException(
                        $"{path} holds top examples per token, from an earlier relu-sparsity; top examples are now each unit's top windows: re-run analyze --top-examples."
                    );
                if (text != header)
                    throw new UserInputException($"{path} does not start with the header {header}.");
                continue;
            }
            string[] fields = text.Split(',');
            if (fields.Length != columns)
                throw new UserInputException($"{path}:{line} has {fields.Length} fields, not {columns}.");
            yield return (fields, line);
        }
    }

    /// <summary>Adds another run's examples of the same layers and K (exact: see
    /// <see cref="UnitTopExamples.Merge"/>).</summary>
    public void Merge(UnitExamples other)
    {
        if (other.K != K || other.Layers.Count != Layers.Count)
            throw new ArgumentException("Cannot merge examples of different K or layers.", nameof(other));
        for (int i = 0; i < Layers.Count; i++)
        {
            Layers[i].Top.Merge(other.Layers[i].Top);
            Layers[i].Histogram.Merge(other.Layers[i].Histogram);
        }
    }
}
