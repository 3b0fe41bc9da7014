using System.Diagnostics;
using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Streaming;
using Sparsity.Training;
using Sparsity.Training.Model;
using TorchSharp;

namespace Sparsity.Tests;

/// <summary>
/// <c>analyze --top-examples</c>: the in-graph top windows and histograms against a brute force over every activation
/// (dense graphs run in ONNX Runtime, each window's peak per unit, all sorted), exact shard merges, the dashboard in a
/// real browser, and <c>unit</c>.
/// </summary>
[TestFixture]
public class UnitExamplesTests
{
    const int K = 5;

    static string OwnModel() =>
        TinyModels.DenseExport(
            new ModelConfig(Layers: 2, DModel: 32, Heads: 4, DFf: 64, SeqLen: 16, VocabSize: 256),
            seed: 43
        );

    static string Corpus()
    {
        // Repeated openings make exact ties (the same bytes at the same positions), which the order must break by
        // document.
        string path = Path.Combine(TestCorpus.TempDir(), "corpus.txt");
        File.WriteAllLines(path, TestCorpus.Documents(9, seed: 7).Select((d, i) => d[..(7 + i * 17 % (d.Length - 7))]));
        return path;
    }

    static string Analyze(string model, string corpus, int seqLen, int batch, params string[] extra)
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, _, error) = Cli.Run([
            .. new[]
            {
                "analyze",
                "--model",
                model,
                "--corpus",
                corpus,
                "--tokenizer",
                "bytes",
                "--seq-len",
                $"{seqLen}",
                "--batch-size",
                $"{batch}",
                "--threads",
                "2",
                "--top-examples",
                $"{K}",
                "--out",
                outDir,
            },
            .. extra,
        ]);
        Assert.That(exit, Is.EqualTo(0), error);
        return outDir;
    }

    // Each window's peak per unit (its largest activation on a real token, the first position if tied), from graphs
    // whose outputs are the layers' activations, sorted by (value descending, document, window); the histogram bins
    // from Math.Log2 over each batch's first window.
    static (TopExample[][][] Top, long[][][] Histogram) BruteForce(
        string graph,
        IReadOnlyList<string> layers,
        int dFf,
        string corpus,
        int seqLen,
        int batch
    )
    {
        var windows = File.ReadLines(corpus)
            .Select((text, d) => (d, ids: TextTokenizer.FromSpec("bytes").Encode(text)))
            .SelectMany(doc =>
                Enumerable
                    .Range(0, (doc.ids.Count + seqLen - 1) / seqLen)
                    .Select(w =>
                        (Document: (long)doc.d, Start: w * seqLen, Ids: doc.ids.Skip(w * seqLen).Take(seqLen).ToArray())
                    )
            )
            .ToList();
        var all = layers.Select(_ => Enumerable.Range(0, dFf).Select(_ => new List<TopExample>()).ToArray()).ToArray();
        var histogram = layers
            .Select(_ => Enumerable.Range(0, dFf).Select(_ => new long[ActivationHistogram.Bins]).ToArray())
            .ToArray();
        bool withMask = OnnxGraph.Load(graph).Graph.Input.Any(i => i.Name == "attention_mask");
        foreach (var chunk in windows.Chunk(batch))
        {
            var ids = new long[batch * seqLen];
            var mask = new long[batch * seqLen];
            for (int w = 0; w < chunk.Length; w++)
            for (int t = 0; t < chunk[w].Ids.Length; t++)
                (ids[w * seqLen + t], mask[w * seqLen + t]) = (chunk[w].Ids[t], 1);
            var inputs = new List<(string, long[], long[])> { ("input_ids", ids, [batch, seqLen]) };
            if (withMask)
                inputs.Add(("attention_mask", mask, [batch, seqLen]));
            var outputs = OrtRunner.Run(graph, [.. inputs]);
            for (int l = 0; l < layers.Count; l++)
            {
                float[] values = outputs[layers[l]].Floats!; // [b, t, d_ff] or [b·t, d_ff]: the same memory
                for (int w = 0; w < chunk.Length; w++)
                for (int u = 0; u < dFf; u++)
                {
                    var real = Enumerable
                        .Range(0, chunk[w].Ids.Length)
                        .Select(t => values[(w * seqLen + t) * dFf + u])
                        .ToArray();
                    float peak = real.Max();
                    if (peak > 0)
                        all[l]
                            [u]
                            .Add(
                                new TopExample(
                                    peak,
                                    chunk[w].Document,
                                    chunk[w].Start,
                                    chunk[w].Start + Array.IndexOf(real, peak)
                                )
                            );
                    if (w == 0)
                        foreach (float v in real.Where(v => v > 0))
                            histogram[l][u][
                                Math.Clamp((int)Math.Floor(Math.Log2(v)) + 11, 0, ActivationHistogram.Bins - 1)
                            ]++;
                }
            }
        }
        var top = all.Select(layer =>
                layer
                    .Select(unit =>
                        unit.OrderByDescending(e => e.Value)
                            .ThenBy(e => e.Document)
                            .ThenBy(e => e.WindowStart)
                            .Take(K)
                            .ToArray()
                    )
                    .ToArray()
            )
            .ToArray();
        return (top, histogram);
    }

    static void AssertEqualsBruteForce(string analysis, (TopExample[][][] Top, long[][][] Histogram) expected, int dFf)
    {
        var examples = UnitExamples.Load(analysis, K, expected.Top.Select(_ => dFf).ToList());
        int ties = 0;
        for (int l = 0; l < expected.Top.Length; l++)
        for (int u = 0; u < dFf; u++)
        {
            Assert.That(
                examples.Layers[l].Top.Of(u).ToArray(),
                Is.EqualTo(expected.Top[l][u]),
                $"layer {l} unit {u}: top examples"
            );
            Assert.That(
                examples.Layers[l].Histogram.Of(u).ToArray(),
                Is.EqualTo(expected.Histogram[l][u]),
                $"layer {l} unit {u}: histogram"
            );
            ties += expected.Top[l][u].Zip(expected.Top[l][u].Skip(1)).Count(p => p.First.Value == p.Second.Value);
        }
        Assert.That(expected.Top.SelectMany(l => l).Sum(u => u.Length), Is.GreaterThan(0), "some unit fired");
        TestContext.Out.WriteLine($"{ties} tied neighbours among the top examples");
    }

    [Test]
    public void OwnModelTopExamplesAndHistogramsEqualABruteForce()
    {
        string model = OwnModel(),
            corpus = Corpus();
        var expected = BruteForce(model, ["mlp_hidden.0", "mlp_hidden.1"], 64, corpus, 12, 3);
        Assert.That(
            expected.Top.SelectMany(l => l).Any(u => u.Zip(u.Skip(1)).Any(p => p.First.Value == p.Second.Value)),
            Is.True,
            "the corpus makes exact ties, so the tie order is tested"
        );
        AssertEqualsBruteForce(Analyze(model, corpus, 12, 3), expected, 64);
        AssertEqualsBruteForce(Analyze(model, corpus, 12, 3, "--dense-activations"), expected, 64);
        // Batches of more windows than K: each unit's best K of a batch come from a TopK (of 3, every window is
        // returned).
        AssertEqualsBruteForce(
            Analyze(model, corpus, 12, 8),
            BruteForce(model, ["mlp_hidden.0", "mlp_hidden.1"], 64, corpus, 12, 8),
            64
        );
        // Graphs before opset 18 take ReduceMax's axes as an attribute; nothing else in the top examples needs a newer
        // opset.
        var old = OnnxGraph.Load(model);
        old.OpsetImport.Single(o => o.Domain == "").Version = 14;
        string opset14 = Path.Combine(TestCorpus.TempDir(), "opset14.onnx");
        OnnxGraph.Save(old, opset14);
        AssertEqualsBruteForce(Analyze(opset14, corpus, 12, 3), expected, 64);
    }

    [Test]
    public void TheCountingThreadAndSmallBatchesGiveTheSameExamples()
    {
        // On a GPU each batch is counted on a thread of its own; a batch of fewer windows than K returns k = B windows
        // per unit. Neither changes a byte.
        string model = OwnModel(),
            corpus = Corpus();
        foreach (int batch in new[] { 3, 2 })
        {
            string Run(bool thread)
            {
                string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
                Analyzer.Run(
                    new AnalysisRequest
                    {
                        Model = model,
                        Corpus = corpus,
                        Tokenizer = TokenizerSpec.Bytes,
                        SeqLen = 12,
                        BatchSize = batch,
                        Threads = 2,
                        OutDir = outDir,
                        CountingThread = thread,
                        TopExamples = K,
                    }
                );
                return outDir;
            }
            string inline = Run(false),
                threaded = Run(true);
            foreach (
                string file in new[]
                {
                    "top_examples_0.csv",
                    "top_examples_1.csv",
                    "activation_histogram_1.csv",
                    "counts.json",
                }
            )
                Assert.That(
                    File.ReadAllText(Path.Combine(threaded, file)),
                    Is.EqualTo(File.ReadAllText(Path.Combine(inline, file))),
                    $"{file}, batches of {batch}"
                );
        }
    }

    [Test]
    public void TheGraphReturnsEachUnitsTopWindowsInFixedShapes()
    {
        // [d_ff, min(K, B)] peaks, windows and positions every batch: no NonZero, If or floors; padding enters as 0.
        var bound = GraphInputs.Bind(OnnxGraph.Load(OwnModel())).Model;
        var sites = MlpSites.Find(bound, ["Relu"]);
        string stats = Path.Combine(TestCorpus.TempDir(), "stats.onnx"),
            dense = Path.Combine(TestCorpus.TempDir(), "exposed.onnx");
        var graph = Surgery.InstrumentStats(bound, sites, 0.05f, topExamples: K);
        Assert.That(
            graph.Graph.Node.Select(n => n.OpType),
            Has.None.AnyOf("If", "NonZero", "ScatterElements", "Loop"),
            "no data-dependent shapes"
        );
        Assert.That(graph.Graph.Input.Select(i => i.Name), Is.EquivalentTo(new[] { "input_ids", "attention_mask" }));
        OnnxGraph.Save(graph, stats);
        OnnxGraph.Save(Surgery.Instrument(bound, sites), dense);
        foreach (int windows in new[] { 8, 3 }) // more windows than K, and fewer
        {
            var ids = Enumerable.Range(0, windows * 16).Select(i => (long)(i * 37 % 256)).ToArray();
            var mask = Enumerable.Range(0, windows * 16).Select(i => i % 16 < 11 - i / 16 % 3 ? 1L : 0L).ToArray(); // window tails are padding
            var activations = OrtRunner.Run(dense, [("input_ids", ids, [windows, 16])]); // causal: padding at the tails changes no real token
            var outputs = OrtRunner.Run(
                stats,
                [("input_ids", ids, [windows, 16]), ("attention_mask", mask, [windows, 16])]
            );
            int k = Math.Min(K, windows);
            foreach (var site in sites)
            {
                float[] hidden = activations[site.Output].Floats!;
                var top = outputs[StatsReduction.TopWindowsOutput(site.Layer)].Longs!;
                var peaks = outputs[StatsReduction.TopValuesOutput(site.Layer)].Floats!;
                var at = outputs[StatsReduction.TopPositionsOutput(site.Layer)].Longs!;
                Assert.That(top, Has.Length.EqualTo(64 * k));
                for (int u = 0; u < 64; u++)
                {
                    // Each window's peak over its real tokens (0 when padding is all it has above 0), the first
                    // position of ties.
                    var peak = Enumerable
                        .Range(0, windows)
                        .Select(w =>
                            Enumerable
                                .Range(0, 16)
                                .Select(t => mask[w * 16 + t] == 1 ? hidden[(w * 16 + t) * 64 + u] : 0f)
                                .ToArray()
                        )
                        .ToArray();
                    var expected = Enumerable
                        .Range(0, windows)
                        .OrderByDescending(w => peak[w].Max())
                        .ThenBy(w => w)
                        .Take(k)
                        .ToArray();
                    Assert.That(
                        peaks[(u * k)..((u + 1) * k)],
                        Is.EqualTo(expected.Select(w => peak[w].Max()).ToArray()),
                        $"{windows} windows, layer {site.Layer} unit {u}: peaks"
                    );
                    Assert.That(
                        top[(u * k)..((u + 1) * k)],
                        Is.EqualTo(expected.Select(w => (long)w).ToArray()),
                        $"{windows} windows, layer {site.Layer} unit {u}: windows"
                    );
                    Assert.That(
                        at[(u * k)..((u + 1) * k)],
                        Is.EqualTo(expected.Select(w => (long)Array.IndexOf(peak[w], peak[w].Max())).ToArray()),
                        $"unit {u}: positions"
                    );
                }
            }
        }
        // The histogram: binned in the graph (a GPU) or its sample binned on the host (the CPU), alike and as Math.Log2
        // bins it.
        string sampled = Path.Combine(TestCorpus.TempDir(), "sampled.onnx");
        OnnxGraph.Save(Surgery.InstrumentStats(bound, sites, 0.05f, topExamples: K, histogramOnHost: true), sampled);
        var ids8 = Enumerable.Range(0, 4 * 16).Select(i => (long)(i * 41 % 256)).ToArray();
        var mask8 = Enumerable.Range(0, 4 * 16).Select(i => i % 16 < 13 ? 1L : 0L).ToArray();
        (string, long[], long[])[] batch = [("input_ids", ids8, [4, 16]), ("attention_mask", mask8, [4, 16])];
        var inGraph = OrtRunner.Run(stats, batch);
        var sample = OrtRunner.Run(sampled, batch);
        var first = OrtRunner.Run(dense, batch[..1]);
        foreach (var site in sites)
        {
            var onHost = new ActivationHistogram(64);
            onHost.AddDense(
                sample[StatsReduction.FirstWindowOutput(site.Layer)].Floats!,
                Enumerable.Repeat(true, 16).ToArray(),
                16,
                0.05f
            );
            var graphBins = new ActivationHistogram(64);
            graphBins.AddBinMajor(inGraph[StatsReduction.HistogramOutput(site.Layer)].Longs!);
            float[] hidden = first[site.Output].Floats!;
            for (int u = 0; u < 64; u++)
            {
                var expected = new long[ActivationHistogram.Bins];
                for (int t = 0; t < 13; t++)
                    if (hidden[t * 64 + u] > 0.05f)
                        expected[
                            Math.Clamp(
                                (int)Math.Floor(Math.Log2(hidden[t * 64 + u])) + 11,
                                0,
                                ActivationHistogram.Bins - 1
                            )
                        ]++;
                Assert.That(
                    graphBins.Of(u).ToArray(),
                    Is.EqualTo(expected),
                    $"layer {site.Layer} unit {u}: in the graph"
                );
                Assert.That(onHost.Of(u).ToArray(), Is.EqualTo(expected), $"layer {site.Layer} unit {u}: on the host");
            }
        }
    }

    [Test]
    public void ExternalOptGraphTopExamplesEqualABruteForce()
    {
        string graph = HookFixture.PathOf("opt.dynamo.onnx"),
            instrumented = Path.Combine(TestCorpus.TempDir(), "opt.instrumented.onnx");
        var (exit, _, error) = Cli.Run("instrument", "--model", graph, "--out", instrumented);
        Assert.That(exit, Is.EqualTo(0), error);
        var sites = MlpSites.Find(GraphInputs.Bind(OnnxGraph.Load(graph)).Model, ["Relu"]);
        var expected = BruteForce(
            instrumented,
            sites.Select(s => s.Output).ToList(),
            sites[0].DFf,
            HookFixture.Corpus,
            32,
            4
        );
        AssertEqualsBruteForce(
            Analyze(graph, HookFixture.Corpus, 32, 4, "--max-tokens", "100000"),
            expected,
            sites[0].DFf
        );
    }

    [Test]
    public void MergedShardsEqualTheSingleRunByteForByte()
    {
        string model = OwnModel(),
            corpus = Corpus();
        string single = Analyze(model, corpus, 12, 3);
        var shards = Enumerable.Range(0, 3).Select(i => Analyze(model, corpus, 12, 3, "--shard", $"{i}/3")).ToList();
        string merged = Path.Combine(TestCorpus.TempDir(), "merged");
        // Merged out of order: the merge is commutative.
        var (exit, _, error) = Cli.Run("merge", "--inputs", shards[2], shards[0], shards[1], "--out", merged);
        Assert.That(exit, Is.EqualTo(0), error);
        foreach (string file in Directory.GetFiles(single, "*.csv").Select(f => Path.GetFileName(f)))
            Assert.That(
                File.ReadAllBytes(Path.Combine(merged, file)),
                Is.EqualTo(File.ReadAllBytes(Path.Combine(single, file))),
                file
            );
        Assert.That(Directory.GetFiles(merged, "top_examples_*.csv"), Has.Length.EqualTo(2));
        // The shards do differ from the whole: each holds only its batches' examples.
        Assert.That(
            File.ReadAllText(Path.Combine(shards[0], "top_examples_0.csv")),
            Is.Not.EqualTo(File.ReadAllText(Path.Combine(single, "top_examples_0.csv")))
        );
    }

    [Test]
    public void MergeRefusesShardsOfADifferentK()
    {
        string model = OwnModel(),
            corpus = Corpus();
        string a = Analyze(model, corpus, 12, 3, "--shard", "0/2");
        string b = Path.Combine(TestCorpus.TempDir(), "b");
        Assert.That(
            Cli.Run(
                "analyze",
                "--model",
                model,
                "--corpus",
                corpus,
                "--tokenizer",
                "bytes",
                "--seq-len",
                "12",
                "--batch-size",
                "3",
                "--shard",
                "1/2",
                "--top-examples",
                "3",
                "--out",
                b
            ).Exit,
            Is.EqualTo(0)
        );
        var (exit, _, error) = Cli.Run("merge", "--inputs", a, b, "--out", Path.Combine(TestCorpus.TempDir(), "m"));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("top examples K differs"));
    }

    [Test]
    public void FoldersOfPerTokenExamplesAreRefusedNotMixed()
    {
        // Before top windows a folder held each unit's K largest token activations: reading one says so, and merge
        // never adds shards whose headers name different definitions.
        string model = OwnModel(),
            corpus = Corpus();
        string a = Analyze(model, corpus, 12, 3, "--shard", "0/2"),
            b = Analyze(model, corpus, 12, 3, "--shard", "1/2");
        Assert.That(
            File.ReadAllText(Path.Combine(a, "counts.json")),
            Does.Contain($"\"top_examples_format\": \"{UnitExamples.Format}\"")
        );
        string old = Path.Combine(TestCorpus.TempDir(), "old");
        Directory.CreateDirectory(old);
        File.WriteAllText(
            Path.Combine(old, UnitExamples.TopFile(0)),
            "unit,rank,value,document,position\n0,0,1.5,0,3\n"
        );
        var error = Assert.Throws<UserInputException>(() => UnitExamples.Load(old, K, [64]))!;
        Assert.That(
            error.Message,
            Does.Contain("holds top examples per token, from an earlier relu-sparsity")
                .And.Contain("re-run analyze --top-examples")
        );
        string counts = Path.Combine(b, "counts.json");
        File.WriteAllText(
            counts,
            File.ReadAllText(counts)
                .Replace($"\"top_examples_format\": \"{UnitExamples.Format}\"", "\"top_examples_format\": null")
        );
        var (exit, _, message) = Cli.Run("merge", "--inputs", a, b, "--out", Path.Combine(TestCorpus.TempDir(), "m"));
        Assert.That((exit, message), Is.EqualTo((2, message)));
        Assert.That(message, Does.Contain("top examples format differs"));
    }

    [Test]
    public void UnitCommandPrintsTheTopContextsAsText()
    {
        string corpus = Corpus();
        string analysis = Analyze(OwnModel(), corpus, 12, 3);
        var examples = UnitExamples.Load(analysis, K, [64, 64]);
        int unit = Enumerable.Range(0, 64).First(u => examples.Layers[1].Top.Of(u).Length == K);
        var best = examples.Layers[1].Top.Of(unit)[0];
        var (exit, output, error) = Cli.Run("unit", "--stats", analysis, "--layer", "1", "--unit", $"{unit}");
        Assert.That(exit, Is.EqualTo(0), error);
        // The firing byte, read back from the corpus by hand.
        char token = File.ReadLines(corpus).ElementAt((int)best.Document)[best.Position];
        Assert.That(output, Does.Contain($"Layer 1, unit {unit}: active on"));
        Assert.That(output, Does.Contain($"{best.Document, 6}:{best.Position, -6}"));
        Assert.That(output, Does.Contain($"[[{token}]]"));
        Assert.That(output.Split('\n').Count(l => l.Contains("[[")), Is.EqualTo(K));

        Assert.That(
            Cli.Run("unit", "--stats", analysis, "--layer", "2", "--unit", "0").Err,
            Does.Contain("layers 0..1")
        );
        string moved = Path.Combine(TestCorpus.TempDir(), "other.txt");
        File.WriteAllText(moved, File.ReadAllText(corpus) + "x");
        var (wrongExit, _, wrong) = Cli.Run(
            "unit",
            "--stats",
            analysis,
            "--layer",
            "0",
            "--unit",
            "0",
            "--corpus",
            moved
        );
        Assert.That((wrongExit, wrong), Is.EqualTo((2, wrong)));
        Assert.That(wrong, Does.Contain("is not the corpus the analysis read"));
    }

    [Test]
    public void TopExamplesRefuseWhatTheyCannotDo()
    {
        string model = OwnModel(),
            corpus = Corpus();
        string Err(params string[] extra) =>
            Cli.Run([
                .. new[]
                {
                    "analyze",
                    "--model",
                    model,
                    "--corpus",
                    corpus,
                    "--tokenizer",
                    "bytes",
                    "--seq-len",
                    "12",
                    "--batch-size",
                    "3",
                    "--out",
                    Path.Combine(TestCorpus.TempDir(), "o"),
                },
                .. extra,
            ]).Err;
        Assert.That(Err("--top-examples", "10001"), Does.Contain("exceeds 10,000 windows per unit"));
        Assert.That(Err("--top-examples", "5", "--threshold", "-1"), Does.Contain("must be ≥ 0"));
        string plain = Path.Combine(TestCorpus.TempDir(), "plain");
        Assert.That(
            Cli.Run(
                "analyze",
                "--model",
                model,
                "--corpus",
                corpus,
                "--tokenizer",
                "bytes",
                "--seq-len",
                "12",
                "--out",
                plain
            ).Exit,
            Is.EqualTo(0)
        );
        Assert.That(
            Cli.Run("unit", "--stats", plain, "--layer", "0", "--unit", "0").Err,
            Does.Contain("re-run analyze with --top-examples")
        );
    }

    [Test]
    public void DashboardOpensInHeadlessChromium()
    {
        string corpus = Corpus();
        string analysis = Analyze(OwnModel(), corpus, 12, 3);
        var (exit, output, error) = Cli.Run("report", "--in", analysis);
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("units.html"));
        string report = File.ReadAllText(Path.Combine(analysis, "report.md"));
        Assert.That(report, Does.Contain("## What fires the units").And.Contain("(units.html)"));
        string page = Path.Combine(analysis, "units.html");
        Assert.That(
            File.ReadAllText(page),
            Does.Not.Contain("http://").And.Not.Contain("https://"),
            "self-contained: nothing fetched"
        );

        // The names build/chromium.sh looks for, on PATH, so the browser it installs or finds is the one used here.
        string chromium = new[] { "chromium", "chromium-browser", "google-chrome" }
            .SelectMany(name =>
                (Environment.GetEnvironmentVariable("PATH") ?? "")
                    .Split(':', StringSplitOptions.RemoveEmptyEntries)
                    .Select(dir => Path.Combine(dir, name))
            )
            .FirstOrDefault(File.Exists)
            ?? throw new AssertionException(
                "Chromium is not installed (Debian: apt-get install chromium; `dotnet cake --target=Test` installs it): the dashboard cannot be checked in a browser."
            );
        string screenshot = Path.Combine(TestContext.CurrentContext.WorkDirectory, "units.png");
        string dom = Browser(chromium, $"--dump-dom file://{page}");
        Browser(chromium, $"--screenshot={screenshot} --window-size=1200,1400 file://{page}");
        // The script ran (it counts the units it shows) and a unit's strongest context is on the rendered page.
        var examples = UnitExamples.Load(analysis, K, [64, 64]);
        Assert.That(dom, Does.Match(@"id=""count""[^>]*>\d+ units?<"));
        Assert.That(dom, Does.Contain("Layer 0, unit"));
        var shown = System.Text.RegularExpressions.Regex.Match(dom, @"data-id=""0/(\d+)""").Groups[1].Value;
        var best = examples.Layers[0].Top.Of(int.Parse(shown))[0];
        string token = System.Net.WebUtility.HtmlEncode(
            File.ReadLines(corpus).ElementAt((int)best.Document)[best.Position].ToString()
        );
        Assert.That(dom, Does.Contain($"<mark>{token}</mark>"));
        Assert.That(new FileInfo(screenshot).Length, Is.GreaterThan(10_000), "a screenshot was drawn");
        TestContext.AddTestAttachment(screenshot);
    }

    static string Browser(string chromium, string arguments)
    {
        var start = new ProcessStartInfo(
            chromium,
            $"--headless --no-sandbox --disable-gpu --user-data-dir={TestCorpus.TempDir()} {arguments}"
        )
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.That(process.WaitForExit(120_000), Is.True, "Chromium finished within 2 minutes");
        Assert.That(process.ExitCode, Is.EqualTo(0), stderr.Result);
        return stdout.Result;
    }
}
