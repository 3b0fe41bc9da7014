using Sparsity.Training;

namespace Sparsity.Pipeline;

/// <summary>
/// Prints training progress: one self-overwriting line on a terminal, plain lines (every 10 % of the
/// run, on evaluations and messages) when output is redirected, so logs stay readable.
/// </summary>
public sealed class ProgressPrinter(TextWriter output, bool interactive) : IProgress<TrainProgress>
{
    DateTime _lastDraw = DateTime.MinValue;
    int _lastPlainDecile = -1;

    public void Report(TrainProgress p)
    {
        if (p.Message != null)
        {
            EndLine();
            output.WriteLine(p.Message);
            return;
        }
        string sparsity = p.Layers == null ? "" : "  nonzero " + string.Join(" ", p.Layers.Select(l => l.NonzeroFraction.ToString("0.000")));
        string heldOut = p.HeldOutLoss is double h ? $"  held-out {h:0.000}" : "";
        string line = $"step {p.Step,6}/{p.Steps}  loss {p.Loss:0.000}{heldOut}  {p.TokensPerSecond,7:0} tok/s  elapsed {Clock(p.Elapsed)}  left {Clock(p.Remaining)}{sparsity}";
        if (interactive)
        {
            if (p.HeldOutLoss != null || p.Step == p.Steps) { output.Write("\r" + line.PadRight(_width) + "\n"); _width = 0; return; }
            if ((DateTime.UtcNow - _lastDraw).TotalMilliseconds < 200) return;
            _lastDraw = DateTime.UtcNow;
            _width = Math.Max(_width, line.Length);
            output.Write("\r" + line.PadRight(_width));
            return;
        }
        int decile = p.Step * 10 / Math.Max(1, p.Steps);
        if (decile != _lastPlainDecile || p.HeldOutLoss != null)
        {
            _lastPlainDecile = decile;
            output.WriteLine(line);
        }
    }

    int _width;

    /// <summary>m:ss, or h:mm:ss from an hour on (a bare mm:ss format silently drops the hours).</summary>
    public static string Clock(TimeSpan t) => t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t:mm\\:ss}" : $"{(int)t.TotalMinutes}:{t:ss}";

    void EndLine()
    {
        if (interactive && _width > 0) { output.WriteLine(); _width = 0; }
    }
}
