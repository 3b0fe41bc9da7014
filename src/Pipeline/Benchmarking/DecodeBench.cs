using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Generation;
using Sparsity.Pipeline.Streaming;
using static Sparsity.Pipeline.Report.Markdown;

namespace Sparsity.Pipeline.Benchmarking;

/// <summary>
/// What <c>decode-bench</c> was asked: batch-1 greedy generation from <paramref name="PromptTokens"/> tokens of the
/// first document of <paramref name="Corpus"/>, <paramref name="NewTokens"/> new ones, for each labelled model (the
/// first is the reference), at each thread count, <paramref name="Runs"/> timed runs after one warm-up. A label ending
/// in
/// <c>, no cache</c> runs its model recomputing the sequence each step. The models' runs are interleaved.
/// <paramref name="Profile"/>: each model's single-token steps also run once under ONNX Runtime's profiler.
/// </summary>
public sealed record DecodeBenchRequest(
    IReadOnlyList<(string Label, string Model)> Models,
    string Corpus,
    string Tokenizer,
    string Out,
    int PromptTokens = 64,
    int NewTokens = 128,
    IReadOnlyList<int>? Threads = null,
    int Runs = 5,
    Runtime.Device? Device = null,
    bool Profile = false
);

/// <summary>One model at one thread count: prefill seconds and per-token decode milliseconds over the runs, and its
/// greedy tokens; for a fixed-shape sparse graph, its single-token steps over every generation (warm-up included), how
/// many were recomputed densely, and per layer (capacity) how many overflowed.</summary>
public sealed record DecodeTiming(
    string Label,
    int Threads,
    double[] PrefillSeconds,
    double[] DecodeMsPerToken,
    int[] Tokens,
    long SparseSteps = 0,
    long RecomputedSteps = 0,
    IReadOnlyList<(int Layer, long Capacity, long Overflows)>? Overflows = null
)
{
    /// <summary>Median decode milliseconds per token.</summary>
    public double MedianMs => Median(DecodeMsPerToken);

    /// <summary>Median prefill seconds.</summary>
    public double MedianPrefill => Median(PrefillSeconds);

    static double Median(double[] v)
    {
        var s = v.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}

/// <summary>Per-token decode latency at batch 1, decode timed apart from the prefill: decode.md and
/// decode.json.</summary>
public static class DecodeBench
{
    const string NoCache = ", no cache";
    const int ProfiledSteps = 32;

    /// <summary>Runs every model at every thread count; writes <c>decode.md</c> and <c>decode.json</c> into
    /// <see cref="DecodeBenchRequest.Out"/>; returns the Markdown.</summary>
    public static string Run(DecodeBenchRequest r, Action<string>? progress = null)
    {
        var tokenizer = TextTokenizer.FromSpec(r.Tokenizer);
        var prompt = CorpusBatches
            .Tokens(r.Corpus, tokenizer, r.PromptTokens)
            .SelectMany(d => d)
            .Take(r.PromptTokens)
            .Select(t => (int)t)
            .ToList();
        if (prompt.Count < r.PromptTokens)
            throw new UserInputException($"{r.Corpus} holds fewer than {r.PromptTokens} tokens for the prompt.");
        var timings = new List<DecodeTiming>();
        foreach (int threads in r.Threads ?? [1, 2])
        {
            // All models open at once and their runs interleaved, so drift in the machine's speed spreads over all of
            // them.
            var generators = r
                .Models.Select(m => new Generator(
                    OnnxGraph.Load(m.Model),
                    threads,
                    useCache: !m.Label.EndsWith(NoCache, StringComparison.Ordinal),
                    r.Device
                ))
                .ToList();
            try
            {
                var tokens = generators
                    .Select(
                        (g, i) =>
                        {
                            progress?.Invoke($"{r.Models[i].Label}, {threads} thread(s): warm-up…");
                            return Time(g).Tokens;
                        }
                    )
                    .ToList();
                var prefill = r.Models.Select(_ => new List<double>()).ToList();
                var decode = r.Models.Select(_ => new List<double>()).ToList();
                for (int run = 0; run < r.Runs; run++)
                for (int i = 0; i < generators.Count; i++)
                {
                    var (first, perToken, _) = Time(generators[i]);
                    prefill[i].Add(first);
                    decode[i].Add(perToken);
                }
                for (int i = 0; i < generators.Count; i++)
                {
                    var g = generators[i];
                    timings.Add(
                        new DecodeTiming(
                            r.Models[i].Label,
                            threads,
                            [.. prefill[i]],
                            [.. decode[i]],
                            tokens[i],
                            g.SparseSteps,
                            g.RecomputedSteps,
                            g.Capacities.Count == 0
                                ? null
                                : [.. g.Capacities.Select((c, l) => (c.Layer, c.Capacity, g.Overflows[l]))]
                        )
                    );
                }
            }
            finally
            {
                foreach (var g in generators)
                    g.Dispose();
            }
        }

        // One greedy generation: seconds to the first token (the prefill), then milliseconds per later token.
        (double First, double PerToken, int[] Tokens) Time(Generator generator)
        {
            var clock = Stopwatch.StartNew();
            double first = 0;
            var produced = new List<int>();
            foreach (int t in generator.Generate(prompt, r.NewTokens))
            {
                if (produced.Count == 0)
                    first = clock.Elapsed.TotalSeconds; // prompt through the model, and the first token picked
                produced.Add(t);
            }
            return (
                first,
                1000 * (clock.Elapsed.TotalSeconds - first) / Math.Max(1, produced.Count - 1),
                [.. produced]
            );
        }
        var profiles = r.Profile ? Profiles(r, prompt) : [];
        string md = Markdown(r, timings, prompt.Count, profiles);
        AtomicFile.WriteAllText(Path.Combine(r.Out, "decode.md"), md);
        AtomicFile.WriteAllText(
            Path.Combine(r.Out, "decode.json"),
            JsonSerializer.Serialize(
                new
                {
                    machine = MachineDescription.WithRuntimes(),
                    prompt_tokens = prompt.Count,
                    new_tokens = r.NewTokens,
                    runs = r.Runs,
                    models = r.Models.Select(m => new { label = m.Label, model = m.Model }),
                    timings = timings.Select(t => new
                    {
                        label = t.Label,
                        threads = t.Threads,
                        prefill_seconds = t.PrefillSeconds,
                        decode_ms_per_token = t.DecodeMsPerToken,
                        tokens = t.Tokens,
                        sparse_steps = t.Overflows == null ? (long?)null : t.SparseSteps,
                        recomputed_steps = t.Overflows == null ? (long?)null : t.RecomputedSteps,
                        overflows = t.Overflows?.Select(o => new
                        {
                            layer = o.Layer,
                            capacity = o.Capacity,
                            steps = o.Overflows,
                        }),
                    }),
                },
                ProjectJson.Options
            )
        );
        return md;
    }

    // Each model decodes ProfiledSteps tokens under ONNX Runtime's profiler (the prompt's run skipped); the table per
    // operator type goes to profile-N.csv.
    static List<(string Label, Runtime.OperatorProfile Profile)> Profiles(DecodeBenchRequest r, List<int> prompt)
    {
        var result = new List<(string, Runtime.OperatorProfile)>();
        for (int i = 0; i < r.Models.Count; i++)
        {
            var (label, model) = r.Models[i];
            string prefix = Path.Combine(r.Out, $"ort-profile-{i}");
            string file;
            using (
                var g = new Generator(
                    OnnxGraph.Load(model),
                    (r.Threads ?? [1])[0],
                    useCache: !label.EndsWith(NoCache, StringComparison.Ordinal),
                    r.Device,
                    profilePrefix: prefix
                )
            )
            {
                g.Generate(prompt, ProfiledSteps + 1).Count();
                file = g.EndProfiling();
            }
            var profile = Runtime.OperatorProfile.Read(file, warmUp: 1, onGpu: r.Device?.CudaId != null);
            File.Delete(file);
            AtomicFile.WriteAllText(Path.Combine(r.Out, $"profile-{i}.csv"), profile.ToCsv());
            result.Add((label, profile));
        }
        return result;
    }

    static string Markdown(
        DecodeBenchRequest r,
        List<DecodeTiming> timings,
        int promptTokens,
        List<(string Label, Runtime.OperatorProfile Profile)> profiles
    )
    {
        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine(
                inv,
                $"Machine: {MachineDescription.WithRuntimes()}; device {r.Device ?? Runtime.Device.Cpu}. Batch 1, prompt of {promptTokens} tokens, {r.NewTokens} new tokens, greedy; "
                    + $"median of {r.Runs} runs after a warm-up, the models' runs interleaved (min–max in brackets). Decode = the tokens after the first, timed apart from the prefill."
            )
            .AppendLine();
        md.AppendLine(
            Table(
                [
                    "model",
                    "threads",
                    "decode ms/token",
                    "decode tokens/s",
                    "× first model",
                    "prefill s",
                    "greedy tokens = first model's",
                ],
                timings.Select(t =>
                {
                    var reference = timings.First(x => x.Threads == t.Threads);
                    return (IReadOnlyList<string>)
                        [
                            t.Label,
                            t.Threads.ToString(inv),
                            $"{F(t.MedianMs, "0.00")} ({F(t.DecodeMsPerToken.Min(), "0.00")}–{F(t.DecodeMsPerToken.Max(), "0.00")})",
                            (1000 / t.MedianMs).ToString("N0", inv),
                            F(reference.MedianMs / t.MedianMs, "0.00"),
                            F(t.MedianPrefill, "0.000"),
                            t.Tokens.SequenceEqual(reference.Tokens)
                                ? "yes"
                                : $"no (first difference at token {Enumerable.Range(0, t.Tokens.Length).FirstOrDefault(i => i >= reference.Tokens.Length || t.Tokens[i] != reference.Tokens[i])})",
                        ];
                }),
                align: "lr"
            )
        );
        foreach (var t in timings.Where(t => t.Overflows != null && t.SparseSteps > 0))
            md.AppendLine()
                .AppendLine(
                    $"{t.Label}, {t.Threads} thread(s): {t.RecomputedSteps.ToString("N0", inv)} of {t.SparseSteps.ToString("N0", inv)} single-token steps recomputed densely ({Pct((double)t.RecomputedSteps / t.SparseSteps)}) "
                        + "because some layer had more active units than its capacity; per layer (capacity): "
                        + string.Join(
                            ", ",
                            t.Overflows!.Select(o =>
                                $"{o.Layer} ({o.Capacity}) {Pct((double)o.Overflows / t.SparseSteps)}"
                            )
                        )
                        + "."
                );
        foreach (var (label, profile) in profiles)
        {
            md.AppendLine()
                .AppendLine(
                    $"Profile of {label}'s single-token steps ({profile.Operators.Sum(o => o.Nodes).ToString("N0", inv)} nodes a step; profile-{profiles.FindIndex(p => p.Label == label)}.csv):"
                )
                .AppendLine()
                .AppendLine("```");
            foreach (var line in profile.Describe())
                md.AppendLine(line);
            md.AppendLine("```");
        }
        md.AppendLine().AppendLine("Models:").AppendLine();
        foreach (var (label, model) in r.Models)
            md.AppendLine($"- {label}: `{model}`");
        return md.ToString();
    }
}
