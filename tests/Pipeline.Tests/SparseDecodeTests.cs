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

    [Test]
    public void AHuggingFaceLlamaWithACacheGeneratesTheSameTokensSparse()
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
        string sparse = Path.Combine(TestCorpus.TempDir(), "sparse.onnx");
        (exit, _, error) = Cli.Run(
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
}
