using System.Globalization;
using System.Text;
using System.Text.Json;
using ScottPlot;
using Sparsity.Analysis;
using Sparsity.Training;

namespace Sparsity.Pipeline.Report;

/// <summary>
/// report.md with PNG plots for an analysis folder: nonzero fraction per layer; token, sequence and
/// batch use per layer; sorted unit-frequency curves on a log axis; and, given the checkpoint, the
/// training trajectory and unit death steps.
/// </summary>
public static class SparsityReport
{
    const int Width = 900,
        Height = 500;

    /// <summary>Writes report.md and its PNGs into <paramref name="analysisDir"/>; returns the report path.</summary>
    public static string Write(string analysisDir, string? checkpointDir, string? corpus = null)
    {
        string statsPath = Path.Combine(analysisDir, SparsityStats.FileName);
        if (!File.Exists(statsPath))
            throw new UserInputException(
                $"{analysisDir} has no {SparsityStats.FileName}: run `analyze` (or `merge`) first."
            );
        var stats = SparsityStats.Load(statsPath);
        // Every input is read and checked before the first file is written.
        var counts = SparsityCounts.Load(analysisDir);
        var contexts = counts.Header.TopExamples > 0 ? UnitContexts.Open(analysisDir, corpus) : null;
        if (checkpointDir != null)
            RequireSameModel(counts.Header, analysisDir, checkpointDir);
        List<TrainingLogEntry>? log = null;
        UnitDeathLog? death = null;
        if (checkpointDir != null)
        {
            string logPath = Path.Combine(checkpointDir, Checkpoint.LogFile),
                deathPath = Path.Combine(checkpointDir, Checkpoint.DeathFile);
            if (!File.Exists(logPath))
                throw new UserInputException(
                    $"{checkpointDir} has no {Checkpoint.LogFile}: pass the checkpoint folder written by `train`."
                );
            log = File.ReadLines(logPath)
                .Select(
                    (line, i) =>
                    {
                        try
                        {
                            return JsonSerializer.Deserialize<TrainingLogEntry>(line, ProjectJson.Lines)
                                ?? throw new JsonException();
                        }
                        catch (JsonException)
                        {
                            throw new UserInputException(
                                $"{logPath}:{i + 1} is not a training-log entry (the file is truncated or corrupt)."
                            );
                        }
                    }
                )
                .ToList();
            if (File.Exists(deathPath))
            {
                try
                {
                    death = JsonSerializer.Deserialize<UnitDeathLog>(File.ReadAllText(deathPath), ProjectJson.Options);
                }
                catch (JsonException)
                {
                    throw new UserInputException($"{deathPath} is not a unit-death log (truncated or corrupt).");
                }
            }
        }

        var md = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        md.AppendLine(CultureInfo.InvariantCulture, $"# MLP activation sparsity of {stats.Model}").AppendLine();
        if (stats.Pairs is { } pairs && stats.PairCounts is { } cut)
            md.AppendLine(
                inv,
                $"Corpus `{stats.Corpus}` ({cut.Pairs:N0} pairs, {(pairs.Source == "tsv" ? "lines source<TAB>target" : "each window its own target")}; "
                    + $"{stats.Layers.First(l => l.Stack == "encoder").Tokens:N0} source and {stats.Layers.FirstOrDefault(l => l.Stack == "decoder")?.Tokens ?? 0:N0} target tokens, "
                    + $"{cut.TruncatedSources:N0} sources and {cut.TruncatedTargets:N0} targets cut to {stats.SeqLen} tokens; {stats.Batches:N0} batches of {stats.BatchSize} pairs; "
                    + $"the decoder teacher-forced, start id {pairs.DecoderStartId}), tokenizer `{stats.Tokenizer}`, "
            );
        else
            md.AppendLine(
                inv,
                $"Corpus `{stats.Corpus}` ({stats.Tokens:N0} tokens, {stats.Sequences:N0} windows of ≤ {stats.SeqLen} tokens, {stats.Batches:N0} batches of {stats.BatchSize} windows), tokenizer `{stats.Tokenizer}`, "
            );
        md.AppendLine(
                inv,
                $"a unit is active when its activation exceeds {stats.Threshold}. Shards: {string.Join(", ", stats.Shards)}. Written by {stats.Producer}."
            )
            .AppendLine();
        if (stats.Precision == "fp16")
            md.AppendLine(
                    "The model ran in fp16 (`--precision fp16`): a unit whose activation lies within fp16 rounding of the threshold may be counted differently from an fp32 run."
                )
                .AppendLine();
        md.Append(
            Markdown.Table(
                [
                    "layer",
                    "d_ff",
                    "nonzero fraction",
                    "units / token",
                    "units / sequence",
                    "units / batch",
                    "ever active",
                    "dead",
                    "down-proj. FLOPs saved",
                ],
                stats.Layers.Select(l =>
                    new[]
                    {
                        l.Stack == null ? $"{l.Index}" : l.Label,
                        $"{l.DFf}",
                        Markdown.F(l.NonzeroFraction, "0.0000"),
                        $"{Markdown.F(l.PerTokenUnitsMean, "0.0")} ± {Markdown.F(l.PerTokenUnits.StandardDeviation, "0.0")}",
                        Markdown.F(l.PerSequenceUnitsMean, "0.0"),
                        Markdown.F(l.PerBatchUnitsMean, "0.0"),
                        $"{l.UnitsEverActive}",
                        $"{l.DeadUnits}",
                        l.DownProjectionFlopReduction.ToString("P1", inv),
                    }
                )
            )
        );
        md.AppendLine().AppendLine(Findings(stats)).AppendLine();

        Save(analysisDir, "nonzero_fraction.png", NonzeroFraction(stats));
        md.AppendLine("## Nonzero fraction per layer")
            .AppendLine()
            .AppendLine(
                "Mean fraction of a layer's units active on a token (Li et al.: ≈ 0.5 at initialisation, a few percent after training)."
            )
            .AppendLine();
        md.AppendLine("![nonzero fraction](nonzero_fraction.png)").AppendLine();
        Save(analysisDir, "unit_use.png", UnitUse(stats));
        md.AppendLine("## Units used per token, per sequence and per batch").AppendLine();
        md.AppendLine(
                inv,
                $"Distinct units active on a token, on at least one token of a {stats.SeqLen}-token window, and anywhere in a batch of {stats.BatchSize} windows (Wild & Anderson §3). A layer whose per-token use is high but per-batch use low reuses the same units; the reverse spreads tokens over many units."
            )
            .AppendLine();
        md.AppendLine("![unit use](unit_use.png)").AppendLine();
        Save(analysisDir, "unit_frequency.png", UnitFrequency(stats));
        md.AppendLine("## Unit activation frequency, sorted").AppendLine();
        md.AppendLine(
                "Fraction of tokens each unit is active on, most active first, log scale (Li et al. Fig. 3: a long tail). Dead units are drawn at 10⁻⁷."
            )
            .AppendLine();
        md.AppendLine("![unit frequency](unit_frequency.png)").AppendLine();

        if (log != null)
        {
            Save(analysisDir, "training_trajectory.png", Trajectory(log));
            md.AppendLine("## Training trajectory")
                .AppendLine()
                .AppendLine(
                    CultureInfo.InvariantCulture,
                    $"Nonzero fraction per layer on the training batch, from `{Path.Combine(checkpointDir!, Checkpoint.LogFile)}` (Li et al. Fig. 1)."
                )
                .AppendLine();
            md.AppendLine("![training trajectory](training_trajectory.png)").AppendLine();
        }
        if (death != null)
        {
            Save(analysisDir, "death_steps.png", DeathSteps(death));
            md.AppendLine("## Unit death during training").AppendLine();
            md.AppendLine(
                    inv,
                    $"Step from which each unit never fired again on a training token (Wild & Anderson §4.2); units that fired on the last step ({death.LastStep}) are alive and not counted. Silent for the last 10 % of training, per layer: {string.Join(" / ", death.Layers.Select(d => d.SilentForLastTenth))}."
                )
                .AppendLine();
            md.AppendLine("![death steps](death_steps.png)").AppendLine();
        }
        if (contexts != null)
            md.Append(Units(analysisDir, contexts));
        string report = Path.Combine(analysisDir, "report.md");
        AtomicFile.WriteAllText(report, md.ToString());
        return report;
    }

    // The unit dashboard (units.html) and, in the report, its units with their strongest context.
    // An analysis and a training log of two different models must never share a report: the analysed model's SHA-256
    // (in the header) must be one of the checkpoint's exports.
    static void RequireSameModel(AnalysisHeader header, string analysisDir, string checkpointDir)
    {
        if (header.ModelSha256 == null || !Directory.Exists(checkpointDir))
            return; // no provenance to compare (before 0.2.0); a missing folder is said below
        var exports = Directory.EnumerateFiles(checkpointDir, "*.onnx").ToList();
        if (exports.Count == 0 || exports.Any(f => Streaming.Provenance.ModelSha256(f) == header.ModelSha256))
            return; // exported elsewhere: nothing to compare
        throw new UserInputException(
            $"{analysisDir} measured {header.Model} (SHA-256 {header.ModelSha256[..12]}…), which is none of {checkpointDir}'s exports "
                + $"({string.Join(", ", exports.Select(Path.GetFileName))}): a report never mixes two models; pass the checkpoint the analysed model was exported from."
        );
    }

    static string Units(string analysisDir, UnitContexts contexts)
    {
        var shown = UnitDashboard.Write(analysisDir, contexts);
        var md = new StringBuilder("## What fires the units\n\n");
        md.AppendLine(
                $"[{UnitDashboard.FileName}]({UnitDashboard.FileName}) (one self-contained page: open it in a browser) shows, for each layer, the most and least frequent units, dead or nearly dead ones and a random sample, each with the histogram of its activation values and its top windows, the peak token highlighted. Their strongest window:"
            )
            .AppendLine();
        md.Append(
            Markdown.Table(
                ["layer", "unit", "why", "frequency", "top activation", "context"],
                shown.Select(s =>
                {
                    var top = s.View.Contexts.FirstOrDefault();
                    string lead = top == null || !char.IsWhiteSpace(top.Token.FirstOrDefault()) ? "" : " "; // Markdown bolds no leading space
                    string context =
                        top == null
                            ? "never active"
                            : $"{string.Concat(top.Before)}{lead}**{top.Token.Trim()}**{string.Concat(top.After)}"
                                .Replace("|", "\\|")
                                .Replace("\n", " ")
                                .Trim();
                    return new[]
                    {
                        $"{s.View.Layer}",
                        $"{s.View.Unit}",
                        s.Why,
                        Markdown.F(s.View.Frequency, "0.00000"),
                        top == null ? "–" : Markdown.F(top.Example.Value, "0.000"),
                        context,
                    };
                })
            )
        );
        return md.AppendLine().ToString();
    }

    static string Findings(SparsityStats s)
    {
        if (s.Layers.Count < 2)
            return "";
        var byToken = s.Layers.OrderByDescending(l => l.NonzeroFraction).ToList();
        var byBatch = s.Layers.OrderByDescending(l => l.PerBatchUnitsMean / l.DFf).ToList();
        var first = s.Layers[0];
        var last = s.Layers[^1];
        return string.Create(
            CultureInfo.InvariantCulture,
            $"Densest per token: {byToken[0].Label} ({byToken[0].NonzeroFraction:0.000}); sparsest: {byToken[^1].Label} ({byToken[^1].NonzeroFraction:0.000}). "
                + $"Most units per batch (as a fraction of d_ff): {byBatch[0].Label}; fewest: {byBatch[^1].Label}. "
                + $"{char.ToUpperInvariant(first.Label[0])}{first.Label[1..]} uses {first.PerTokenUnitsMean:0.0} units per token and {first.PerBatchUnitsMean:0.0} per batch; "
                + $"the last layer{(last.Stack == null ? "" : $" ({last.Label})")} {last.PerTokenUnitsMean:0.0} and {last.PerBatchUnitsMean:0.0}."
        );
    }

    static Plot NonzeroFraction(SparsityStats s)
    {
        var plt = new Plot();
        plt.Add.Bars(
            s.Layers.Select(l => (double)l.Index).ToArray(),
            s.Layers.Select(l => l.NonzeroFraction).ToArray()
        );
        LayerTicks(plt, s);
        plt.Axes.SetLimitsY(0, Math.Max(0.55, s.Layers.Max(l => l.NonzeroFraction) * 1.1));
        plt.Title("Nonzero fraction per layer");
        plt.YLabel("mean fraction of units active per token");
        return plt;
    }

    internal static Plot UnitUse(SparsityStats s)
    {
        var plt = new Plot();
        var series = new (string Label, Func<LayerStats, double> Value, Color Color)[]
        {
            ("per token", l => l.PerTokenUnitsMean, Colors.C0),
            ("per sequence", l => l.PerSequenceUnitsMean, Colors.C1),
            ("per batch", l => l.PerBatchUnitsMean, Colors.C2),
            ("d_ff", l => l.DFf, Colors.Gray),
        };
        var bars = new List<Bar>();
        for (int k = 0; k < series.Length; k++)
            foreach (var l in s.Layers)
                bars.Add(
                    new Bar
                    {
                        Position = l.Index + (k - 1.5) * 0.2,
                        Value = series[k].Value(l),
                        FillColor = series[k].Color,
                        Size = 0.18,
                    }
                );
        plt.Add.Bars(bars);
        foreach (var (label, _, color) in series)
            plt.Legend.ManualItems.Add(new LegendItem { LabelText = label, FillColor = color });
        plt.ShowLegend(Alignment.UpperLeft);
        LayerTicks(plt, s);
        plt.Axes.SetLimitsY(0, s.Layers.Max(l => l.DFf) * 1.25);
        plt.Title($"Units used per token, per {s.SeqLen}-token sequence and per batch of {s.BatchSize}");
        plt.YLabel("distinct active units (mean)");
        return plt;
    }

    static Plot UnitFrequency(SparsityStats s)
    {
        var plt = new Plot();
        foreach (var l in s.Layers)
        {
            double[] sorted = l
                .UnitActivationFrequency.OrderDescending()
                .Select(f => Math.Log10(Math.Max(f, 1e-7)))
                .ToArray();
            var line = plt.Add.ScatterLine(
                Enumerable.Range(0, sorted.Length).Select(i => (double)i / sorted.Length).ToArray(),
                sorted
            );
            line.LegendText = l.Label;
            line.LineWidth = 2;
        }
        LogAxis(plt);
        plt.ShowLegend(Alignment.LowerLeft);
        plt.Title("Unit activation frequency, sorted (log scale)");
        plt.XLabel("unit rank / d_ff");
        plt.YLabel("fraction of tokens active");
        return plt;
    }

    internal static Plot Trajectory(List<TrainingLogEntry> log)
    {
        var plt = new Plot();
        var tracked = log.Where(e => e.Layers != null).ToList();
        for (int l = 0; l < tracked[0].Layers!.Count; l++)
        {
            var line = plt.Add.ScatterLine(
                tracked.Select(e => (double)e.Step).ToArray(),
                tracked.Select(e => e.Layers![l].NonzeroFraction).ToArray()
            );
            line.LegendText = $"layer {l}";
            line.LineWidth = 2;
        }
        return TrajectoryAxes(plt, "Nonzero fraction during training");
    }

    /// <summary>The axes every nonzero-fraction-over-training plot shares: steps against the fraction of units active
    /// per token.</summary>
    internal static Plot TrajectoryAxes(Plot plt, string title)
    {
        plt.Axes.SetLimitsY(0, 0.6);
        plt.ShowLegend(Alignment.LowerLeft);
        plt.Title(title);
        plt.XLabel("step");
        plt.YLabel("fraction of units active per token");
        return plt;
    }

    internal static Plot DeathSteps(UnitDeathLog death)
    {
        var plt = new Plot();
        const int bins = 20;
        double width = Math.Max(1, (death.LastStep + 1) / (double)bins);
        int layers = death.Layers.Count,
            total = 0;
        var bars = new List<Bar>();
        for (int l = 0; l < layers; l++)
        {
            var counts = new int[bins];
            foreach (long? d in death.Layers[l].DeathStep)
                if (d is long step)
                {
                    counts[Math.Min(bins - 1, (int)(step / width))]++;
                    total++;
                }
            var color = Colors.Category10[l % 10];
            for (int b = 0; b < bins; b++)
                if (counts[b] > 0)
                    bars.Add(
                        new Bar
                        {
                            Position = (b + (l + 0.5) / layers) * width,
                            Value = counts[b],
                            Size = width / layers * 0.9,
                            FillColor = color,
                        }
                    );
            plt.Legend.ManualItems.Add(new LegendItem { LabelText = $"layer {l}", FillColor = color });
        }
        plt.Add.Bars(bars);
        plt.Axes.SetLimitsX(0, bins * width);
        plt.Axes.SetLimitsY(0, Math.Max(1, bars.Count == 0 ? 1 : bars.Max(b => b.Value)) * 1.3);
        plt.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plt.ShowLegend(Alignment.UpperLeft);
        plt.Title($"Death steps: {total} units stopped firing for good before the last step");
        plt.XLabel("step from which the unit never fired again");
        plt.YLabel("units");
        return plt;
    }

    static void LayerTicks(Plot plt, SparsityStats s)
    {
        plt.Axes.Bottom.SetTicks(
            s.Layers.Select(l => (double)l.Index).ToArray(),
            s.Layers.Select(l => l.Label).ToArray()
        );
    }

    static void LogAxis(Plot plt)
    {
        var ticks = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = y => Math.Pow(10, y).ToString("G2", CultureInfo.InvariantCulture),
        };
        plt.Axes.Left.TickGenerator = ticks;
    }

    internal static void Save(string dir, string name, Plot plot) =>
        AtomicFile.Write(Path.Combine(dir, name), temp => plot.SavePng(temp, Width, Height));
}
