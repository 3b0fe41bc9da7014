using NUnit.Framework;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Streaming;

namespace Sparsity.Tests;

/// <summary>
/// Golden metric values of a fixed model on a fixed corpus: the opt_gemm torch.onnx fixture (weights fixed
/// in the file) on its 30 committed token ids. Any change in windowing, padding, counting or the summary
/// math fails here. Tolerances: counts are integers and must match exactly; derived means are compared
/// to 1e-12 (they are ratios of those integers). That is safe across CPUs because no ReLU input of this
/// fixture lies within 1e-4 of zero (asserted below), far above float32 rounding differences.
/// </summary>
[TestFixture]
public class RegressionTests
{
    static SparsityStats Analyze()
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "golden");
        return Analyzer.Run(
            new AnalysisRequest
            {
                Model = Fixture.PathOf("opt_gemm.onnx"),
                Corpus = Fixture.PathOf("opt_gemm.ids.txt"),
                Tokenizer = TokenizerSpec.Parse("ids"),
                SeqLen = 10,
                BatchSize = 3,
                Threads = 2,
                OutDir = outDir,
            }
        );
    }

    [Test]
    public void GoldenValuesOfTheFixedFixture()
    {
        // Expected values come from the fixture's forward-hook file, computed here by hand from its integer lists.
        var fixture = Fixture.Load("opt_gemm");
        var s = Analyze();
        Assert.That(
            (s.Tokens, s.Sequences, s.Batches),
            Is.EqualTo(((long)fixture.Batch * fixture.Seq, (long)fixture.Batch, 1L))
        );
        for (int l = 0; l < fixture.Layers.Length; l++)
        {
            var hook = fixture.Layers[l];
            var layer = s.Layers[l];
            double mean = hook.UnitsPerToken.Average();
            double std = Math.Sqrt(hook.UnitsPerToken.Average(u => (u - mean) * (u - mean))); // population
            int everActive = hook.TokensPerUnit.Count(c => c > 0);
            Assert.That(
                layer.NonzeroFraction,
                Is.EqualTo((double)hook.UnitsPerToken.Sum() / (s.Tokens * hook.DFf)).Within(1e-12),
                $"layer {l}"
            );
            Assert.That(layer.PerTokenUnitsMean, Is.EqualTo(mean).Within(1e-12));
            Assert.That(layer.PerSequenceUnitsMean, Is.EqualTo(hook.UnitsPerSequence.Average()).Within(1e-12));
            Assert.That(layer.PerBatchUnitsMean, Is.EqualTo((double)everActive), "one batch: the units active in it");
            Assert.That((layer.UnitsEverActive, layer.DeadUnits), Is.EqualTo((everActive, hook.DFf - everActive)));
            Assert.That(layer.PerTokenUnits.StandardDeviation, Is.EqualTo(std).Within(1e-9));
        }
    }

    [TestCase("opt.torchscript")]
    [TestCase("llama.dynamo")]
    public void GoldenCountsWithPaddingAndSeveralBatches(string graph)
    {
        // 1,959 tokens in 72 windows (padded ends) and 18 batches of 4 (the last partly filled): every integer count
        // exactly as the hooks saw it.
        var fixture = HookFixture.Load(graph.Split('.')[0]);
        string outDir = Path.Combine(TestCorpus.TempDir(), "golden");
        var counts = SparsityCounts.Load(RunAnalysis(HookFixture.PathOf(graph + ".onnx"), outDir));
        for (int l = 0; l < fixture.Layers.Length; l++)
        {
            var hook = fixture.Layers[l];
            var expected = new LayerUnitUse(hook.DFf);
            expected.AddBatch(hook.UnitsPerToken, hook.UnitsPerSequence, hook.TokensPerUnit);
            Assert.That(counts.Layers[l].TokensPerUnit, Is.EqualTo(hook.TokensPerUnit), $"layer {l} per unit");
            Assert.That(
                counts.Layers[l].UnitsPerTokenHistogram,
                Is.EqualTo(expected.UnitsPerTokenHistogram.ToArray()),
                $"layer {l} per token"
            );
            Assert.That(
                counts.Layers[l].UnitsPerSequenceHistogram,
                Is.EqualTo(expected.UnitsPerSequenceHistogram.ToArray()),
                $"layer {l} per sequence"
            );
            var perBatch = new long[hook.DFf + 1];
            foreach (int u in hook.UnitsPerBatch)
                perBatch[u]++;
            Assert.That(
                counts.Layers[l].UnitsPerBatchHistogram,
                Is.EqualTo(perBatch),
                $"layer {l} per batch ({hook.UnitsPerBatch.Length} batches)"
            );
        }
    }

    [TestCase("opt.torchscript")]
    [TestCase("llama.dynamo")]
    public void NoReluInputOfTheGoldenBatchesIsNearZero(string graph)
    {
        // Why exact counts hold across CPUs: every pre-activation on a real token is 0 exactly (a dead unit's zeroed
        // weights) or at least 1e-6 away from it (measured: 1.2e-6 for OPT, 3.1e-6 for Llama), above the float32
        // differences between kernels for these 64-term dot products; the counts also equal PyTorch's, computed on
        // another CPU (Xeon, MKL).
        var model = OnnxGraph.Load(HookFixture.PathOf(graph + ".onnx"));
        var inputs = model.Graph.Node.Where(n => n.OpType == "Relu").Select(n => n.Input[0]).ToList();
        foreach (string input in inputs)
            model.Graph.Output.Add(new ValueInfoProto { Name = input });
        string path = Path.Combine(TestCorpus.TempDir(), "preactivations.onnx");
        OnnxGraph.Save(model, path);
        var bytes = Corpora.TextTokenizer.FromSpec("bytes");
        var documents = File.ReadLines(HookFixture.Corpus).Select(d => bytes.Encode(d).Select(i => (long)i).ToArray());
        float smallest = float.MaxValue;
        foreach (var batch in CorpusBatches.Pack(documents, 32, 4, null, 0, 1, 256))
        {
            var outputs = OrtRunner.Run(
                path,
                ("input_ids", batch.InputIds, [4, 32]),
                ("attention_mask", batch.AttentionMask, [4, 32])
            );
            foreach (string input in inputs)
            {
                float[] values = outputs[input].Floats!;
                int dFf = values.Length / batch.InputIds.Length;
                for (int p = 0; p < batch.InputIds.Length; p++)
                    if (batch.AttentionMask[p] == 1)
                        for (int u = 0; u < dFf; u++)
                            if (values[p * dFf + u] != 0)
                                smallest = Math.Min(smallest, Math.Abs(values[p * dFf + u]));
            }
        }
        Assert.That(smallest, Is.GreaterThan(1e-6f));
    }

    static string RunAnalysis(string model, string outDir)
    {
        Analyzer.Run(
            new AnalysisRequest
            {
                Model = model,
                Corpus = HookFixture.Corpus,
                Tokenizer = TokenizerSpec.Bytes,
                SeqLen = 32,
                BatchSize = 4,
                Threads = 2,
                OutDir = outDir,
            }
        );
        return outDir;
    }

    [Test]
    public void NoReluInputOfTheFixtureIsNearZero()
    {
        var model = OnnxGraph.Load(Fixture.PathOf("opt_gemm.onnx"));
        var relus = model.Graph.Node.Where(n => n.OpType == "Relu").Select(n => n.Input[0]).ToList();
        foreach (string input in relus)
            model.Graph.Output.Add(OnnxGraph.Value(input, TensorProto.Types.DataType.Float, "tokens", 128));
        string path = Path.Combine(TestCorpus.TempDir(), "preactivations.onnx");
        OnnxGraph.Save(model, path);
        var fixture = Fixture.Load("opt_gemm");
        var outputs = OrtRunner.Run(path, ("input_ids", fixture.InputIds, new long[] { fixture.Batch, fixture.Seq }));
        foreach (string input in relus)
            Assert.That(outputs[input].Floats!.Min(v => Math.Abs(v)), Is.GreaterThan(1e-4f), input);
    }

    [Test]
    public void CheckPassesOnItselfAndNamesEachDeviation()
    {
        var stats = Analyze();
        Assert.That(SparsityCheck.Compare(stats, stats), Is.Empty);

        var shifted = stats with
        {
            Layers =
            [
                stats.Layers[0] with
                {
                    NonzeroFraction = stats.Layers[0].NonzeroFraction + 0.02,
                    DeadUnits = 25,
                },
                stats.Layers[1],
            ],
        };
        var deviations = SparsityCheck.Compare(stats, shifted);
        Assert.That(
            deviations.Select(d => (d.Layer, d.Metric)),
            Is.EquivalentTo(new[] { (0, "nonzero_fraction"), (0, "dead_units") })
        );
        Assert.That(
            deviations.First(d => d.Metric == "dead_units").ToString(),
            Is.EqualTo("layer 0 dead_units: 19 vs baseline 25 (difference -6, tolerance ±1.28)")
        );
        Assert.That(
            SparsityCheck.Compare(
                stats,
                shifted,
                new Dictionary<string, double> { ["nonzero_fraction"] = 0.05, ["dead_units"] = 6 }
            ),
            Is.Empty
        );
        Assert.Throws<UserInputException>(() => SparsityCheck.Compare(stats, stats with { BatchSize = 8 }));
        Assert.Throws<UserInputException>(() =>
            SparsityCheck.Compare(stats, stats, new Dictionary<string, double> { ["nonzero"] = 1 })
        );
    }

    [Test]
    public void TheNUnitConstraintPassesWithinToleranceAndNamesEachMetricLayerValueAndLimit()
    {
        var stats = Analyze();
        Assert.That(stats, Sparsity.Checks.Is.WithinSparsityTolerance(stats));
        string dir = Path.Combine(TestCorpus.TempDir(), "analysis");
        Directory.CreateDirectory(dir);
        File.WriteAllText(
            Path.Combine(dir, SparsityStats.FileName),
            System.Text.Json.JsonSerializer.Serialize(stats, ProjectJson.Options)
        );
        Assert.That(
            dir,
            Sparsity.Checks.Is.WithinSparsityTolerance(Path.Combine(dir, SparsityStats.FileName)),
            "a folder and a stats.json path"
        );

        var shifted = stats with
        {
            Layers =
            [
                stats.Layers[0] with
                {
                    NonzeroFraction = stats.Layers[0].NonzeroFraction + 0.02,
                },
                stats.Layers[1],
            ],
        };
        Assert.That(stats, Sparsity.Checks.Is.WithinSparsityTolerance(shifted).For("nonzero_fraction", 0.025));
        var failure = Assert.Throws<AssertionException>(() =>
            Assert.That(stats, Sparsity.Checks.Is.WithinSparsityTolerance(shifted).For("nonzero_fraction", 0.01))
        )!;
        Assert.That(failure.Message, Does.Contain("1 sparsity metric(s) outside tolerance of the baseline:"));
        Assert.That(failure.Message, Does.Contain(SparsityCheck.Compare(stats, shifted).Single().ToString()));
        Assert.That(failure.Message, Does.Contain("layer 0 nonzero_fraction: ").And.Contain("tolerance ±0.01"));
        Assert.Throws<ArgumentException>(() => Sparsity.Checks.Is.WithinSparsityTolerance(stats).For("nonzero", 0.1));
    }

    [Test]
    public void CheckCommandExitsOneOnDeviationsAndZeroWithin()
    {
        var stats = Analyze();
        string dir = TestCorpus.TempDir();
        string current = Path.Combine(dir, "stats.json"),
            baseline = Path.Combine(dir, "baseline.json");
        File.WriteAllText(current, System.Text.Json.JsonSerializer.Serialize(stats, ProjectJson.Options));
        File.WriteAllText(
            baseline,
            System.Text.Json.JsonSerializer.Serialize(
                stats with
                {
                    Layers = [stats.Layers[0], stats.Layers[1] with { PerTokenUnitsMean = 60 }],
                },
                ProjectJson.Options
            )
        );

        var (exit, output, _) = Cli.Run("check", "--stats", current, "--baseline", baseline);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(output, Does.Contain("FAIL layer 1 per_token_units_mean: 54.1333 vs baseline 60"));
        (exit, output, _) = Cli.Run(
            "check",
            "--stats",
            current,
            "--baseline",
            baseline,
            "--tolerance",
            "per_token_units_mean=6"
        );
        Assert.That(exit, Is.EqualTo(0), output);
        (exit, _, var error) = Cli.Run("check", "--stats", current, "--baseline", Path.Combine(dir, "missing.json"));
        Assert.That(
            (exit, error.Trim()),
            Is.EqualTo((2, $"error: {Path.Combine(dir, "missing.json")} does not exist (run `analyze` first)."))
        );
    }
}
