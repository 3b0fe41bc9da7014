using System.Text.Json;
using NUnit.Framework;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline;
using Sparsity.Pipeline.Runtime;
using Sparsity.Training;

namespace Sparsity.Tests;

/// <summary>Reference statistics from PyTorch forward hooks on the external fixtures
/// (tests/fixtures/external/make_fixtures.py).</summary>
public sealed record HookLayer(
    int DFf,
    int[] UnitsPerToken,
    int[] UnitsPerSequence,
    int[] UnitsPerBatch,
    long[] TokensPerUnit,
    double NonzeroFraction,
    double UnitsPerTokenMean,
    int DeadUnits
);

public sealed record HookProbe(long[] InputIds, int[] Shape, float[] Logits);

public sealed record HookFixture(
    string Family,
    string ModelClass,
    Dictionary<string, string> Exports,
    int SeqLen,
    int BatchSize,
    long Tokens,
    int Vocab,
    int DFf,
    HookProbe Probe,
    HookLayer[] Layers
)
{
    static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static HookFixture Load(string family) =>
        JsonSerializer.Deserialize<HookFixture>(File.ReadAllText(PathOf(family + ".json")), Options)!;

    public static string PathOf(string file) =>
        Path.Combine(TestContext.CurrentContext.TestDirectory, "external", file);

    public static string Corpus => PathOf("heldout.txt");
}

/// <summary>
/// Graphs from torch 2.11's exporters (dynamo and TorchScript) of OPT, GPT-2, Llama (gated MLP), a decoder with a
/// key/value cache and BERT, trained on Brown text: every command must reproduce PyTorch's numbers or refuse.
/// </summary>
[TestFixture]
public class ExternalGraphTests
{
    // Every graph the fixture script wrote, by family.
    static readonly string[] Graphs =
    [
        "opt.torchscript",
        "opt.dynamo",
        "opt.ext",
        "gpt2.torchscript",
        "gpt2.dynamo",
        "llama.torchscript",
        "llama.dynamo",
        "gpt_cache.torchscript",
        "gpt_cache.dynamo",
        "bert.torchscript",
        "bert.dynamo",
    ];
    static readonly string[] Decoders = Graphs.Where(g => !g.StartsWith("bert")).ToArray();

    static string Family(string graph) => graph.Split('.')[0];

    static string Model(string graph) => HookFixture.PathOf(graph + ".onnx");

    /// <summary>analyze on the fixture text as the hook statistics were computed (bytes, windows of 32, batches of 4);
    /// returns stats.json.</summary>
    internal static string Analyze(string model, params string[] extra)
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, _, error) = Cli.Run([
            .. new[]
            {
                "analyze",
                "--model",
                model,
                "--corpus",
                HookFixture.Corpus,
                "--tokenizer",
                "bytes",
                "--seq-len",
                "32",
                "--batch-size",
                "4",
                "--threads",
                "2",
                "--out",
                outDir,
            },
            .. extra,
        ]);
        Assert.That(exit, Is.EqualTo(0), error);
        return Path.Combine(outDir, SparsityStats.FileName);
    }

    [TestCaseSource(nameof(Graphs))]
    public void OnnxRuntimeGivesPyTorchsLogits(string graph)
    {
        var fixture = HookFixture.Load(Family(graph));
        Assert.That(
            fixture.Exports[graph.EndsWith(".ext") ? "dynamo_external_data" : graph.Split('.')[1]],
            Is.EqualTo("ok")
        );
        var probe = new ProbeBatch(
            fixture.Probe.InputIds,
            Enumerable.Repeat(1L, fixture.Probe.InputIds.Length).ToArray(),
            fixture.Probe.Shape[0],
            fixture.Probe.Shape[1]
        );
        float[] logits = GraphCheck.Logits(OnnxGraph.Load(Model(graph)), probe);
        Assert.That(logits, Is.EqualTo(fixture.Probe.Logits).Within(1e-4f));
    }

    [TestCaseSource(nameof(Graphs))]
    public void AnalyzeReproducesTheHookStatistics(string graph)
    {
        var fixture = HookFixture.Load(Family(graph));
        foreach (var mode in new[] { Array.Empty<string>(), ["--dense-activations"] })
        {
            var stats = SparsityStats.Load(Analyze(Model(graph), mode));
            Assert.That(stats.Tokens, Is.EqualTo(fixture.Tokens));
            Assert.That(stats.Layers, Has.Count.EqualTo(fixture.Layers.Length));
            for (int l = 0; l < fixture.Layers.Length; l++)
            {
                var expected = fixture.Layers[l];
                var actual = stats.Layers[l];
                string what = $"{graph} layer {l} {string.Join(' ', mode)}";
                Assert.That(actual.DFf, Is.EqualTo(expected.DFf), what);
                Assert.That(actual.NonzeroFraction, Is.EqualTo(expected.NonzeroFraction).Within(1e-4), what);
                Assert.That(actual.PerTokenUnitsMean, Is.EqualTo(expected.UnitsPerTokenMean).Within(0.05), what);
                Assert.That(
                    actual.PerSequenceUnitsMean,
                    Is.EqualTo(expected.UnitsPerSequence.Average()).Within(0.05),
                    what
                );
                Assert.That(actual.DeadUnits, Is.EqualTo(expected.DeadUnits), what);
            }
        }
    }

    [Test]
    public void MaxTokensCutsTheStreamWhereTheHooksSayItShould()
    {
        // A causal model's first 500 tokens are computed as in the full run: the hooks' first 500 per-token counts are
        // the truth.
        var fixture = HookFixture.Load("opt");
        var stats = SparsityStats.Load(Analyze(Model("opt.dynamo"), "--max-tokens", "500"));
        Assert.That((stats.Tokens, stats.MaxTokens), Is.EqualTo((500L, (long?)500)));
        for (int l = 0; l < 2; l++)
            Assert.That(
                stats.Layers[l].NonzeroFraction,
                Is.EqualTo(fixture.Layers[l].UnitsPerToken.Take(500).Sum() / (500.0 * 256)).Within(1e-12),
                $"layer {l}"
            );
    }

    [TestCase("opt.dynamo", "Gemm", "tokens_dff", false)]
    [TestCase("gpt2.dynamo", "Gemm", "tokens_dff", false)]
    [TestCase("gpt2.torchscript", "Gemm", "tokens_dff", false)]
    [TestCase("llama.dynamo", "MatMul", "batch_seq_dff", true)]
    [TestCase("llama.torchscript", "MatMul", "batch_seq_dff", true)]
    [TestCase("gpt_cache.dynamo", "MatMul", "batch_seq_dff", false)]
    public void FindsPlainAndGatedMlps(string graph, string op, string layout, bool gated)
    {
        var model = OnnxGraph.Load(Model(graph));
        var sites = MlpSites.Find(model);
        Assert.That(sites, Has.Count.EqualTo(2));
        foreach (var s in sites)
        {
            Assert.That((s.Up.Op, s.Down.Op, s.DFf, s.Layout), Is.EqualTo((op, op, 256, layout)));
            Assert.That(s.Gate != null, Is.EqualTo(gated));
            var activation = model.Graph.Node.Single(n => n.Name == s.Node);
            // Gated: the units are relu(gate), the activation's own output, not the product with up.
            if (gated)
                Assert.That(s.Output, Is.EqualTo(activation.Output[0]));
        }
    }

    [TestCaseSource(nameof(Graphs))]
    public void PruningAndTopKWriteGraphsThatRunAndAreExactWhereTheyMustBe(string graph)
    {
        string stats = Analyze(Model(graph));
        string dir = TestCorpus.TempDir();
        var (exit, output, error) = Cli.Run(
            "prune",
            "--model",
            Model(graph),
            "--stats",
            stats,
            "--dead-only",
            "--out",
            Path.Combine(dir, "dead.onnx")
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("Exact on the statistics' text"));
        var dead = OnnxGraph.Load(Path.Combine(dir, "dead.onnx"));
        Assert.That(
            MlpSites.Find(dead).Select(s => s.DFf),
            Is.EqualTo(SparsityStats.Load(stats).Layers.Select(l => 256 - l.DeadUnits))
        );
        Assert.That(dead.Graph.ValueInfo, Is.Empty, "stale shape annotations are dropped");

        (exit, _, error) = Cli.Run(
            "prune",
            "--model",
            Model(graph),
            "--stats",
            stats,
            "--keep-fraction",
            "0.5",
            "--out",
            Path.Combine(dir, "half.onnx")
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(
            MlpSites.Find(OnnxGraph.Load(Path.Combine(dir, "half.onnx"))).Select(s => s.DFf),
            Is.EqualTo(new[] { 128, 128 })
        );

        (exit, output, error) = Cli.Run(
            "topk",
            "--model",
            Model(graph),
            "--k",
            "256",
            "--out",
            Path.Combine(dir, "k256.onnx")
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("computes exactly what the input model does (checked"));

        (exit, _, error) = Cli.Run(
            "topk",
            "--model",
            Model(graph),
            "--k",
            "32",
            "--out",
            Path.Combine(dir, "k32.onnx")
        );
        Assert.That(exit, Is.EqualTo(0), error);
        var counts = SparsityCounts.Load(Path.GetDirectoryName(Analyze(Path.Combine(dir, "k32.onnx")))!);
        foreach (var layer in counts.Layers)
            Assert.That(
                Array.FindLastIndex(layer.UnitsPerTokenHistogram, c => c > 0),
                Is.InRange(1, 32),
                $"{graph}: at most 32 active units per token"
            );
    }

    [TestCase("opt.dynamo")]
    [TestCase("llama.torchscript")]
    [TestCase("gpt_cache.dynamo")]
    public void EvaluateAndDeployableFoldersWorkOnDecoders(string graph)
    {
        string stats = Analyze(Model(graph));
        string dir = Path.Combine(TestCorpus.TempDir(), "pruned");
        var (exit, output, error) = Cli.Run(
            "prune",
            "--model",
            Model(graph),
            "--stats",
            stats,
            "--keep-fraction",
            "0.75",
            "--eval-corpus",
            HookFixture.Corpus,
            "--allow-stats-corpus",
            "--tokenizer",
            "bytes",
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--runs",
            "2",
            "--out",
            dir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        var evaluation = JsonSerializer.Deserialize<Pipeline.Variants.Evaluation>(
            File.ReadAllText(Path.Combine(dir, "evaluation.json")),
            ProjectJson.Options
        )!;
        Assert.That(evaluation.UnitsPerLayer, Is.EqualTo(new[] { 192, 192 }));
        Assert.That(
            evaluation.Predictions,
            Is.EqualTo(HookFixture.Load(Family(graph)).Tokens - 72),
            "one prediction per real token but the last of each window (72 windows)"
        );
        Assert.That(evaluation.Loss, Is.InRange(1.0, 4.0));
        Assert.That(output, Does.Contain("| pruned | 192 / 192 |"));
    }

    [TestCase("bert.dynamo")]
    [TestCase("bert.torchscript")]
    public void EncodersAreAnalysedButNotScoredAsLanguageModels(string graph)
    {
        var (exit, _, error) = Cli.Run(
            "evaluate",
            "--model",
            Model(graph),
            "--corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "32",
            "--runs",
            "1"
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("is not a causal language model"));
        Assert.That(error.Trim().Split('\n'), Has.Length.EqualTo(1));
    }

    [Test]
    public void ExternalDataIsReadAndLargeModelsAreWrittenWithASideFile()
    {
        var inline = OnnxGraph.Load(Model("opt.dynamo"));
        var external = OnnxGraph.Load(Model("opt.ext"));
        Assert.That(ExternalData.Uses(external), Is.False, "side-file tensors are read in");
        Assert.That(
            external.Graph.Initializer.Sum(t => (long)t.RawData.Length),
            Is.EqualTo(inline.Graph.Initializer.Sum(t => (long)t.RawData.Length))
        );

        // Written with a small limit, the tensors go to model.onnx.data beside it, which ONNX Runtime and Load both
        // read.
        string dir = TestCorpus.TempDir();
        string path = Path.Combine(dir, "model.onnx");
        OnnxGraph.Save(external, path, inlineLimit: 10_000);
        Assert.That(File.Exists(path + ".data"), Is.True);
        Assert.That(new FileInfo(path).Length, Is.LessThan(new FileInfo(Model("opt.dynamo")).Length / 2));
        var raw = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        Assert.That(
            raw.Graph.Initializer.Count(t => t.DataLocation == TensorProto.Types.DataLocation.External),
            Is.GreaterThan(5)
        );
        var probe = ProbeBatch.Random(256);
        Assert.That(
            OrtRunner
                .Run(path, ("input_ids", probe.Ids, [2, 16]), ("attention_mask", probe.Mask, [2, 16]))["logits"]
                .Floats,
            Is.EqualTo(GraphCheck.Logits(inline, probe)).Within(1e-5f)
        );
        Assert.That(
            OnnxGraph.Load(path).Graph.Initializer.Select(t => t.RawData.Length),
            Is.EqualTo(external.Graph.Initializer.Select(t => t.RawData.Length))
        );

        // Sessions on graphs too large for one protobuf message go through such a temporary copy.
        using var options = new Microsoft.ML.OnnxRuntime.SessionOptions();
        using var session = OrtSession.Open(external, options, inlineLimit: 10_000);
        Assert.That(session.InputNames, Is.EqualTo(new[] { "input_ids", "attention_mask" }));
    }

    [Test]
    public void FlattenedActivationsThatAreNotBatchMajorAreRefused()
    {
        // OPT flattens [batch, seq, d] to [batch·seq, d] before fc1; transposing to [seq, batch, d] first makes the
        // rows seq-major.
        var model = OnnxGraph.Load(Model("opt.torchscript"));
        Assert.That(
            Pipeline.Streaming.AnalysisPlan.For(model, ["Relu"], 0f).Sites,
            Has.Count.EqualTo(2),
            "batch-major as exported"
        );
        var site = MlpSites.Find(model)[0];
        var g = model.Graph;
        var norm = g.Node.Single(n => n.Output.Contains(g.Node.Single(u => u.Name == site.Up.Node).Input[0]));
        var flatten = g.Node.Single(n => n.Output.Contains(norm.Input[0]));
        Assert.That(flatten.OpType, Is.EqualTo("Reshape"));
        string hidden = flatten.Input[0];
        g.Node.Insert(
            g.Node.IndexOf(flatten),
            OnnxGraph.Node("Transpose", "seq_major", [hidden], [hidden + ".seq_major"], OnnxGraph.Ints("perm", 1, 0, 2))
        );
        flatten.Input[0] = hidden + ".seq_major";
        var e = Assert.Throws<UserInputException>(() => Pipeline.Streaming.AnalysisPlan.For(model, ["Relu"], 0f))!;
        Assert.That(e.Message, Does.StartWith("Layer 0 (").And.Contain("not batch-major"));
    }

    [Test]
    public void ExternalDataThatIsMissingOrTruncatedIsAClearError()
    {
        string dir = TestCorpus.TempDir();
        File.Copy(Model("opt.ext"), Path.Combine(dir, "opt.ext.onnx"));
        var e = Assert.Throws<UserInputException>(() => OnnxGraph.Load(Path.Combine(dir, "opt.ext.onnx")))!;
        Assert.That(e.Message, Does.Contain("external data file opt.ext.onnx.data").And.Contain("is missing"));
        File.WriteAllBytes(Path.Combine(dir, "opt.ext.onnx.data"), new byte[100]);
        Assert.That(
            Assert.Throws<UserInputException>(() => OnnxGraph.Load(Path.Combine(dir, "opt.ext.onnx")))!.Message,
            Does.Contain("truncated")
        );
    }

    [Test]
    public void AnOpBetweenActivationAndDownProjectionIsRefusedByName()
    {
        // Squared ReLU (Primer): Relu → Pow → Mul(up) → down. The units are not the Relu's output: refuse.
        var model = OnnxGraph.Load(Model("llama.torchscript"));
        var relu = model.Graph.Node.First(n => n.OpType == "Relu");
        string raw = relu.Output[0];
        relu.Output[0] = raw + ".relu";
        var exponent = OnnxGraph.FloatTensor("two", [], [2f]);
        model.Graph.Initializer.Add(exponent);
        model.Graph.Node.Insert(
            model.Graph.Node.IndexOf(relu) + 1,
            OnnxGraph.Node("Pow", "squared", [raw + ".relu", "two"], [raw])
        );
        var e = Assert.Throws<UserInputException>(() => MlpSites.Find(model))!;
        Assert.That(
            e.Message,
            Does.Contain("a Pow node ('squared') sits between the activation and its down-projection")
        );
    }

    [Test]
    public void AGateOfAnotherTensorIsRefused()
    {
        // relu(gate(x)) * y where y is not a projection of x: not a gated MLP this tool understands.
        var model = OnnxGraph.Load(Model("llama.dynamo"));
        var mul = model.Graph.Node.First(n =>
            n.OpType == "Mul" && n.Input.Contains(model.Graph.Node.First(r => r.OpType == "Relu").Output[0])
        );
        var relu = model.Graph.Node.First(n => n.OpType == "Relu");
        int other = mul.Input[0] == relu.Output[0] ? 1 : 0;
        mul.Input[other] = relu.Input[0]; // relu(g) * g
        Assert.That(Assert.Throws<UserInputException>(() => MlpSites.Find(model))!.Message, Does.Contain("a Mul node"));
    }

    [Test]
    public void InputsTheToolCannotFeedAreRefusedByName()
    {
        var model = OnnxGraph.Load(Model("opt.torchscript"));
        model.Graph.Input.Add(OnnxGraph.Value("pixel_values", TensorProto.Types.DataType.Float, "batch", 3));
        var e = Assert.Throws<UserInputException>(() => GraphInputs.Bind(model))!;
        Assert.That(e.Message, Does.StartWith("The model needs input 'pixel_values' (float [batch, 3])"));
    }

    [Test]
    public void CacheInputsAreBoundToAnEmptyPast()
    {
        var (bound, inputs) = GraphInputs.Bind(OnnxGraph.Load(Model("gpt_cache.dynamo")));
        Assert.That(
            GraphInputs.Required(bound).Select(i => i.Name),
            Is.EquivalentTo(new[] { "input_ids", "attention_mask" })
        );
        Assert.That(inputs.HasAttentionMask, Is.True);
        Assert.That(
            inputs.Computed,
            Does.Contain("position_ids = 0..T−1").And.Contain("past_key_values.1.value = empty (past length 0)")
        );
    }

    [Test]
    public void VariantFoldersOfEncodersAreRefusedBeforeAnythingIsWritten()
    {
        string stats = Analyze(Model("bert.dynamo"));
        string dir = Path.Combine(TestCorpus.TempDir(), "variant");
        var (exit, _, error) = Cli.Run(
            "topk",
            "--model",
            Model("bert.dynamo"),
            "--k",
            "32",
            "--eval-corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "32",
            "--out",
            dir
        );
        Assert.That(exit, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain("not a causal language model"));
        Assert.That(Directory.Exists(dir), Is.False);
        Assert.That(File.Exists(stats), Is.True);
    }
}

[TestFixture]
public class ModelRunnerTests
{
    [Test]
    public void ReturnedOutputsEqualBoundOutputs()
    {
        // The path a GPU takes (outputs returned by ONNX Runtime, then copied) must read what the bound path reads.
        var plan = Pipeline.Streaming.AnalysisPlan.For(
            OnnxGraph.Load(HookFixture.PathOf("llama.dynamo.onnx")),
            ["Relu"],
            0f
        );
        var outputs = plan
            .Layers.SelectMany(l =>
                l.Outputs.Select(o => (o.Name, (long[]?)o.Shape(2, 16, l.DFf)!.Select(d => (long)d).ToArray()))
            )
            .ToList();
        var probe = ProbeBatch.Random(256);
        using var bound = new ModelRunner(plan.Graph, Device.Cpu, 2, 2, 16, outputs);
        using var returned = new ModelRunner(plan.Graph, Device.Cpu, 2, 2, 16, outputs, bindOutputs: false);
        using var unknownShapes = new ModelRunner(
            plan.Graph,
            Device.Cpu,
            2,
            2,
            16,
            outputs.Select(o => (o.Name, (long[]?)null)).ToList()
        );
        bound.Run(probe.Ids, probe.Mask);
        returned.Run(probe.Ids, probe.Mask);
        unknownShapes.Run(probe.Ids, probe.Mask);
        for (int i = 0; i < outputs.Count; i++)
        {
            Assert.That(returned.Longs(i).ToArray(), Is.EqualTo(bound.Longs(i).ToArray()), outputs[i].Name);
            Assert.That(
                unknownShapes.Longs(i).ToArray(),
                Is.EqualTo(bound.Longs(i).ToArray()),
                outputs[i].Name + ", sized by the run"
            );
            Assert.That(bound.Longs(i).ToArray().Sum(), Is.GreaterThan(0), "counts, not zeros");
        }
    }
}

[TestFixture]
public class Float16Tests
{
    [Test]
    public void WeightsBecomeFp16AndFloatOutputsStayFloat32()
    {
        var model = OnnxGraph.Load(HookFixture.PathOf("opt.dynamo.onnx"));
        var half = Float16.Convert(model);
        Assert.That(half.Graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Float), Is.Empty);
        var w = half.Graph.Initializer.First(t =>
            t.DataType == (int)TensorProto.Types.DataType.Float16 && t.Dims.Count == 2
        );
        var original = model.Graph.Initializer.Single(t => t.Name == w.Name);
        float[] before = Surgery.ReadFloats(original);
        var after = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(w.RawData.Span).ToArray();
        Assert.That(
            after.Select(h => (float)h),
            Is.EqualTo(before).Within(before.Max(Math.Abs) * 1e-3f),
            "fp16 rounding only"
        );
        Assert.That(half.Graph.Output.Select(o => o.Name), Is.EqualTo(model.Graph.Output.Select(o => o.Name)));
        Assert.That(
            half.Graph.Node.Last(n => n.Output.Contains("logits")).OpType,
            Is.EqualTo("Cast"),
            "logits cast back to float32"
        );
        Assert.That(
            half.Graph.Node.Where(n => n.OpType == "Cast")
                .SelectMany(n => n.Attribute)
                .Where(a => a.Name == "to" && a.I == (long)TensorProto.Types.DataType.Float)
                .Count(),
            Is.EqualTo(1),
            "the only cast to float32 left is the output's"
        );
        Assert.That(half.Graph.ValueInfo, Is.Empty);
    }

    [Test]
    public void Fp16IsRefusedOnTheCpuAndOnStatsExports()
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "fp16");
        var (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            HookFixture.PathOf("opt.dynamo.onnx"),
            "--corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "32",
            "--precision",
            "fp16",
            "--out",
            outDir
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--precision fp16 runs on a GPU only"));
        Assert.That(Directory.Exists(outDir), Is.False);
        var stats = Assert.Throws<UserInputException>(() =>
            Pipeline.Streaming.AnalysisPlan.For(StatsExport(), ["Relu"], 0f, precision: Precision.Fp16)
        )!;
        Assert.That(stats.Message, Does.Contain("this is a stats export"));
        // fp16 activations are compared in fp16 (no float32 copy of [tokens, d_ff]); bf16 ones are cast first (ONNX
        // Runtime's CUDA comparisons lack bf16). The counts are summed in float32 either way.
        var llama = OnnxGraph.Load(HookFixture.PathOf("llama.dynamo.onnx"));
        var fp16 = Pipeline.Streaming.AnalysisPlan.For(llama, ["Relu"], 0f, precision: Precision.Fp16).Graph;
        Assert.That(fp16.Graph.Node.Where(n => n.Name.Contains(".stats.f32")), Is.Empty);
        var thresholds = fp16
            .Graph.Node.Where(n => n.OpType == "Greater" && n.Name.Contains(".stats.gt"))
            .Select(n => fp16.Graph.Initializer.Single(t => t.Name == n.Input[1]))
            .ToList();
        Assert.That(
            thresholds.Select(t => (TensorProto.Types.DataType)t.DataType),
            Is.EqualTo(new[] { TensorProto.Types.DataType.Float16, TensorProto.Types.DataType.Float16 })
        );
        var bf16 = Pipeline.Streaming.AnalysisPlan.For(llama, ["Relu"], 0f, precision: Precision.Bf16).Graph;
        Assert.That(
            bf16.Graph.Node.Where(n => n.OpType == "Cast" && n.Name.Contains(".stats.f32")).Count(),
            Is.EqualTo(2),
            "one per layer"
        );
        Assert.That(
            bf16.Graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Float && t.Dims.Count == 2),
            Is.Empty
        );
    }

    [Test]
    public void Bf16KeepsRotaryTrigonometryInFloat32()
    {
        // ONNX's Sin and Cos take no bfloat16 (the H200 run refused the converted Llama with a type error), and ONNX
        // Runtime has no bf16 Reciprocal (RMSNorm's rsqrt) on either provider: they compute in float32 between two
        // casts.
        var bf16 = Float16.Convert(
            OnnxGraph.Load(HookFixture.PathOf("llama.dynamo.onnx")),
            TensorProto.Types.DataType.Bfloat16
        );
        var index = new GraphIndex(bf16.Graph);
        var trig = bf16.Graph.Node.Where(n => n.OpType is "Sin" or "Cos" or "Reciprocal").ToList();
        Assert.That(trig.Select(n => n.OpType).Distinct(), Is.EquivalentTo(new[] { "Sin", "Cos", "Reciprocal" }));
        foreach (var node in trig)
        {
            Assert.That(
                index.Producer(node.Input[0]) is { OpType: "Cast" } c
                    && c.Attribute.Single().I == (long)TensorProto.Types.DataType.Float,
                node.Name + ": input cast to float32"
            );
            Assert.That(
                index.Consumers(node.Output[0]).Select(n => (n.OpType, n.Attribute.Single(a => a.Name == "to").I)),
                Is.EqualTo(new[] { ("Cast", (long)TensorProto.Types.DataType.Bfloat16) }),
                node.Name + ": output cast back"
            );
        }
    }

    [Test]
    public void Fp16CountsGoThroughProductsOfBlocksOfAtMost2048Units()
    {
        // fp16 0/1 products are exact while every sum is ≤ 2,048: units in blocks of 2,048, windows of at most 2,048.
        var llama = OnnxGraph.Load(HookFixture.PathOf("llama.dynamo.onnx"));
        var graph = Pipeline
            .Streaming.AnalysisPlan.For(llama, ["Relu"], 0f, precision: Precision.Fp16, halfCounts: true)
            .Graph;
        var blocks = graph.Graph.Node.Where(n => n.OpType == "MatMul" && n.Name.Contains(".per_token_blocks")).ToList();
        Assert.That(blocks, Has.Count.EqualTo(2));
        var ones = graph.Graph.Initializer.Single(t => t.Name == blocks[0].Input[1]);
        Assert.That(
            (ones.DataType, ones.Dims.ToArray()),
            Is.EqualTo(((int)TensorProto.Types.DataType.Float16, new long[] { 256, 1 }))
        );
        Assert.That(
            System
                .Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(ones.RawData.Span)
                .ToArray()
                .All(h => h == (Half)1)
        );
        Assert.That(
            graph
                .Graph.Node.Where(n => n.OpType == "MatMul" && n.Name.Contains(".per_window"))
                .Select(n => graph.Graph.Node.Single(c => c.Output.Contains(n.Input[0])).OpType),
            Is.All.EqualTo("Cast"),
            "the real-token rows in fp16"
        );
        var plain = Pipeline.Streaming.AnalysisPlan.For(llama, ["Relu"], 0f, precision: Precision.Fp16).Graph;
        Assert.That(
            plain.Graph.Node.Where(n => n.Name.Contains(".per_token_blocks")),
            Is.Empty,
            "float32 sums otherwise"
        );
    }

    [TestCase("opt.torchscript")]
    [TestCase("opt.dynamo")]
    public void AGraphConvertedToFp16IsAnalysedInItsOwnTypes(string fixture)
    {
        // An fp16 graph whose MLP activations are [tokens, d_ff] (the TorchScript exporter) was refused: exposing them
        // for the layout check declared the fp16 ReLU's output float32. Now they leave through a Cast; ONNX Runtime's
        // CPU provider runs this graph, so the counts are checked here against float32's (fp16 rounding: within 2e-3).
        var half = Float16.Convert(OnnxGraph.Load(HookFixture.PathOf(fixture + ".onnx")));
        string path = Path.Combine(TestCorpus.TempDir(), "half.onnx");
        OnnxGraph.Save(half, path);
        double[] Fractions(string model, params string[] extra)
        {
            string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
            var (exit, _, error) = Cli.Run([
                .. new[]
                {
                    "analyze",
                    "--model",
                    model,
                    "--corpus",
                    HookFixture.Corpus,
                    "--tokenizer",
                    "bytes",
                    "--seq-len",
                    "32",
                    "--batch-size",
                    "4",
                    "--threads",
                    "2",
                    "--out",
                    outDir,
                },
                .. extra,
            ]);
            Assert.That(exit, Is.EqualTo(0), error);
            return SparsityStats
                .Load(Path.Combine(outDir, "stats.json"))
                .Layers.Select(l => l.NonzeroFraction)
                .ToArray();
        }
        var reference = Fractions(HookFixture.PathOf(fixture + ".onnx"));
        Assert.That(Fractions(path), Is.EqualTo(reference).Within(2e-3));
        // ML.NET's ONNX transform, behind --dense-activations, cannot load fp16 weights: one line, nothing written.
        var (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            path,
            "--corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "32",
            "--dense-activations",
            "--out",
            Path.Combine(TestCorpus.TempDir(), "dense")
        );
        Assert.That((exit, error.Trim().Split('\n').Length), Is.EqualTo((2, 1)), error);
        Assert.That(
            error,
            Does.Contain(
                "--dense-activations reads activations through ML.NET's ONNX transform, which cannot load graphs with fp16 or bf16 weights"
            )
        );
    }

    [Test]
    public void AGraphAlreadyInHalfPrecisionIsLeftAsItIs()
    {
        // --precision fp16 on an fp16 export changed its results (its own casts to float32 became fp16): now it runs as
        // exported.
        var half = Float16.Convert(OnnxGraph.Load(HookFixture.PathOf("opt.dynamo.onnx")));
        Assert.That(Float16.Convert(half), Is.SameAs(half));
        var error = Assert.Throws<UserInputException>(() =>
            Float16.Convert(half, TensorProto.Types.DataType.Bfloat16)
        )!;
        Assert.That(error.Message, Does.Contain("weights are fp16 already").And.Contain("use --precision fp16"));
    }

    [Test]
    public void Bf16WeightsRoundToNearestEven()
    {
        Assert.That(Float16.ToBFloat16(1f), Is.EqualTo(0x3F80));
        Assert.That(
            Float16.ToBFloat16(BitConverter.UInt32BitsToSingle(0x3F808000)),
            Is.EqualTo(0x3F80),
            "a tie goes to the even neighbour"
        );
        Assert.That(
            Float16.ToBFloat16(BitConverter.UInt32BitsToSingle(0x3F818000)),
            Is.EqualTo(0x3F82),
            "a tie goes to the even neighbour"
        );
        Assert.That(
            Float16.ToBFloat16(BitConverter.UInt32BitsToSingle(0x3F808001)),
            Is.EqualTo(0x3F81),
            "above the tie rounds up"
        );
        Assert.That(Float16.ToBFloat16(-2.5f), Is.EqualTo(0xC020));
        Assert.That(Float16.ToBFloat16(float.MinValue), Is.EqualTo(0xFF7F), "float32's minimum (masks) stays finite");
        Assert.That(Float16.ToBFloat16(float.MaxValue), Is.EqualTo(0x7F7F));
        Assert.That(Float16.ToBFloat16(float.NegativeInfinity), Is.EqualTo(0xFF80), "infinities stay infinite");
    }

    [TestCase(0f)]
    [TestCase(0.1f)]
    [TestCase(1e-6f)]
    [TestCase(-0.3f)]
    [TestCase(70000f)]
    public void AThresholdInHalfPrecisionSelectsTheSameValues(float threshold)
    {
        // Every fp16 and bf16 value x: x > t (in float32) exactly when x > the threshold written in x's type.
        var g = new GraphWriter(new GraphProto());
        var half = BitConverter.UInt16BitsToHalf(
            BitConverter.ToUInt16(
                g.Graph
                    .Initializer[Index(g, g.ScalarBelow("t", threshold, TensorProto.Types.DataType.Float16))]
                    .RawData
                    .Span
            )
        );
        float bf = BitConverter.UInt32BitsToSingle(
            (uint)
                BitConverter.ToUInt16(
                    g.Graph
                        .Initializer[Index(g, g.ScalarBelow("b", threshold, TensorProto.Types.DataType.Bfloat16))]
                        .RawData
                        .Span
                ) << 16
        );
        for (int bits = 0; bits < 65536; bits++)
        {
            var x = BitConverter.UInt16BitsToHalf((ushort)bits);
            if (!Half.IsNaN(x))
                Assert.That(x > half, Is.EqualTo((float)x > threshold), $"fp16 {x}");
            float y = BitConverter.UInt32BitsToSingle((uint)bits << 16);
            if (!float.IsNaN(y))
                Assert.That(y > bf, Is.EqualTo(y > threshold), $"bf16 {y}");
        }
    }

    static int Index(GraphWriter g, string name) =>
        g.Graph.Initializer.Select((t, i) => (t, i)).Single(p => p.t.Name == name).i;

    /// <summary>A one-layer stats export of this project's model (seeded).</summary>
    internal static ModelProto StatsExport()
    {
        TorchSharp.torch.random.manual_seed(3);
        using var model = new Training.Model.ReluTransformer(
            new Training.Model.ModelConfig(Layers: 1, DModel: 16, Heads: 2, DFf: 32, SeqLen: 8, VocabSize: 20)
        );
        return ModelExporter.Export(model, ExportVariant.Stats);
    }
}

/// <summary>fuse-attention on graphs from both torch.onnx exporters: fused where the pattern is known (OPT, GPT-2, and
/// Llama's rotary, grouped-query attention), exact, analysed alike; others left alone and said so.</summary>
[TestFixture]
public class AttentionFusionTests
{
    static string Counts(string model) =>
        JsonSerializer.Serialize(
            SparsityCounts.Load(Path.GetDirectoryName(ExternalGraphTests.Analyze(model))!).Layers,
            ProjectJson.Options
        );

    [TestCase("opt.torchscript")]
    [TestCase("gpt2.torchscript")]
    [TestCase("opt.dynamo")]
    [TestCase("gpt2.dynamo")]
    [TestCase("opt.ext")]
    [TestCase("llama.dynamo")]
    [TestCase("llama.torchscript")]
    public void OptGpt2AndLlamaAttentionIsFusedExactly(string graph)
    {
        string original = HookFixture.PathOf(graph + ".onnx"),
            fused = Path.Combine(TestCorpus.TempDir(), "fused.onnx");
        var (exit, output, error) = Cli.Run("fuse-attention", "--model", original, "--out", fused);
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.StartWith("Fused 2 attention block(s) into MultiHeadAttention; max |Δ logits| = "));
        var model = OnnxGraph.Load(fused);
        Assert.That(
            model.Graph.Node.Count(n => n.OpType == "MultiHeadAttention" && n.Domain == "com.microsoft"),
            Is.EqualTo(2)
        );
        Assert.That(model.Graph.Node.Any(n => n.OpType == "Softmax"), Is.False);
        // PyTorch's logits on the fixture's probe, and the same counts as the unfused graph on 1,959 tokens.
        var fixture = HookFixture.Load(graph.Split('.')[0]);
        var probe = new ProbeBatch(
            fixture.Probe.InputIds,
            Enumerable.Repeat(1L, fixture.Probe.InputIds.Length).ToArray(),
            fixture.Probe.Shape[0],
            fixture.Probe.Shape[1]
        );
        Assert.That(GraphCheck.Logits(model, probe), Is.EqualTo(fixture.Probe.Logits).Within(1e-4f));
        Assert.That(Counts(fused), Is.EqualTo(Counts(original)));
        // And the rest of the tool takes it: dead units pruned, exactly.
        (exit, _, error) = Cli.Run(
            "topk",
            "--model",
            fused,
            "--k",
            "256",
            "--out",
            Path.Combine(TestCorpus.TempDir(), "k256.onnx")
        );
        Assert.That(exit, Is.EqualTo(0), error);
    }

    [TestCase("gpt_cache.torchscript", "no additive mask before the softmax")]
    public void AnAttentionItDoesNotKnowIsLeftAloneAndNamed(string graph, string reason)
    {
        string outPath = Path.Combine(TestCorpus.TempDir(), "fused.onnx");
        var (exit, _, error) = Cli.Run(
            "fuse-attention",
            "--model",
            HookFixture.PathOf(graph + ".onnx"),
            "--out",
            outPath
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(
            error,
            Does.StartWith("error: No attention block was recognised (Softmax '")
                .And.Contain(reason)
                .And.EndWith("nothing was written.\n")
        );
        Assert.That(File.Exists(outPath), Is.False);
    }

    [Test]
    public void AnEncodersAttentionIsRefusedByTheExactnessCheck()
    {
        string outPath = Path.Combine(TestCorpus.TempDir(), "fused.onnx");
        var (exit, _, error) = Cli.Run(
            "fuse-attention",
            "--model",
            HookFixture.PathOf("bert.dynamo.onnx"),
            "--out",
            outPath
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(
            error,
            Does.Contain("its attention is not causal (an encoder?)").And.EndWith("nothing was written.\n")
        );
        Assert.That(File.Exists(outPath), Is.False);
    }
}
