using System.Globalization;
using System.Text;

namespace Sparsity.Pipeline.Report;

/// <summary>
/// The one Markdown writer of reports, bench tables and model cards: tables (each column right-aligned unless
/// <c>align</c> has an 'l' at its index) and numbers in invariant formats.
/// </summary>
public static class Markdown
{
    /// <summary>A table with a header row; cells are written as given.</summary>
    public static string Table(
        IReadOnlyList<string> header,
        IEnumerable<IReadOnlyList<string>> rows,
        string? align = null
    )
    {
        var sb = new StringBuilder();
        sb.AppendLine("| " + string.Join(" | ", header) + " |");
        sb.AppendLine(
            "|"
                + string.Join(
                    "|",
                    header.Select((_, i) => align != null && i < align.Length && align[i] == 'l' ? "---" : "---:")
                )
                + "|"
        );
        foreach (var row in rows)
            sb.AppendLine("| " + string.Join(" | ", row) + " |");
        return sb.ToString();
    }

    /// <summary>A number in an invariant format.</summary>
    public static string F(double v, string format = "0.000") => v.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>A fraction as a percentage with two decimals.</summary>
    public static string Pct(double v) => (100 * v).ToString("0.00", CultureInfo.InvariantCulture) + " %";

    /// <summary>A change with its sign, or ±0 when it rounds to zero at the shown precision.</summary>
    public static string Signed(double v, string format = "0.0000") =>
        v.ToString(format, CultureInfo.InvariantCulture) is var t && t.TrimStart('-').All(c => c is '0' or '.')
            ? "±" + t.TrimStart('-')
            : (v > 0 ? "+" : "") + t;

    /// <summary>A relative change in percent with its sign.</summary>
    public static string SignedPct(double v) => Signed(100 * v, "0.00") + " %";

    /// <summary>Calibration differences below this (0.05 percentage points) are reported as no change.</summary>
    public const double EceResolution = 0.0005;

    /// <summary>Per-layer values joined with " / ".</summary>
    public static string Layers(IEnumerable<double> values, string format = "0.000") =>
        string.Join(" / ", values.Select(v => F(v, format)));

    /// <summary>A duration as m:ss, or h:mm:ss from an hour on (a bare mm:ss format silently drops the
    /// hours).</summary>
    public static string Clock(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t:mm\\:ss}" : $"{(int)t.TotalMinutes}:{t:ss}";
}
