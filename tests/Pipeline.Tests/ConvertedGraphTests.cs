using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Export;

namespace Sparsity.Tests;

/// <summary>
/// Graphs as deployment scripts leave them: ONNX Runtime's float16 converter (convert_float_to_float16, keep_io_types)
/// applied to torch.onnx exports, and decoder stacks exported without their vocabulary projection (OPTModel,
/// LlamaModel → last_hidden_state). Fixtures: tests/fixtures/t5/make_t5.py on the GPU machine.
/// </summary>
[TestFixture]
public class ConvertedGraphTests
{
    static string Fp16(string file) => Path.Combine(TestContext.CurrentContext.TestDirectory, "fp16", file);

    static string Stack(string file) => Path.Combine(TestContext.CurrentContext.TestDirectory, "stacks", file);

    static readonly string[] Converted =
    [
        "opt.torchscript",
        "opt.dynamo",
        "llama.torchscript",
        "llama.dynamo",
        "gpt2.torchscript",
        "bert.torchscript",
    ];

    [TestCaseSource(nameof(Converted))]
    public void Fp16ConvertedGraphsAreAnalysedWithinRoundingOfTheirFp32Hooks(string graph)
    {
        var fixture = HookFixture.Load(graph.Split('.')[0]);
        var stats = SparsityStats.Load(ExternalGraphTests.Analyze(Fp16(graph + ".onnx")));
        Assert.That(stats.Tokens, Is.EqualTo(fixture.Tokens));
        for (int l = 0; l < fixture.Layers.Length; l++)
            Assert.That(
                stats.Layers[l].NonzeroFraction,
                Is.EqualTo(fixture.Layers[l].NonzeroFraction).Within(2e-3),
                $"{graph} layer {l}"
            );
    }

    [TestCase("opt.torchscript")]
    [TestCase("llama.dynamo")]
    public void Fp16ConvertedGraphsArePrunedExactlyAndTakeTopK(string graph)
    {
        string model = Fp16(graph + ".onnx"),
            stats = ExternalGraphTests.Analyze(model),
            dir = TestCorpus.TempDir();
        var (exit, output, error) = Cli.Run(
            "prune",
            "--model",
            model,
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
        Assert.That(
            dead.Graph.Initializer.Where(t => t.Dims.Contains(256 - SparsityStats.Load(stats).Layers[0].DeadUnits))
                .Select(t => t.DataType),
            Has.All.EqualTo((int)Onnx.TensorProto.Types.DataType.Float16),
            "sliced in their own type"
        );

        (exit, _, error) = Cli.Run("topk", "--model", model, "--k", "32", "--out", Path.Combine(dir, "k32.onnx"));
        Assert.That(exit, Is.EqualTo(0), error);
        var counts = SparsityCounts.Load(
            Path.GetDirectoryName(ExternalGraphTests.Analyze(Path.Combine(dir, "k32.onnx")))!
        );
        foreach (var layer in counts.Layers)
            Assert.That(
                Array.FindLastIndex(layer.UnitsPerTokenHistogram, c => c > 0),
                Is.InRange(1, 32),
                $"{graph}: at most 32 active units per token"
            );
    }

    [Test]
    public void Fp16ConvertedT5IsAnalysedWithinRoundingOfItsFp32Hooks()
    {
        var fixture = T5Fixture.Load();
        // The converter's encoder and decoder, in a folder as Optimum lays them out.
        string folder = TestCorpus.TempDir();
        File.Copy(Fp16("t5_encoder_model.onnx"), Path.Combine(folder, EncoderDecoder.EncoderFile));
        File.Copy(Fp16("t5_decoder_model.onnx"), Path.Combine(folder, EncoderDecoder.DecoderFile));
        File.Copy(T5Fixture.PathOf("optimum/config.json"), Path.Combine(folder, "config.json"));
        foreach (
            var (model, extra) in new[]
            {
                (Fp16("t5.torchscript.onnx"), new[] { "--decoder-start-id", "0", "--pad-id", "0" }),
                (folder, Array.Empty<string>()),
            }
        )
        {
            string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
            var (exit, _, error) = Cli.Run([
                .. new[]
                {
                    "analyze",
                    "--model",
                    model,
                    "--corpus",
                    T5Fixture.PathOf("heldout.ids.tsv"),
                    "--tokenizer",
                    "ids",
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
            var stats = SparsityStats.Load(Path.Combine(outDir, SparsityStats.FileName));
            for (int l = 0; l < fixture.Layers.Length; l++)
                Assert.That(
                    stats.Layers[l].NonzeroFraction,
                    Is.EqualTo(fixture.Layers[l].NonzeroFraction).Within(2e-3),
                    $"{model} {stats.Layers[l].Name}"
                );
        }
    }

    static readonly string[] Stacks =
    [
        "opt_stack.torchscript",
        "opt_stack.dynamo",
        "llama_stack.torchscript",
        "llama_stack.dynamo",
    ];

    [TestCaseSource(nameof(Stacks))]
    public void StacksWithoutLogitsAreAnalysedExactly(string graph)
    {
        var fixture = System.Text.Json.JsonSerializer.Deserialize<HookFixture>(
            File.ReadAllText(Stack(graph.Split('.')[0] + ".json")),
            new System.Text.Json.JsonSerializerOptions
            {
                PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower,
            }
        )!;
        var model = OnnxGraph.Load(Stack(graph + ".onnx"));
        Assert.That(model.Graph.Output.Select(o => o.Name), Is.EqualTo(new[] { "last_hidden_state" }));
        Assert.That(
            GraphInputs.VocabularySize(model),
            Is.EqualTo(256),
            "the vocabulary is the embedding table's rows, not the hidden width (64)"
        );
        string stats = ExternalGraphTests.Analyze(Stack(graph + ".onnx"));
        var counts = SparsityCounts.Load(Path.GetDirectoryName(stats)!);
        for (int l = 0; l < fixture.Layers.Length; l++)
        {
            var use = counts.Layers[l].ToUse();
            Assert.That(use.TokensPerUnit.ToArray(), Is.EqualTo(fixture.Layers[l].TokensPerUnit), $"{graph} layer {l}");
            Assert.That(
                use.NonzeroFraction,
                Is.EqualTo(fixture.Layers[l].NonzeroFraction).Within(1e-12),
                $"{graph} layer {l}"
            );
        }
        var (exit, output, error) = Cli.Run(
            "prune",
            "--model",
            Stack(graph + ".onnx"),
            "--stats",
            stats,
            "--dead-only",
            "--out",
            Path.Combine(TestCorpus.TempDir(), "dead.onnx")
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("Exact on the statistics' text: max |Δ last_hidden_state| ="));
    }
}
