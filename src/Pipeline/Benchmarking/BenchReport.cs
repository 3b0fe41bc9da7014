using System.Globalization;
using System.Text;
using System.Text.Json;
using Sparsity.Pipeline.Report;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Benchmarking;

/// <summary>bench.md and bench.json of a <see cref="BenchResult"/>.</summary>
public static class BenchReport
{
    /// <summary>Writes bench.md and bench.json into <paramref name="dir"/>; returns the Markdown.</summary>
    public static string Write(BenchResult b, string dir)
    {
        string md = ToMarkdown(b);
        AtomicFile.WriteAllText(Path.Combine(dir, "bench.md"), md);
        AtomicFile.WriteAllText(
            Path.Combine(dir, "bench.json"),
            JsonSerializer.Serialize(
                new
                {
                    machine = MachineDescription.WithRuntimes(),
                    device = (b.Request.Device ?? Runtime.Device.Cpu).ToString(),
                    tokens = b.Data.Tokens,
                    batch_size = b.Data.BatchSize,
                    seq_len = b.Data.SeqLen,
                    threads = b.Request.Threads,
                    repeats = b.Request.Repeats,
                    timings = b.Timings.Select(t => new
                    {
                        contender = t.Contender,
                        what = t.What,
                        seconds = t.Seconds,
                        median = t.Median,
                        tokens_per_second = t.TokensPerSecond,
                    }),
                    agreement = b.Agreement,
                    memory = b.Memory.Select(m => new
                    {
                        corpus = m.Corpus,
                        m.Tokens,
                        peak_bytes = m.PeakBytes,
                        seconds = m.Elapsed.TotalSeconds,
                    }),
                    latency = b.Latency.Select(l => new
                    {
                        variant = l.Name,
                        l.E.MedianMsPerBatch,
                        l.E.P10MsPerBatch,
                        l.E.P90MsPerBatch,
                        l.E.Loss,
                        l.E.UnitsPerLayer,
                    }),
                    python = b.PythonNote,
                },
                ProjectJson.Options
            )
        );
        return md;
    }

    static string ToMarkdown(BenchResult b)
    {
        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        var bare = b.Timings.First(t => t.Contender == "bare forward");
        var tokenize = b.Timings.First(t => t.Contender == "tokenize");
        md.AppendLine(
                inv,
                $"Machine: {MachineDescription.WithRuntimes()}; ONNX Runtime on {b.Request.Device ?? Runtime.Device.Cpu}. {b.Data.Tokens:N0} tokens, batches of {b.Data.BatchSize} × {b.Data.SeqLen}, {b.Request.Threads} threads everywhere, median of {b.Request.Repeats} repeats after a warm-up (min–max in brackets)."
            )
            .AppendLine();
        md.AppendLine(
            Table(
                [
                    "contender",
                    "what it runs",
                    "median s",
                    "min–max s",
                    "tokens/s",
                    "× bare forward (same tokens)",
                    "× (bare forward + tokenize)",
                ],
                b.Timings.Select(t =>
                {
                    var reference = b.Timings.FirstOrDefault(r =>
                        r.Contender.StartsWith("bare forward") && r.Tokens == t.Tokens
                    ) ?? bare; // the bare forward on the same tokens
                    return new[]
                    {
                        t.Contender,
                        t.What,
                        F(t.Median),
                        $"{F(t.Seconds.Min())}–{F(t.Seconds.Max())}",
                        t.TokensPerSecond.ToString("N0", inv),
                        F(t.Median / reference.Median, "0.00"),
                        t.Tokens == b.Data.Tokens ? F(t.Median / (bare.Median + tokenize.Median), "0.00") : "",
                    };
                }),
                align: "ll"
            )
        );
        if (b.PythonNote != null)
            md.AppendLine(b.PythonNote).AppendLine();
        md.AppendLine(
                "Same statistics from every contender (tokens; active (token, unit) pairs per layer; mean units per token and per batch, layer 0 / last):"
            )
            .AppendLine();
        md.AppendLine(
            Table(
                ["contender", "tokens", "active pairs per layer", "units/token L0, last", "units/batch L0, last"],
                b.Agreement.Select(a =>
                    new[]
                    {
                        a.Contender,
                        a.Tokens.ToString("N0", inv),
                        string.Join(" / ", a.ActivePairs.Select(x => x.ToString("N0", inv))),
                        $"{F(a.PerTokenMean[0])}, {F(a.PerTokenMean[^1])}",
                        $"{F(a.PerBatchMean[0], "0.00")}, {F(a.PerBatchMean[^1], "0.00")}",
                    }
                ),
                align: "lrlll"
            )
        );
        md.AppendLine("Peak resident memory of `analyze` (dense model, child process, VmHWM):").AppendLine();
        md.AppendLine(
            Table(
                ["corpus", "tokens", "peak RSS MB", "wall s", "ratio to 1×"],
                b.Memory.Select(m =>
                    new[]
                    {
                        m.Corpus,
                        m.Tokens.ToString("N0", inv),
                        F(m.PeakBytes / 1e6, "0.0"),
                        F(m.Elapsed.TotalSeconds, "0.00"),
                        F((double)m.PeakBytes / b.Memory[0].PeakBytes, "0.00"),
                    }
                ),
                align: "l"
            )
        );
        md.AppendLine(
                "Latency of deployable variants (`evaluate`: logits only, one batch, 30 timed runs after 3 warm-ups):"
            )
            .AppendLine();
        md.Append(
            Table(
                ["variant", "units per layer", "median ms", "p10–p90 ms", "× dense", "held-out loss"],
                b.Latency.Select(l =>
                    new[]
                    {
                        l.Name,
                        string.Join(" / ", l.E.UnitsPerLayer),
                        F(l.E.MedianMsPerBatch, "0.00"),
                        $"{F(l.E.P10MsPerBatch, "0.00")}–{F(l.E.P90MsPerBatch, "0.00")}",
                        F(l.E.MedianMsPerBatch / b.Latency[0].E.MedianMsPerBatch, "0.00"),
                        F(l.E.Loss, "0.0000"),
                    }
                ),
                align: "ll"
            )
        );
        return md.ToString();
    }
}
