using System.Globalization;
using Sparsity.Pipeline.Streaming;
using Sparsity.Training;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Commands;

/// <summary>
/// The one progress printer of long commands (train, analyze, experiments): on a terminal one self-overwriting line;
/// when output is redirected, plain lines every 10 % of the work and for lines that must stay (evaluations, messages),
/// so logs stay readable.
/// </summary>
public sealed class ConsoleProgress(TextWriter output, bool interactive)
    : IProgress<TrainProgress>,
        IProgress<AnalysisProgress>
{
    DateTime _lastDraw = DateTime.MinValue;
    int _lastDecile = -1,
        _width;

    /// <summary>A training step: loss, held-out loss on evaluations (kept), speed, time left and per-layer nonzero
    /// fractions.</summary>
    public void Report(TrainProgress p)
    {
        if (p.Message != null)
        {
            if (interactive && _width > 0)
            {
                output.WriteLine();
                _width = 0;
            }
            output.WriteLine(p.Message);
            return;
        }
        string sparsity =
            p.Layers == null
                ? ""
                : "  nonzero "
                    + string.Join(
                        " ",
                        p.Layers.Select(l => l.NonzeroFraction.ToString("0.000", CultureInfo.InvariantCulture))
                    );
        string heldOut = p.HeldOutLoss is double h ? $"  held-out {h:0.000}" : "";
        Show(
            $"step {p.Step, 6}/{p.Steps}  loss {p.Loss:0.000}{heldOut}  {p.TokensPerSecond, 7:0} tok/s  elapsed {Clock(p.Elapsed)}  left {Clock(p.Remaining)}{sparsity}",
            (double)p.Step / Math.Max(1, p.Steps),
            keep: p.HeldOutLoss != null || p.Step == p.Steps
        );
    }

    /// <summary>Tokens analysed, speed and time left; the timing breakdown (<c>--timing</c>) when it comes.</summary>
    public void Report(AnalysisProgress p)
    {
        string left = p.Remaining is TimeSpan r ? Clock(r) : "?";
        string each =
            p.Devices == null
                ? ""
                : "  ("
                    + string.Join(
                        ", ",
                        p.Devices.Select(d =>
                            string.Create(CultureInfo.InvariantCulture, $"{d.Device} {d.TokensPerSecond:0}")
                        )
                    )
                    + " tok/s)";
        bool last = p.Devices?.Any(d => d.Timing != null) ?? false;
        Show(
            $"{p.Tokens, 12:N0} tokens  {p.TokensPerSecond, 8:0} tok/s{each}  documents {p.Documents}/{p.TotalDocuments}  elapsed {Clock(p.Elapsed)}  left {left}",
            (double)p.Documents / Math.Max(1, p.TotalDocuments),
            keep: p.Documents == p.TotalDocuments && (p.Devices == null || last)
        );
        if (p.Timing is { } t)
            output.WriteLine(Describe(t));
        if (p.Profile is { } profile)
            foreach (string line in profile.Describe())
                output.WriteLine(line);
        if (!last)
            return;
        foreach (var d in p.Devices!.Where(d => d.Timing != null))
            output.WriteLine($"{d.Device}: {Describe(d.Timing!)}");
        // Steady state of the devices together: each device's rate after its first batch, added.
        double steady = p.Devices!.Where(d => d.Timing != null)
            .Sum(d => d.Timing!.BatchTokens / d.Timing.MsPerBatch * 1000);
        output.WriteLine(
            string.Create(
                CultureInfo.InvariantCulture,
                $"All {p.Devices!.Count} devices: {steady:N0} tokens/s in steady state."
            )
        );
    }

    void Show(string line, double fraction, bool keep)
    {
        if (interactive)
        {
            if (keep)
            {
                output.Write("\r" + line.PadRight(_width) + "\n");
                _width = 0;
                return;
            }
            if ((DateTime.UtcNow - _lastDraw).TotalMilliseconds < 200)
                return;
            _lastDraw = DateTime.UtcNow;
            _width = Math.Max(_width, line.Length);
            output.Write("\r" + line.PadRight(_width));
            return;
        }
        int decile = (int)(10 * fraction);
        if (decile != _lastDecile || keep)
        {
            _lastDecile = decile;
            output.WriteLine(line);
        }
    }

    /// <summary>The timing breakdown of <c>analyze --timing</c> as one paragraph.</summary>
    public static string Describe(StreamTiming t)
    {
        var inv = CultureInfo.InvariantCulture;
        double total = t.ModelSeconds + t.WaitSeconds + t.CountSeconds;
        string forward = t.ForwardMsPerBatch is double f
            ? string.Create(
                inv,
                $"The forward alone (no vocabulary projection, no statistics, output left where it was computed) {f:0.00} ms = {t.BatchTokens / f * 1000:N0} tokens/s: analysis takes {t.MsPerBatch / f:0.00}× it, the floor {t.FloorMsPerBatch / f:0.00}×. "
            )
            : "";
        return string.Create(
                inv,
                $"Timing over {t.Batches} batches after the first: {t.MsPerBatch:0.00} ms per batch = {t.BatchTokens / t.MsPerBatch * 1000:N0} tokens/s; "
                    + $"the floor (the model alone on one batch, outputs bound, median of {t.FloorRuns}) {t.FloorMsPerBatch:0.00} ms = {t.BatchTokens / t.FloorMsPerBatch * 1000:N0} tokens/s; "
                    + $"ratio {t.RatioToFloor:0.00}. "
            )
            + forward
            + string.Create(
                inv,
                $"Of the stream's time: model run {100 * t.ModelSeconds / total:0.0} %, waiting for the next batch {100 * t.WaitSeconds / total:0.0} %, counting {100 * t.CountSeconds / total:0.0} %."
            );
    }
}
