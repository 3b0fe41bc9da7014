using System.Text.Json;
using NUnit.Framework;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Exporting;
using Sparsity.Pipeline.Runtime;
using Sparsity.Training;
using Sparsity.Training.Model;

namespace Sparsity.Tests;

/// <summary>Reference logits and hook statistics transformers computed on a checkpoint folder
/// (tests/fixtures/hf/make_checkpoints.py).</summary>
public sealed record CheckpointProbe(
    long[] InputIds,
    int[] Shape,
    float[] Logits,
    float[] LogitsNative,
    double NativeMaxDifference
);

public sealed record CheckpointReference(
    string Family,
    string ModelClass,
    string Dtype,
    int SeqLen,
    int BatchSize,
    long Tokens,
    int Vocab,
    int DFf,
    CheckpointProbe Probe,
    HookLayer[] Layers
)
{
    static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static CheckpointReference Load(string family) =>
        JsonSerializer.Deserialize<CheckpointReference>(
            File.ReadAllText(Path.Combine(Folder(family), "reference.json")),
            Options
        )!;

    public static string Folder(string family) => Path.Combine(TestContext.CurrentContext.TestDirectory, "hf", family);

    public static string Ids(string family) => Path.Combine(Folder(family), "heldout.ids.txt");

    public static string Text => Path.Combine(TestContext.CurrentContext.TestDirectory, "hf", "heldout.txt");
}

/// <summary>
/// Hugging Face checkpoint folders written by transformers 5.17's save_pretrained (OPT fp32 in one file, Llama bf16 in
/// three shards with GQA, head_dim ≠ hidden/heads and biases, Mistral fp16 with a sliding window), exported through our
/// TorchSharp model: logits, statistics and every downstream command must agree with transformers.
/// </summary>
[TestFixture]
public class HuggingFaceCheckpointTests
{
    static readonly string[] Families = ["opt", "llama", "mistral"];

    static string Export(string family, string variant = "dense", params string[] extra)
    {
        string path = Path.Combine(TestCorpus.TempDir(), $"{family}.{variant}.onnx");
        var (exit, output, error) = Cli.Run([
            .. new[]
            {
                "export",
                "--checkpoint",
                CheckpointReference.Folder(family),
                "--out",
                path,
                "--variant",
                variant,
            },
            .. extra,
        ]);
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(
            output,
            Does.Contain($"Source: Hugging Face {family} checkpoint").And.Contain("computed in float32 on the CPU")
        );
        return path;
    }

    static string Analyze(string model, string family, params string[] extra)
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
        string[] corpus = extra.Contains("--tokenizer")
            ? ["--corpus", CheckpointReference.Text]
            : ["--corpus", CheckpointReference.Ids(family), "--tokenizer", "ids"];
        var (exit, _, error) = Cli.Run([
            .. new[] { "analyze", "--model", model },
            .. corpus,
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--threads",
            "2",
            "--out",
            outDir,
            .. extra,
        ]);
        Assert.That(exit, Is.EqualTo(0), error);
        return outDir;
    }

    static ProbeBatch Probe(CheckpointReference r) =>
        new(
            r.Probe.InputIds,
            Enumerable.Repeat(1L, r.Probe.InputIds.Length).ToArray(),
            r.Probe.Shape[0],
            r.Probe.Shape[1]
        );

    [TestCaseSource(nameof(Families))]
    public void ExportGivesTransformersLogits(string family)
    {
        var reference = CheckpointReference.Load(family);
        var graph = OnnxGraph.Load(Export(family));
        float[] logits = GraphCheck.Logits(graph, Probe(reference));
        // transformers computed these in float32 from the stored (bf16/fp16 rounded) weights, as we do: 1e-4.
        Assert.That(logits, Is.EqualTo(reference.Probe.Logits).Within(1e-4f));
        // Computing in the stored dtype instead moves transformers' own logits by up to NativeMaxDifference (bf16 0.11,
        // fp16 0.015, fp32 5e-6 on the GPU): ours sit within that rounding gap of the native result too.
        Assert.That(
            logits,
            Is.EqualTo(reference.Probe.LogitsNative).Within((float)reference.Probe.NativeMaxDifference + 1e-4f)
        );
        Assert.That(
            graph.MetadataProps.Single(p => p.Key == "relu_sparsity.source").Value,
            Does.Contain("computed in float32 on the CPU")
        );
    }

    [TestCaseSource(nameof(Families))]
    public void AnalyzeReproducesTheHookStatistics(string family)
    {
        var reference = CheckpointReference.Load(family);
        foreach (string variant in new[] { "dense", "stats" })
        {
            string dir = Analyze(Export(family, variant), family);
            var stats = SparsityStats.Load(Path.Combine(dir, SparsityStats.FileName));
            var counts = SparsityCounts.Load(dir);
            Assert.That(stats.Tokens, Is.EqualTo(reference.Tokens), variant);
            for (int l = 0; l < reference.Layers.Length; l++)
            {
                var expected = reference.Layers[l];
                string what = $"{family} {variant} layer {l}";
                Assert.That(stats.Layers[l].DFf, Is.EqualTo(256), what);
                // Units whose pre-activation is within float rounding of 0 may fall either way: at most a few in 2,600
                // × 256.
                long flips = counts
                    .Layers[l]
                    .TokensPerUnit.Zip(expected.TokensPerUnit, (a, b) => Math.Abs(a - b))
                    .Sum();
                Assert.That(flips, Is.LessThanOrEqualTo(3), what + ": per-unit token counts");
                Assert.That(stats.Layers[l].NonzeroFraction, Is.EqualTo(expected.NonzeroFraction).Within(1e-5), what);
                Assert.That(stats.Layers[l].DeadUnits, Is.EqualTo(expected.DeadUnits), what);
                Assert.That(
                    stats.Layers[l].PerSequenceUnitsMean,
                    Is.EqualTo(expected.UnitsPerSequence.Average()).Within(0.05),
                    what
                );
            }
        }
    }

    [TestCase("opt", 0)]
    [TestCase("llama", 2)]
    public void TheCheckpointsTokenizerGivesTheReferenceIds(string family, int tieDocuments)
    {
        // heldout.ids.txt holds the reference tokenizer's ids (tokenizers' byte-level BPE for OPT, sentencepiece for
        // Llama), no BOS.
        var tokenizer = TextTokenizer.FromSpec("hf:" + CheckpointReference.Folder(family));
        Assert.That(tokenizer.Spec, Does.StartWith("hf:"));
        Assert.That(tokenizer.VocabSize, Is.EqualTo(1000));
        var documents = File.ReadAllLines(CheckpointReference.Text);
        var reference = File.ReadAllLines(CheckpointReference.Ids(family))
            .Select(line => line.Split(' ').Select(int.Parse).ToArray())
            .ToArray();
        Assert.That(documents, Has.Length.EqualTo(20));
        int differing = 0;
        for (int d = 0; d < documents.Length; d++)
        {
            int[] ours = [.. tokenizer.Encode(documents[d])],
                theirs = reference[d];
            Assert.That(tokenizer.Decode(ours), Is.EqualTo(documents[d]), $"document {d} round-trips");
            if (ours.SequenceEqual(theirs))
                continue;
            differing++;
            // Microsoft.ML.Tokenizers (2.0.1, 3.0.0) breaks a tie between equal merges of a repeated piece the other
            // way from sentencepiece ("000" → 0|00, not 00|0): the same text in the same number of tokens, two ids
            // swapped.
            Assert.That(ours, Has.Length.EqualTo(theirs.Length), $"document {d}");
            var at = Enumerable.Range(0, ours.Length).Where(i => ours[i] != theirs[i]).ToList();
            Assert.That(
                at.Count % 2 == 0
                    && at.Chunk(2)
                        .All(p => p[1] == p[0] + 1 && ours[p[0]] == theirs[p[1]] && ours[p[1]] == theirs[p[0]]),
                Is.True,
                $"document {d}: only adjacent swaps, at {string.Join(", ", at)}"
            );
            Assert.That(tokenizer.Decode(ours.Skip(at[0]).Take(2)), Is.EqualTo("000"));
        }
        Assert.That(
            differing,
            Is.EqualTo(tieDocuments),
            "documents whose ids differ from the reference (docs/export.md states these)"
        );
    }

    [Test]
    public void AnalyzingTextWithTheCheckpointsTokenizerEqualsAnalyzingTheReferenceIds()
    {
        string model = Export("opt", "stats");
        var fromText = SparsityCounts.Load(
            Analyze(model, "opt", "--tokenizer", "hf:" + CheckpointReference.Folder("opt"))
        );
        var fromIds = SparsityCounts.Load(Analyze(model, "opt"));
        for (int l = 0; l < 2; l++)
            AssertCounts.Equal(fromText.Layers[l].ToUse(), fromIds.Layers[l].ToUse(), $"layer {l}");
    }

    [TestCase("opt")]
    [TestCase("llama")]
    public void PruneTopKAndEvaluateWorkOnTheExportedGraphs(string family)
    {
        string model = Export(family);
        string stats = Path.Combine(Analyze(model, family), SparsityStats.FileName);
        string dir = TestCorpus.TempDir();
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
        var dead = CheckpointReference.Load(family).Layers.Select(l => 256 - l.DeadUnits);
        Assert.That(MlpSites.Find(OnnxGraph.Load(Path.Combine(dir, "dead.onnx"))).Select(s => s.DFf), Is.EqualTo(dead));

        (exit, output, error) = Cli.Run(
            "topk",
            "--model",
            model,
            "--k",
            "256",
            "--out",
            Path.Combine(dir, "k256.onnx")
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("computes exactly what the input model does (checked"));

        (exit, output, error) = Cli.Run(
            "evaluate",
            "--model",
            model,
            "--corpus",
            CheckpointReference.Ids(family),
            "--tokenizer",
            "ids",
            "--seq-len",
            "32",
            "--runs",
            "1"
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("loss"));
    }

    [Test]
    public void LargeCheckpointsStreamIntoASideFileAndStillMatch()
    {
        // A forced threshold sends every tensor of a 1 MB model down the path a 7B model takes: one tensor at a time
        // into model.onnx.data.
        string dir = TestCorpus.TempDir();
        string path = Path.Combine(dir, "model.onnx");
        var result = CheckedExport.Run(
            new ExportRequest(CheckpointReference.Folder("llama"), path, ExternalDataAbove: 10_000)
        );
        Assert.That(
            result.Files.Select(Path.GetFileName),
            Is.EqualTo(new[] { "model.mlp.json", "model.onnx", "model.onnx.data" })
        );
        Assert.That(result.Parity, Is.LessThanOrEqualTo(1e-4f), "the side-file graph was loaded back and compared");
        var raw = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        Assert.That(
            raw.Graph.Initializer.Count(t => t.DataLocation == TensorProto.Types.DataLocation.External),
            Is.GreaterThanOrEqualTo(2 * 6 + 2)
        );
        Assert.That(new FileInfo(path).Length, Is.LessThan(100_000));
        Assert.That(
            Directory.GetFileSystemEntries(dir).Select(Path.GetFileName).Order(),
            Is.EquivalentTo(new[] { OutputFile.LedgerName, "model.mlp.json", "model.onnx", "model.onnx.data" }),
            "no temporary left; the ledger records what export wrote"
        );
        var reference = CheckpointReference.Load("llama");
        Assert.That(
            GraphCheck.Logits(OnnxGraph.Load(path), Probe(reference)),
            Is.EqualTo(reference.Probe.Logits).Within(1e-4f)
        );

        var unchecked_ = CheckedExport.Run(
            new ExportRequest(
                CheckpointReference.Folder("llama"),
                Path.Combine(dir, "unchecked.onnx"),
                SkipParity: true,
                ExternalDataAbove: 10_000
            )
        );
        Assert.That(unchecked_.Parity, Is.Null);
        Assert.That(
            File.ReadAllBytes(Path.Combine(dir, "unchecked.onnx.data")),
            Is.EqualTo(File.ReadAllBytes(path + ".data"))
        );
    }

    [TestCaseSource(nameof(Families))]
    public void TheConfigIsReadAsTransformersReadsIt(string family)
    {
        var hf = HuggingFaceCheckpoint.Open(CheckpointReference.Folder(family));
        var c = hf.Config;
        var expected = family switch
        {
            "opt" => new ModelConfig(2, 64, 4, 256, 128, 1000),
            "llama" => new ModelConfig(
                2,
                64,
                4,
                256,
                128,
                1000,
                TiedEmbeddings: false,
                RmsNorm: true,
                NormEpsilon: 1e-5,
                RopeTheta: 500000,
                KvHeads: 2,
                HeadDim: 32,
                GatedMlp: true
            ),
            _ => new ModelConfig(
                2,
                64,
                4,
                256,
                32,
                1000,
                RmsNorm: true,
                NormEpsilon: 1e-6,
                RopeTheta: 10000,
                KvHeads: 2,
                GatedMlp: true,
                AttentionBias: false,
                MlpBias: false
            ),
        };
        Assert.That(c, Is.EqualTo(expected));
        Assert.That(
            hf.StoredDtypes,
            Is.EqualTo(
                new[]
                {
                    family switch
                    {
                        "opt" => "F32",
                        "llama" => "BF16",
                        _ => "F16",
                    },
                }
            )
        );
        // The reader supplies exactly the tensors the TorchSharp model has.
        using var model = new ReluTransformer(c);
        Assert.That(hf.Names.Order(), Is.EqualTo(model.named_parameters().Select(p => p.name).Order()));
    }
}
