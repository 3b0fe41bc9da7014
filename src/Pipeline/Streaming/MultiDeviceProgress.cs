using System.Diagnostics;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>
/// Combines the progress of an analysis's devices into one report: total tokens and rate, each device's rate, and the
/// documents read (the furthest any device has seen: they share one reader).
/// </summary>
sealed class MultiDeviceProgress(
    IReadOnlyList<Device> devices,
    long totalDocuments,
    IProgress<AnalysisProgress>? target
)
{
    readonly AnalysisProgress?[] _latest = new AnalysisProgress?[devices.Count];
    readonly Stopwatch _clock = Stopwatch.StartNew();

    /// <summary>Where device <paramref name="index"/> reports.</summary>
    public IProgress<AnalysisProgress>? For(int index) =>
        target == null
            ? null
            : new Relay(p =>
            {
                lock (_latest)
                {
                    _latest[index] = p;
                    target.Report(Combined(withTiming: false));
                }
            });

    /// <summary>The last report, with each device's timing.</summary>
    public void Finish()
    {
        lock (_latest)
            target?.Report(Combined(withTiming: true));
    }

    AnalysisProgress Combined(bool withTiming)
    {
        var rates = devices
            .Select(
                (d, i) =>
                    new DeviceRate(
                        d.ToString(),
                        _latest[i]?.Tokens ?? 0,
                        _latest[i]?.TokensPerSecond ?? 0,
                        withTiming ? _latest[i]?.Timing : null
                    )
            )
            .ToList();
        long tokens = rates.Sum(r => r.Tokens),
            documents = _latest.Max(p => p?.Documents ?? 0);
        double fraction = (double)documents / Math.Max(1, totalDocuments);
        var elapsed = _clock.Elapsed;
        TimeSpan? left = fraction > 0 ? TimeSpan.FromSeconds(elapsed.TotalSeconds * (1 - fraction) / fraction) : null;
        return new AnalysisProgress(
            tokens,
            _latest.Sum(p => p?.Batches ?? 0),
            documents,
            totalDocuments,
            tokens / Math.Max(1e-9, elapsed.TotalSeconds),
            elapsed,
            left,
            Devices: rates
        );
    }

    sealed class Relay(Action<AnalysisProgress> report) : IProgress<AnalysisProgress>
    {
        public void Report(AnalysisProgress value) => report(value);
    }
}
