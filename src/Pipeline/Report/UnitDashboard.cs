using System.Globalization;
using System.Net;
using System.Text;
using Sparsity.Analysis;

namespace Sparsity.Pipeline.Report;

/// <summary>
/// units.html: one self-contained page (no server, no network: the histograms are inline SVG, the search box a few
/// lines of script; units.html#L/U opens filtered to one unit) showing, per layer, the units
/// <see cref="UnitContexts.Sample"/> picks, each with its frequency, the histogram of its activation values and its top
/// windows with the peak token highlighted.
/// </summary>
public static class UnitDashboard
{
    /// <summary>File name inside the analysis folder.</summary>
    public const string FileName = "units.html";

    /// <summary>Writes units.html into <paramref name="analysisDir"/> and returns the units shown, per layer.</summary>
    public static IReadOnlyList<(UnitView View, string Why)> Write(string analysisDir, UnitContexts contexts)
    {
        var picks = Enumerable
            .Range(0, contexts.Counts.Layers.Count)
            .SelectMany(l => contexts.Sample(l).Select(p => (Layer: l, p.Unit, p.Why)))
            .ToList();
        var views = contexts.Views(picks.Select(p => (p.Layer, p.Unit)).ToList());
        var shown = views.Zip(picks, (v, p) => (v, p.Why)).ToList();
        var h = contexts.Counts.Header;
        var inv = CultureInfo.InvariantCulture;
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Units of ")
            .Append(E(h.Model))
            .Append("</title>\n<style>\n")
            .Append(
                "body{font-family:system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:17px;margin-top:28px}"
            )
            .Append(
                ".unit{border:1px solid #ccc;border-radius:6px;padding:10px 14px;margin:10px 0}.unit h3{font-size:15px;margin:0 0 6px}"
            )
            .Append(
                ".why{color:#777;font-weight:normal}.ctx{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;margin:2px 0}"
            )
            .Append(
                "mark{background:#ffd54f;padding:0 1px}.val{display:inline-block;width:70px;color:#555}svg{vertical-align:middle}"
            )
            .Append(
                "#search{font-size:15px;padding:4px 8px;width:260px}.meta{color:#555;font-size:13px}\n</style></head>\n<body>\n"
            );
        html.Append("<h1>What fires each unit: ")
            .Append(E(h.Model))
            .Append("</h1>\n<p class=\"meta\">Corpus <code>")
            .Append(E(h.Corpus))
            .Append("</code>, tokenizer <code>")
            .Append(E(h.Tokenizer))
            .Append(
                inv,
                $"</code>, windows of {h.SeqLen} tokens, active above {h.Threshold}; the {h.TopExamples} top windows of each unit over the corpus (the windows whose peak activation of the unit is highest; shards {E(string.Join(", ", h.Shards))}). "
            )
            .Append(
                "Histograms: the unit's active values in power-of-two bins, over the first window of every batch. Written by "
            )
            .Append(E(h.Producer))
            .Append(".</p>\n");
        html.Append(
            "<p><input id=\"search\" placeholder=\"layer/unit, e.g. 1/37, or text\" oninput=\"filter(this.value)\"> <span id=\"count\" class=\"meta\"></span></p>\n"
        );
        foreach (var layer in shown.GroupBy(s => s.v.Layer))
        {
            html.Append(inv, $"<section><h2>{E(layer.First().v.LayerLabel)}</h2>\n");
            foreach (var (view, why) in layer)
            {
                string text = string.Join(" ", view.Contexts.Select(c => c.Token));
                html.Append(
                    inv,
                    $"<div class=\"unit\" data-id=\"{view.Layer}/{view.Unit}\" data-text=\"{E(text.ToLowerInvariant())}\"><h3>{E(view.LayerLabel)}, unit {view.Unit} <span class=\"why\">· {E(why)}</span></h3>\n"
                );
                html.Append(
                        inv,
                        $"<div class=\"meta\">active on {view.ActiveTokens:N0} tokens (frequency {view.Frequency:0.00000}) "
                    )
                    .Append(Histogram(view.Histogram))
                    .Append("</div>\n");
                if (view.Contexts.Count == 0)
                    html.Append("<div class=\"meta\">Never active on this corpus: no contexts.</div>\n");
                foreach (var c in view.Contexts)
                    html.Append(
                            inv,
                            $"<div class=\"ctx\"><span class=\"val\">{c.Example.Value:0.000}</span>{E(string.Concat(c.Before))}<mark>{E(c.Token)}</mark>{E(string.Concat(c.After))}"
                        )
                        .Append(
                            inv,
                            $" <span class=\"meta\">doc {c.Example.Document}, token {c.Example.Position}</span></div>\n"
                        );
                html.Append("</div>\n");
            }
            html.Append("</section>\n");
        }
        html.Append(
                "<script>\nfunction filter(q){q=q.trim().toLowerCase();let n=0;for(const d of document.querySelectorAll('.unit')){"
            )
            .Append(
                "const show=!q||d.dataset.id===q||d.dataset.id.startsWith(q+'/')||(q.includes('/')?false:d.dataset.text.includes(q));"
            )
            .Append("d.style.display=show?'':'none';if(show)n++;}")
            .Append(
                "for(const s of document.querySelectorAll('section'))s.style.display=[...s.querySelectorAll('.unit')].some(d=>d.style.display!=='none')?'':'none';"
            )
            .Append("document.getElementById('count').textContent=n+(n===1?' unit':' units');}\n")
            .Append(
                "const q0=decodeURIComponent(location.hash.slice(1));document.getElementById('search').value=q0;filter(q0);\n</script>\n</body></html>\n"
            );
        AtomicFile.WriteAllText(Path.Combine(analysisDir, FileName), html.ToString());
        return shown;
    }

    // Inline SVG bars, one per bin, heights relative to the fullest bin; each bar's tooltip gives its range and count.
    static string Histogram(long[] counts)
    {
        long max = Math.Max(1, counts.Max());
        var svg = new StringBuilder(
            $"<svg width=\"{counts.Length * 8 + 2}\" height=\"34\" role=\"img\" aria-label=\"activation histogram\">"
        );
        for (int b = 0; b < counts.Length; b++)
        {
            double height = counts[b] == 0 ? 0 : 1 + 29.0 * counts[b] / max;
            string range =
                b == 0 ? "below 2^-10"
                : b == counts.Length - 1 ? $"2^{b - 1 + ActivationHistogram.LowestExponent} and above"
                : $"[2^{b - 1 + ActivationHistogram.LowestExponent}, 2^{b + ActivationHistogram.LowestExponent})";
            svg.Append(
                CultureInfo.InvariantCulture,
                $"<rect x=\"{b * 8 + 1}\" y=\"{32 - height:0.0}\" width=\"7\" height=\"{height:0.0}\" fill=\"#5c6bc0\"><title>{range}: {counts[b]}</title></rect>"
            );
        }
        return svg.Append(
                "<line x1=\"0\" y1=\"32.5\" x2=\""
                    + (counts.Length * 8 + 2)
                    + "\" y2=\"32.5\" stroke=\"#999\"/></svg> <span class=\"meta\">2⁻¹⁰ … 2¹⁰</span>"
            )
            .ToString();
    }

    static string E(string text) => WebUtility.HtmlEncode(text);
}
