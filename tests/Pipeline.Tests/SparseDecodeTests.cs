using System.Globalization;
using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Exporting;
using Sparsity.Pipeline.Generation;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Tests;

/// <summary>sparse-decode: the rewrite over active units must give the dense graph's logits at every batch size and
/// sequence length.</summary>
[TestFixture]
public class SparseDecodeTests
{
    static string AnalyzeBytes(string model) => ExternalGraphTests.Analyze(model);

    static void AssertSameLogits(string dense, string sparse, long vocab)
    {
        var a = OnnxGraph.Load(dense);
        var b = OnnxGraph.Load(sparse);
        foreach (var (batch, seq) in new[] { (1, 1), (1, 13), (3, 9), (2, 32) })
        {
            var probe = ProbeBatch.Random(vocab, batch, seq, seed: 100 + batch * seq);
            Assert.That(
                GraphCheck.Logits(b, probe),
                Is.EqualTo(GraphCheck.Logits(a, probe)).Within(1e-4f),
                $"{batch} × {seq}"
            );
        }
    }

    [TestCase("opt.dynamo", false)] // Gemm on flattened tokens
    [TestCase("opt.torchscript", false)]
    [TestCase("gpt2.torchscript", false)] // Conv1D as Gemm
    [TestCase("llama.dynamo", true)] // gated: the up-projection is narrowed too
    [TestCase("llama.torchscript", true)]
    [TestCase("gpt_cache.dynamo", false)] // a cache graph: analysed and checked with an empty past
    public void IsExactOnExternalGraphs(string graph, bool gated)
    {
        string model = HookFixture.PathOf(graph + ".onnx");
        string stats = AnalyzeBytes(model);
        string path = Path.Combine(TestCorpus.TempDir(), "sparse.onnx");
        var (exit, output, error) = Cli.Run(
            "sparse-decode",
            "--model",
            model,
            "--stats",
            stats,
            "--break-even",
            "1",
            "--out",
            path
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(
            output,
            Does.Contain(gated ? "layer 1: sparse down- and up-projection" : "layer 1: sparse down-projection")
        );
        Assert.That(output, Does.Contain("Exact: max |Δ logits|"));
        var rewritten = OnnxGraph.Load(path);
        Assert.That(rewritten.Graph.Node.Count(n => n.OpType == "NonZero"), Is.EqualTo(2));
        Assert.That(rewritten.Graph.Node.Any(n => n.Name.Contains("sparse.0.up_matmul")), Is.EqualTo(gated));
        Assert.That(
            File.ReadAllText(MlpSidecar.PathFor(path)),
            Does.Contain("\"layer\": 1"),
            "the sidecar describes both sites"
        );
        AssertSameLogits(model, path, 256);
    }

    [Test]
    public void ChoosesLayersByMeasuredActivityAndWritesAModelCard()
    {
        // The OPT fixture's layers are 0.27 and 0.12 active: a break-even of 0.2 rewrites layer 1 only.
        string model = HookFixture.PathOf("opt.dynamo.onnx");
        string stats = AnalyzeBytes(model);
        var fractions = SparsityStats.Load(stats).Layers.Select(l => l.NonzeroFraction).ToArray();
        Assert.That(fractions[0], Is.GreaterThan(0.2));
        Assert.That(fractions[1], Is.LessThan(0.2));
        string dir = Path.Combine(TestCorpus.TempDir(), "variant");
        var (exit, output, error) = Cli.Run(
            "sparse-decode",
            "--model",
            model,
            "--stats",
            stats,
            "--break-even",
            "0.2",
            "--out",
            dir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("layer 0: dense").And.Contain("layer 1: sparse down-projection"));
        Assert.That(
            Directory.GetFiles(dir).Select(Path.GetFileName).Order(),
            Is.EqualTo(new[] { ".relu-sparsity-output.json", "MODEL_CARD.md", "model.mlp.json", "model.onnx" })
        );
        string card = File.ReadAllText(Path.Combine(dir, "MODEL_CARD.md"));
        Assert.That(
            card,
            Does.Contain("| 0 | ")
                .And.Contain("kept dense")
                .And.Contain("active units only")
                .And.Contain("Checked in ONNX Runtime")
        );
        Assert.That(
            OnnxGraph.Load(Path.Combine(dir, "model.onnx")).Graph.Node.Count(n => n.OpType == "NonZero"),
            Is.EqualTo(1)
        );

        (exit, _, error) = Cli.Run(
            "sparse-decode",
            "--model",
            model,
            "--stats",
            stats,
            "--break-even",
            "0.05",
            "--out",
            Path.Combine(TestCorpus.TempDir(), "none.onnx")
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("No layer is below the break-even of 5.00 % active units"));
    }

    // A Hugging Face Llama (gated MLP) exported with its cache, and the folder of its analysis.
    static (string Model, string Analysis) LlamaWithPastAnalyzed()
    {
        string folder = CheckpointReference.Folder("llama");
        string dense = Path.Combine(TestCorpus.TempDir(), "past.onnx");
        CheckedExport.Run(new Pipeline.Exporting.ExportRequest(folder, dense, WithPast: true));
        string an = Path.Combine(TestCorpus.TempDir(), "an");
        var (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            dense,
            "--corpus",
            CheckpointReference.Ids("llama"),
            "--tokenizer",
            "ids",
            "--seq-len",
            "32",
            "--out",
            an
        );
        Assert.That(exit, Is.EqualTo(0), error);
        return (dense, an);
    }

    [Test]
    public void AHuggingFaceLlamaWithACacheGeneratesTheSameTokensSparse()
    {
        var (dense, an) = LlamaWithPastAnalyzed();
        string sparse = Path.Combine(TestCorpus.TempDir(), "sparse.onnx");
        var (exit, _, error) = Cli.Run(
            "sparse-decode",
            "--model",
            dense,
            "--stats",
            Path.Combine(an, SparsityStats.FileName),
            "--break-even",
            "0.5",
            "--out",
            sparse
        );
        Assert.That(exit, Is.EqualTo(0), error);
        AssertSameLogits(dense, sparse, 1000);
        int[] prompt =
        [
            .. File.ReadAllLines(CheckpointReference.Ids("llama"))[2].Split(' ').Take(10).Select(int.Parse),
        ];
        using var a = new Generator(OnnxGraph.Load(dense));
        using var b = new Generator(OnnxGraph.Load(sparse));
        Assert.That(b.UsesCache, Is.True);
        Assert.That(b.Generate(prompt, 40).ToList(), Is.EqualTo(a.Generate(prompt, 40).ToList()));
    }

    // sparse-decode --device cuda on a model with a cache, as written by the command; returns its path.
    static string FixedShape(string model, string stats, string breakEven = "1")
    {
        string path = Path.Combine(TestCorpus.TempDir(), "fixed.onnx");
        var (exit, output, error) = Cli.Run(
            "sparse-decode",
            "--model",
            model,
            "--stats",
            stats,
            "--break-even",
            breakEven,
            "--device",
            "cuda",
            "--out",
            path
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("with the capacities and with capacity 1"));
        return path;
    }

    static List<float[]> StepLogits(Onnx.ModelProto model, IReadOnlyList<int> tokens, out Generator used)
    {
        used = new Generator(model);
        return used.StepLogits(tokens).ToList();
    }

    [Test]
    public void TheFixedShapeFormFlagsExactlyTheStepsWhereMoreUnitsFireThanItsCapacity()
    {
        // The first window of the held-out text decoded one byte at a time from an empty cache: position t sees what
        // the hooks saw at position t, so layer L overflows capacity c exactly where PyTorch counted more than c.
        string model = HookFixture.PathOf("gpt_cache.dynamo.onnx");
        var hooks = HookFixture.Load("gpt_cache");
        int[] window = [.. System.Text.Encoding.UTF8.GetBytes(File.ReadLines(HookFixture.Corpus).First()).Take(32)];
        string stats = AnalyzeBytes(model);
        var fixedShape = OnnxGraph.Load(FixedShape(model, stats));
        Assert.That(fixedShape.Graph.Node.Count(n => n.OpType == "NonZero"), Is.EqualTo(0));
        Assert.That(fixedShape.Graph.Node.Count(n => n.OpType == "TopK"), Is.EqualTo(2));
        // Capacity: the 0.999 quantile (nearest rank) of the hooks' units per token, rounded up to 32: max 140 → 160.
        var written = SparseDecode.Capacities(fixedShape);
        for (int l = 0; l < 2; l++)
        {
            var sorted = hooks.Layers[l].UnitsPerToken.Order().ToArray();
            int quantile = sorted[(int)Math.Ceiling(0.999 * sorted.Length) - 1];
            Assert.That(written[l], Is.EqualTo((l, (long)(quantile + 31) / 32 * 32, 256L)), $"layer {l}");
        }

        var expected = StepLogits(OnnxGraph.Load(model), window, out var dense);
        dense.Dispose();
        // Layer 0 is flagged exactly where the hooks counted more than the capacity. Layer 1 has units within rounding
        // of zero: decoding with a cache (logits within 2.4e-6 of the whole window's) counts up to two more or fewer
        // at some positions than the hooks' whole window, so there the flags only have to fall as the capacity rises.
        long previous = long.MaxValue;
        foreach (int c in new[] { 1, 40, 60, 75, 90, 109, 120, 256 })
        {
            var steps = StepLogits(SparseDecode.WithCapacity(fixedShape, (_, _) => c), window, out var g);
            using (g)
            {
                Assert.That(
                    g.Overflows[0],
                    Is.EqualTo(hooks.Layers[0].UnitsPerToken.Take(32).Count(n => n > c)),
                    $"capacity {c}"
                );
                Assert.That(g.Overflows[1], Is.LessThanOrEqualTo(previous), $"capacity {c}");
                previous = g.Overflows[1];
                Assert.That(g.RecomputedSteps, Is.InRange(g.Overflows.Max(), Math.Min(32, g.Overflows.Sum())));
                Assert.That(g.SparseSteps, Is.EqualTo(32));
                if (c == 1)
                    Assert.That((g.Overflows, g.RecomputedSteps), Is.EqualTo((new long[] { 32, 32 }, 32L)));
                if (c == 256)
                    Assert.That((g.Overflows, g.RecomputedSteps), Is.EqualTo((new long[] { 0, 0 }, 0L)));
                for (int t = 0; t < 32; t++)
                    Assert.That(steps[t], Is.EqualTo(expected[t]).Within(1e-4f), $"capacity {c}, step {t}");
            }
        }
    }

    [Test]
    public void AHalfPrecisionModelIsAnalysedAndDecodesInTheFixedShapeFormAsDensely()
    {
        // The GPU benchmark's models are torch.onnx exports in fp16: weights gathered as fp16 rows, activity compared
        // in fp16. Decoded one byte at a time, every step's logits equal the fp16 model's own within fp16 rounding.
        string half = Path.Combine(TestCorpus.TempDir(), "half.onnx");
        var converted = Float16.Convert(OnnxGraph.Load(HookFixture.PathOf("gpt_cache.dynamo.onnx")));
        const int fp16 = (int)Onnx.TensorProto.Types.DataType.Float16;
        foreach (var value in converted.Graph.Input.Concat(converted.Graph.Output))
            if (value.Name.StartsWith("past_key_values.") || value.Name.StartsWith("present."))
                value.Type.TensorType.ElemType = fp16; // the cache as exported, and not cast back to float32
        foreach (var cast in converted.Graph.Node.Where(n => n.OpType == "Cast" && n.Output[0].StartsWith("present.")))
            cast.Attribute.Single(a => a.Name == "to").I = fp16;
        OnnxGraph.Save(converted, half);
        string stats = AnalyzeBytes(half);
        var fixedShape = OnnxGraph.Load(FixedShape(half, stats));
        Assert.That(
            fixedShape.Graph.Initializer.Where(t => t.Dims.Count == 2).Select(t => t.DataType).Distinct(),
            Is.EqualTo(new[] { (int)Onnx.TensorProto.Types.DataType.Float16 }),
            "every weight matrix stays fp16"
        );
        int[] window = [.. System.Text.Encoding.UTF8.GetBytes(File.ReadLines(HookFixture.Corpus).First()).Take(32)];
        var expected = StepLogits(OnnxGraph.Load(half), window, out var dense);
        dense.Dispose();
        var steps = StepLogits(fixedShape, window, out var g);
        using (g)
        {
            Assert.That(g.SparseSteps, Is.EqualTo(32));
            Assert.That(g.RecomputedSteps, Is.LessThan(32));
            float scale = expected.Max(r => r.Max(Math.Abs));
            for (int t = 0; t < 32; t++)
                Assert.That(steps[t], Is.EqualTo(expected[t]).Within(GraphCheck.HalfTolerance * scale), $"step {t}");
        }
    }

    [Test]
    public void AGatedLlamaDecodesTheSameTokensInTheFixedShapeFormWhateverItsCapacities()
    {
        var (dense, an) = LlamaWithPastAnalyzed();
        var fixedShape = OnnxGraph.Load(FixedShape(dense, Path.Combine(an, SparsityStats.FileName)));
        Assert.That(fixedShape.Graph.Node.Count(n => n.Name.Contains("up_matmul")), Is.GreaterThan(0), "gated");
        int[] prompt =
        [
            .. File.ReadAllLines(CheckpointReference.Ids("llama"))[2].Split(' ').Take(10).Select(int.Parse),
        ];
        using var reference = new Generator(OnnxGraph.Load(dense));
        var tokens = reference.Generate(prompt, 30).ToList();
        foreach (int c in new[] { 1, 8, int.MaxValue })
        {
            using var g = new Generator(SparseDecode.WithCapacity(fixedShape, (_, units) => Math.Min(c, units)));
            Assert.That(g.Generate(prompt, 30).ToList(), Is.EqualTo(tokens), $"capacity {c}");
            Assert.That(g.SparseSteps, Is.EqualTo(29), "the prompt runs dense; each new token but the last is a step");
            if (c == 1)
                Assert.That(g.RecomputedSteps, Is.EqualTo(29));
            if (c == int.MaxValue)
                Assert.That(g.RecomputedSteps, Is.EqualTo(0));
        }
    }

    [Test]
    public void DecodeBenchProfilesEachModelsSingleTokenSteps()
    {
        string model = HookFixture.PathOf("gpt_cache.dynamo.onnx");
        string dir = Path.Combine(TestCorpus.TempDir(), "profiled");
        var (exit, output, error) = Cli.Run(
            "decode-bench",
            "--model",
            $"dense={model}",
            "--corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--prompt-tokens",
            "8",
            "--new-tokens",
            "4",
            "--threads",
            "1",
            "--runs",
            "1",
            "--profile",
            "--out",
            dir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        // 33 runs profiled: the prompt's, skipped, then 32 single-token steps; the fixture's two MLPs each end in a
        // MatMul of the hidden layer, which ONNX Runtime keeps.
        Assert.That(output, Does.Contain("Profile of 32 runs after the warm-up"));
        var rows = File.ReadAllLines(Path.Combine(dir, "profile-0.csv"));
        Assert.That(rows[0], Is.EqualTo("op_type,ms_per_run,share,nodes,providers"));
        var relu = rows.Single(r => r.StartsWith("Relu,")).Split(',');
        Assert.That((relu[3], relu[4]), Is.EqualTo(("2", "CPU")), "one ReLU per layer, on the CPU provider");
        Assert.That(
            rows.Skip(1).Sum(r => double.Parse(r.Split(',')[2], CultureInfo.InvariantCulture)),
            Is.EqualTo(1).Within(1e-3)
        );
        Assert.That(Directory.GetFiles(dir, "ort-profile*"), Is.Empty, "ONNX Runtime's own JSON is removed");
    }

    [Test]
    public void DecodeBenchCountsEachLayersOverflowsOfTheFixedShapeForm()
    {
        string model = HookFixture.PathOf("gpt_cache.dynamo.onnx");
        string fixedPath = FixedShape(model, AnalyzeBytes(model));
        string tight = Path.Combine(TestCorpus.TempDir(), "tight.onnx");
        OnnxGraph.Save(SparseDecode.WithCapacity(OnnxGraph.Load(fixedPath), (_, _) => 1), tight);
        string dir = Path.Combine(TestCorpus.TempDir(), "bench");
        var (exit, _, error) = Cli.Run(
            "decode-bench",
            "--model",
            $"dense={model}",
            "--model",
            $"fixed={fixedPath}",
            "--model",
            $"capacity 1={tight}",
            "--corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--prompt-tokens",
            "16",
            "--new-tokens",
            "24",
            "--threads",
            "1",
            "--runs",
            "2",
            "--out",
            dir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        string md = File.ReadAllText(Path.Combine(dir, "decode.md"));
        Assert.That(md.Split('\n').Count(l => l.StartsWith("| ") && l.EndsWith("| yes |")), Is.EqualTo(3), md);
        // Three generations (a warm-up and two runs) of 24 tokens: 23 single-token steps each.
        Assert.That(md, Does.Contain("capacity 1, 1 thread(s): 69 of 69 single-token steps recomputed densely"));
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "decode.json")));
        var timings = json.RootElement.GetProperty("timings").EnumerateArray().ToList();
        Assert.That(timings[0].TryGetProperty("sparse_steps", out _), Is.False, "a dense graph has no steps to count");
        Assert.That(timings[1].GetProperty("sparse_steps").GetInt64(), Is.EqualTo(69));
        Assert.That(
            timings[2].GetProperty("overflows").EnumerateArray().Select(o => o.GetProperty("steps").GetInt64()),
            Is.EqualTo(new[] { 69L, 69L })
        );
    }
}
