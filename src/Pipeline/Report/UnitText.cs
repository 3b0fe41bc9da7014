using System.Globalization;
using Sparsity.Analysis;

namespace Sparsity.Pipeline.Report;

/// <summary>One unit in the terminal (<c>unit</c>): its counts, a text histogram and its top windows, the peak token in
/// [[ ]].</summary>
public static class UnitText
{
    /// <summary>Writes <paramref name="view"/> to <paramref name="output"/>.</summary>
    public static void Print(TextWriter output, UnitView view, AnalysisHeader header)
    {
        var inv = CultureInfo.InvariantCulture;
        output.WriteLine(
            string.Create(
                inv,
                $"{view.LayerLabel}, unit {view.Unit}: active on {view.ActiveTokens:N0} tokens, frequency {view.Frequency:0.000000} ({header.Corpus}, threshold {header.Threshold})."
            )
        );
        long max = Math.Max(1, view.Histogram.Max());
        if (view.Histogram.Any(c => c > 0))
        {
            output.WriteLine("Activation values (first window of every batch), per power-of-two bin:");
            int first = Array.FindIndex(view.Histogram, c => c > 0),
                last = Array.FindLastIndex(view.Histogram, c => c > 0);
            for (int b = first; b <= last; b++)
            {
                string range = b == 0 ? "< 2^-10" : $">= 2^{b - 1 + ActivationHistogram.LowestExponent}";
                output.WriteLine(
                    string.Create(
                        inv,
                        $"  {range, 9}  {view.Histogram[b], 9:N0}  {new string('#', (int)Math.Ceiling(40.0 * view.Histogram[b] / max))}"
                    )
                );
            }
        }
        if (view.Contexts.Count == 0)
        {
            output.WriteLine("Never active on this corpus: no contexts.");
            return;
        }
        output.WriteLine(
            string.Create(inv, $"Top {view.Contexts.Count} windows (peak value, document:peak token, the peak marked):")
        );
        foreach (var c in view.Contexts)
        {
            string text = $"{string.Concat(c.Before)}[[{c.Token}]]{string.Concat(c.After)}".Replace('\n', ' ');
            output.WriteLine(
                string.Create(
                    inv,
                    $"  {c.Example.Value, 8:0.000}  {c.Example.Document, 6}:{c.Example.Position, -6} {text}"
                )
            );
        }
    }
}
