using System.Text.Json;
using NUnit.Framework;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Core;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Tests;

/// <summary>Reference statistics of the T5 fixture (tests/fixtures/t5/make_t5.py): PyTorch hooks on each layer's
/// DenseReluDense.wo input.</summary>
public sealed record T5Layer(
    string Stack,
    int Index,
    int DFf,
    int Tokens,
    int[] UnitsPerToken,
    int[] UnitsPerSequence,
    int[] UnitsPerBatch,
    long[] TokensPerUnit,
    double NonzeroFraction,
    double UnitsPerTokenMean,
    int DeadUnits
);

public sealed record T5Probe(
    long[] InputIds,
    long[] AttentionMask,
    long[] DecoderInputIds,
    int[] Shape,
    int[] DecoderShape,
    float[] Logits
);

public sealed record T5Fixture(
    Dictionary<string, string> Exports,
    string Tokenizer,
    int SeqLen,
    int BatchSize,
    int Vocab,
    int Pairs,
    Dictionary<string, int> Truncated,
    T5Probe Probe,
    T5Layer[] Layers
)
{
    static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static T5Fixture Load() =>
        JsonSerializer.Deserialize<T5Fixture>(File.ReadAllText(PathOf("t5.json")), Options)!;

    public static string PathOf(string file) => Path.Combine(TestContext.CurrentContext.TestDirectory, "t5", file);
}

/// <summary>
/// Encoder-decoder models as users bring them (Hugging Face T5 exported by torch.onnx, whole or as Optimum's folder):
/// both stacks analysed, each on its own side of the pairs, exactly as PyTorch's hooks count them.
/// </summary>
[TestFixture]
public class EncoderDecoderTests
{
    static readonly string[] Forms = ["t5.torchscript.onnx", "t5.dynamo.onnx", "optimum"];

    static string Analyze(string model, string corpus, string tokenizer, params string[] extra)
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, output, error) = Cli.Run([
            .. new[]
            {
                "analyze",
                "--model",
                model,
                "--corpus",
                corpus,
                "--tokenizer",
                tokenizer,
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
        Assert.That(
            output,
            Does.Contain("22 pairs (tsv; decoder start id 0, pad id 0)")
                .And.Contain("9 sources and 7 targets cut to 32 tokens")
        );
        return outDir;
    }

    [TestCaseSource(nameof(Forms))]
    public void BothStacksMatchTheHooks(string form)
    {
        var fixture = T5Fixture.Load();
        Assert.That(fixture.Exports.Values, Has.All.StartsWith("ok"));
        // The single graphs sit beside no config.json: the ids are given; the folder's config.json gives them.
        string[] ids = form == "optimum" ? [] : ["--decoder-start-id", "0", "--pad-id", "0"];
        string dir = Analyze(T5Fixture.PathOf(form), T5Fixture.PathOf("heldout.ids.tsv"), "ids", ids);
        var stats = SparsityStats.Load(Path.Combine(dir, SparsityStats.FileName));
        var counts = SparsityCounts.Load(dir);
        Assert.That(
            counts.PairCounts,
            Is.EqualTo(new PairCounts(fixture.Pairs, fixture.Truncated["sources"], fixture.Truncated["targets"]))
        );
        Assert.That(stats.Pairs, Is.EqualTo(new PairSettings("tsv", 0, 0)));
        Assert.That(
            stats.Layers.Select(l => l.Name),
            Is.EqualTo(new[] { "encoder.0", "encoder.1", "decoder.0", "decoder.1", "decoder.2" })
        );
        for (int l = 0; l < fixture.Layers.Length; l++)
        {
            var expected = fixture.Layers[l];
            var actual = stats.Layers[l];
            string what = $"{form} {actual.Name}";
            Assert.That(
                (actual.Stack, actual.StackIndex, actual.Tokens),
                Is.EqualTo((expected.Stack, (int?)expected.Index, (long?)expected.Tokens)),
                what
            );
            Assert.That(actual.NonzeroFraction, Is.EqualTo(expected.NonzeroFraction).Within(1e-5), what);
            Assert.That(actual.PerTokenUnitsMean, Is.EqualTo(expected.UnitsPerTokenMean).Within(0.05), what);
            Assert.That(actual.DeadUnits, Is.EqualTo(expected.DeadUnits), what);
            // Exact, not only close: the same multiset of units per token, per pair side and per batch, and every
            // unit's count.
            var use = counts.Layers[l].ToUse();
            Assert.That(use.TokensPerUnit.ToArray(), Is.EqualTo(expected.TokensPerUnit), what);
            Assert.That(
                use.UnitsPerTokenHistogram.ToArray(),
                Is.EqualTo(Histogram(expected.UnitsPerToken, expected.DFf)),
                what
            );
            Assert.That(
                use.UnitsPerSequenceHistogram.ToArray(),
                Is.EqualTo(Histogram(expected.UnitsPerSequence, expected.DFf)),
                what
            );
            Assert.That(
                use.UnitsPerBatchHistogram.ToArray(),
                Is.EqualTo(Histogram(expected.UnitsPerBatch, expected.DFf)),
                what
            );
        }
    }

    [Test]
    public void T5sOwnTokenizerGivesTheSameIdsAsPython()
    {
        // spiece.model (SentencePiece Unigram, no BOS) through Microsoft.ML.Tokenizers, </s> appended: the same pairs
        // as the ids.
        string fromText = Analyze(
            T5Fixture.PathOf("optimum"),
            T5Fixture.PathOf("heldout.tsv"),
            "hf:" + T5Fixture.PathOf("optimum")
        );
        string fromIds = Analyze(T5Fixture.PathOf("optimum"), T5Fixture.PathOf("heldout.ids.tsv"), "ids");
        var a = SparsityCounts.Load(fromText);
        var b = SparsityCounts.Load(fromIds);
        for (int l = 0; l < a.Layers.Count; l++)
            AssertCounts.Equal(a.Layers[l].ToUse(), b.Layers[l].ToUse(), a.Layers[l].Name);
    }

    [Test]
    public void APlainTextCorpusNeedsTheReconstructOption()
    {
        string model = T5Fixture.PathOf("optimum");
        string text = HookFixture.Corpus;
        string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            model,
            "--corpus",
            text,
            "--tokenizer",
            "ids",
            "--seq-len",
            "32",
            "--out",
            outDir
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(
            error.Trim(),
            Does.StartWith("error: An encoder-decoder model reads pairs").And.Contain("--pairs reconstruct")
        );
        Assert.That(error.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(Directory.Exists(outDir), Is.False);

        // With it, every window is its own target: both stacks count the same positions.
        (exit, var output, error) = Cli.Run(
            "analyze",
            "--model",
            model,
            "--corpus",
            text,
            "--tokenizer",
            "hf:" + model,
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--pairs",
            "reconstruct",
            "--out",
            outDir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("(reconstruct; decoder start id 0, pad id 0)"));
        var stats = SparsityStats.Load(Path.Combine(outDir, SparsityStats.FileName));
        Assert.That(stats.Layers.Select(l => l.Tokens).Distinct().Count(), Is.EqualTo(1));
    }

    [Test]
    public void DecoderOnlyOptionsAndModelsStayApart()
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            HookFixture.PathOf("opt.torchscript.onnx"),
            "--corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "32",
            "--pairs",
            "reconstruct",
            "--out",
            outDir
        );
        Assert.That(
            (exit, error.Trim()),
            Is.EqualTo(
                (
                    2,
                    $"error: --pairs, --decoder-start-id and --pad-id are for encoder-decoder models (a graph taking decoder_input_ids, or Optimum's folder); {HookFixture.PathOf("opt.torchscript.onnx")} is not one."
                )
            )
        );
        // A single graph without config.json beside it must be told the decoder's start id.
        (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            T5Fixture.PathOf("t5.torchscript.onnx"),
            "--corpus",
            T5Fixture.PathOf("heldout.ids.tsv"),
            "--tokenizer",
            "ids",
            "--seq-len",
            "32",
            "--out",
            outDir
        );
        Assert.That(
            (exit, error.Trim()),
            Is.EqualTo(
                (
                    2,
                    $"error: The decoder's start id is unknown: no config.json with decoder_start_token_id beside {T5Fixture.PathOf("t5.torchscript.onnx")}; give --decoder-start-id (T5: 0)."
                )
            )
        );
    }

    [Test]
    public void TheOptimumFolderJoinsIntoOneGraphWithPyTorchsLogits()
    {
        var fixture = T5Fixture.Load();
        var joined = EncoderDecoder.LoadFolder(T5Fixture.PathOf("optimum"));
        Assert.That(
            GraphInputs.Required(joined).Select(i => i.Name),
            Is.EquivalentTo(new[] { "input_ids", "attention_mask", "decoder_input_ids" })
        );
        Assert.That(
            joined.Graph.Output.Select(o => o.Name),
            Is.EqualTo(new[] { "logits" }),
            "the decoder's presents are dropped"
        );
        foreach (var model in new[] { joined, OnnxGraph.Load(T5Fixture.PathOf("t5.torchscript.onnx")) })
        {
            using var session = OrtSession.Open(model, new Microsoft.ML.OnnxRuntime.SessionOptions());
            var p = fixture.Probe;
            using var ids = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(
                p.InputIds,
                [p.Shape[0], p.Shape[1]]
            );
            using var mask = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(
                p.AttentionMask,
                [p.Shape[0], p.Shape[1]]
            );
            using var dec = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(
                p.DecoderInputIds,
                [p.DecoderShape[0], p.DecoderShape[1]]
            );
            using var run = new Microsoft.ML.OnnxRuntime.RunOptions();
            using var outputs = session.Run(
                run,
                ["input_ids", "attention_mask", "decoder_input_ids"],
                [ids, mask, dec],
                ["logits"]
            );
            Assert.That(outputs[0].GetTensorDataAsSpan<float>().ToArray(), Is.EqualTo(p.Logits).Within(1e-4f));
        }
    }

    [Test]
    public void SitesAreTaggedByStackWhateverTheExporter()
    {
        foreach (string graph in new[] { "t5.torchscript.onnx", "t5.dynamo.onnx" })
        {
            var sites = MlpSites.Find(OnnxGraph.Load(T5Fixture.PathOf(graph)));
            Assert.That(
                sites.Select(s => s.DisplayName),
                Is.EqualTo(new[] { "encoder.0", "encoder.1", "decoder.0", "decoder.1", "decoder.2" }),
                graph
            );
            Assert.That(sites.Select(s => s.Layer), Is.EqualTo(new[] { 0, 1, 2, 3, 4 }), graph);
        }
        // The decoder of Optimum's folder alone is an ordinary graph (it takes input_ids, not decoder_input_ids).
        Assert.That(
            MlpSites.Find(OnnxGraph.Load(T5Fixture.PathOf("optimum/decoder_model.onnx"))).Select(s => s.Stack),
            Has.All.EqualTo(ModelStack.None)
        );
    }

    [Test]
    public void AnOptimumFolderIsPrunedAndTopKedIntoFoldersOfItsLayout()
    {
        string folder = TestCorpus.TempDir();
        foreach (string f in Directory.EnumerateFiles(T5Fixture.PathOf("optimum")))
            File.Copy(f, Path.Combine(folder, Path.GetFileName(f)));
        File.Copy(
            T5Fixture.PathOf("optimum/decoder_model.onnx"),
            Path.Combine(folder, EncoderDecoder.DecoderWithPastFile)
        ); // stands in for the graph with a past
        string stats = Path.Combine(
            Analyze(folder, T5Fixture.PathOf("heldout.ids.tsv"), "ids"),
            SparsityStats.FileName
        );
        var dead = SparsityStats.Load(stats).Layers.Select(l => 256 - l.DeadUnits).ToArray();

        string pruned = Path.Combine(TestCorpus.TempDir(), "dead");
        var (exit, output, error) = Cli.Run(
            "prune",
            "--model",
            folder,
            "--stats",
            stats,
            "--dead-only",
            "--out",
            pruned
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain($"Units per layer: 256 256 256 256 256 → {string.Join(' ', dead)}"));
        Assert.That(
            output,
            Does.Contain("Exact on the statistics' text: max |Δ logits| =").And.Contain("on a batch of 4 × 64")
        );
        Assert.That(
            output,
            Does.Contain($"Left out (graphs with a past").And.Contain(EncoderDecoder.DecoderWithPastFile)
        );
        Assert.That(
            File.Exists(Path.Combine(pruned, "config.json")) && File.Exists(Path.Combine(pruned, "spiece.model")),
            "the folder's other files come along"
        );
        Assert.That(File.Exists(Path.Combine(pruned, EncoderDecoder.DecoderWithPastFile)), Is.False);
        Assert.That(
            MlpSites.Find(OnnxGraph.Load(Path.Combine(pruned, EncoderDecoder.EncoderFile))).Select(s => s.DFf),
            Is.EqualTo(dead[..2])
        );
        Assert.That(
            MlpSites.Find(OnnxGraph.Load(Path.Combine(pruned, EncoderDecoder.DecoderFile))).Select(s => s.DFf),
            Is.EqualTo(dead[2..])
        );

        // Teacher-forced evaluation: the pruned folder scores exactly what the input does, on every target token.
        string Loss(string model)
        {
            var (code, text, err) = Cli.Run(
                "evaluate",
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
                "--runs",
                "1",
                "--out",
                Path.Combine(TestCorpus.TempDir(), "eval")
            );
            Assert.That(code, Is.EqualTo(0), err);
            Assert.That(
                text,
                Does.Contain("421 next-token predictions"),
                "one per target token of the 22 pairs, as the hooks count the decoder's"
            );
            return text.Split('\n')
                .First(l =>
                    l.StartsWith("| ", StringComparison.Ordinal) && !l.StartsWith("| model", StringComparison.Ordinal)
                )
                .Split('|')[5];
        }
        Assert.That(Loss(pruned), Is.EqualTo(Loss(folder)));

        string variants = Path.Combine(TestCorpus.TempDir(), "topk");
        (exit, output, error) = Cli.Run("topk", "--model", folder, "--k", "16,256", "--out", variants);
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("Top-k (k=16, k=256) inserted in 5 layers"));
        string k16 = Analyze(Path.Combine(variants, "k16"), T5Fixture.PathOf("heldout.ids.tsv"), "ids");
        foreach (var layer in SparsityCounts.Load(k16).Layers)
            Assert.That(
                Array.FindLastIndex(layer.UnitsPerTokenHistogram, c => c > 0),
                Is.InRange(1, 16),
                $"{layer.Name}: at most 16 active units per token"
            );
    }

    [Test]
    public void ShardsOfPairsMergeIntoTheSingleRun()
    {
        string corpus = T5Fixture.PathOf("heldout.ids.tsv"),
            model = T5Fixture.PathOf("optimum");
        string whole = Analyze(model, corpus, "ids");
        var parts = new List<string>();
        for (int i = 0; i < 2; i++)
        {
            string outDir = Path.Combine(TestCorpus.TempDir(), "shard");
            var (code, _, err) = Cli.Run(
                "analyze",
                "--model",
                model,
                "--corpus",
                corpus,
                "--tokenizer",
                "ids",
                "--seq-len",
                "32",
                "--batch-size",
                "4",
                "--shard",
                $"{i}/2",
                "--out",
                outDir
            );
            Assert.That(code, Is.EqualTo(0), err);
            parts.Add(outDir);
        }
        string merged = Path.Combine(TestCorpus.TempDir(), "merged");
        var (exit, _, error) = Cli.Run(["merge", "--inputs", .. parts, "--out", merged]);
        Assert.That(exit, Is.EqualTo(0), error);
        var a = SparsityCounts.Load(whole);
        var b = SparsityCounts.Load(merged);
        Assert.That(b.PairCounts, Is.EqualTo(a.PairCounts));
        for (int l = 0; l < a.Layers.Count; l++)
            AssertCounts.Equal(b.Layers[l].ToUse(), a.Layers[l].ToUse(), a.Layers[l].Name);
        Assert.That(
            b.Layers.Select(l => (l.Stack, l.StackIndex)),
            Is.EqualTo(a.Layers.Select(l => (l.Stack, l.StackIndex)))
        );
    }

    [Test]
    public void ReportAndCheckNameTheStacks()
    {
        string dir = Analyze(T5Fixture.PathOf("optimum"), T5Fixture.PathOf("heldout.ids.tsv"), "ids");
        var (exit, _, error) = Cli.Run("report", "--in", dir);
        Assert.That(exit, Is.EqualTo(0), error);
        string report = File.ReadAllText(Path.Combine(dir, "report.md"));
        Assert.That(
            report,
            Does.Contain(
                "(22 pairs, lines source<TAB>target; 470 source and 421 target tokens, 9 sources and 7 targets cut to 32 tokens"
            )
        );
        Assert.That(report, Does.Contain("| encoder.1 | 256 | 0.2879 |").And.Contain("| decoder.2 | 256 | 0.2897 |"));

        // A baseline whose decoder.0 was denser: the gate names the layer as users do.
        string stats = Path.Combine(dir, SparsityStats.FileName);
        var s = SparsityStats.Load(stats);
        var baseline = s with
        {
            Layers = s
                .Layers.Select(l => l.Label == "decoder.0" ? l with { NonzeroFraction = l.NonzeroFraction + 0.05 } : l)
                .ToList(),
        };
        string baselinePath = Path.Combine(TestCorpus.TempDir(), "baseline.json");
        File.WriteAllText(baselinePath, System.Text.Json.JsonSerializer.Serialize(baseline, ProjectJson.Options));
        (exit, var output, _) = Cli.Run("check", "--stats", stats, "--baseline", baselinePath);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(output, Does.Contain("FAIL decoder.0 nonzero_fraction: 0.362882 vs baseline 0.412882"));
    }

    [Test]
    public void AT5CheckpointIsExportedFromItsSafetensorsWithPyTorchsLogits()
    {
        var fixture = T5Fixture.Load();
        string folder = Path.Combine(TestCorpus.TempDir(), "t5");
        var (exit, output, error) = Cli.Run("export", "--checkpoint", T5Fixture.PathOf("checkpoint"), "--out", folder);
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("Exported 2 encoder and 3 decoder layers (d_ff 256"));
        foreach (
            string file in new[]
            {
                "encoder_model.onnx",
                "decoder_model.onnx",
                "config.json",
                "spiece.model",
                "tokenizer.json",
            }
        )
            Assert.That(File.Exists(Path.Combine(folder, file)), file);

        var p = fixture.Probe;
        using var session = OrtSession.Open(
            EncoderDecoder.LoadFolder(folder),
            new Microsoft.ML.OnnxRuntime.SessionOptions()
        );
        using var ids = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(
            p.InputIds,
            [p.Shape[0], p.Shape[1]]
        );
        using var mask = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(
            p.AttentionMask,
            [p.Shape[0], p.Shape[1]]
        );
        using var dec = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(
            p.DecoderInputIds,
            [p.DecoderShape[0], p.DecoderShape[1]]
        );
        using var run = new Microsoft.ML.OnnxRuntime.RunOptions();
        using var outputs = session.Run(
            run,
            ["input_ids", "attention_mask", "decoder_input_ids"],
            [ids, mask, dec],
            ["logits"]
        );
        Assert.That(
            outputs[0].GetTensorDataAsSpan<float>().ToArray(),
            Is.EqualTo(p.Logits).Within(1e-4f),
            "PyTorch's logits, a padded source among them"
        );

        // Windows of 32 reach the far relative-position buckets (log-spaced past 8 in the encoder, 16 in the decoder):
        // the hooks' exact counts.
        var counts = SparsityCounts.Load(Analyze(folder, T5Fixture.PathOf("heldout.tsv"), "hf:" + folder));
        for (int l = 0; l < fixture.Layers.Length; l++)
            Assert.That(
                counts.Layers[l].TokensPerUnit,
                Is.EqualTo(fixture.Layers[l].TokensPerUnit),
                counts.Layers[l].Name
            );
    }

    [Test]
    public void GatedT5IsRefusedByNameAndHalfWeightsAreWidened()
    {
        string gated = TestCorpus.TempDir();
        foreach (string f in Directory.EnumerateFiles(T5Fixture.PathOf("checkpoint")))
            File.Copy(f, Path.Combine(gated, Path.GetFileName(f)));
        string config = Path.Combine(gated, "config.json");
        File.WriteAllText(
            config,
            File.ReadAllText(config).Replace("\"feed_forward_proj\": \"relu\"", "\"feed_forward_proj\": \"gated-gelu\"")
        );
        var (exit, _, error) = Cli.Run(
            "export",
            "--checkpoint",
            gated,
            "--out",
            Path.Combine(TestCorpus.TempDir(), "out")
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("feed_forward_proj is 'gated-gelu' (T5 v1.1, Flan-T5, mT5): a gated GELU MLP"));

        // The same weights stored in bf16 (rounded to nearest even): widened exactly, the statistics within rounding of
        // fp32's.
        string half = TestCorpus.TempDir();
        foreach (string f in Directory.EnumerateFiles(T5Fixture.PathOf("checkpoint")))
            File.Copy(f, Path.Combine(half, Path.GetFileName(f)));
        Bf16(Path.Combine(half, "model.safetensors"));
        string folder = Path.Combine(TestCorpus.TempDir(), "t5");
        (exit, var output, error) = Cli.Run("export", "--checkpoint", half, "--out", folder);
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("(BF16 weights, computed in float32)"));
        var stats = SparsityStats.Load(
            Path.Combine(Analyze(folder, T5Fixture.PathOf("heldout.ids.tsv"), "ids"), SparsityStats.FileName)
        );
        var fixture = T5Fixture.Load();
        for (int l = 0; l < fixture.Layers.Length; l++)
            Assert.That(
                stats.Layers[l].NonzeroFraction,
                Is.EqualTo(fixture.Layers[l].NonzeroFraction).Within(0.01),
                stats.Layers[l].Name
            );
    }

    // Rewrites a float32 safetensors file in bf16 (round to nearest even), as checkpoints are often shipped.
    static void Bf16(string path)
    {
        byte[] file = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(file, 0);
        var header = System
            .Text.Json.Nodes.JsonNode.Parse(System.Text.Encoding.UTF8.GetString(file, 8, (int)n))!
            .AsObject();
        var data = new List<byte>();
        foreach (var (name, node) in header.ToList())
        {
            if (name == "__metadata__")
                continue;
            var offsets = node!["data_offsets"]!.AsArray();
            long begin = offsets[0]!.GetValue<long>(),
                end = offsets[1]!.GetValue<long>();
            long start = data.Count;
            for (long at = 8 + n + begin; at < 8 + n + end; at += 4)
            {
                uint bits = BitConverter.ToUInt32(file, (int)at);
                ushort rounded = (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
                data.AddRange(BitConverter.GetBytes(rounded));
            }
            node["dtype"] = "BF16";
            node["data_offsets"] = new System.Text.Json.Nodes.JsonArray(start, (long)data.Count);
        }
        byte[] json = System.Text.Encoding.UTF8.GetBytes(header.ToJsonString());
        using var output = File.Create(path);
        output.Write(BitConverter.GetBytes((long)json.Length));
        output.Write(json);
        output.Write(data.ToArray());
    }

    [TestCase("t5.torchscript.onnx", TensorProto.Types.DataType.Float16)]
    [TestCase("t5.torchscript.onnx", TensorProto.Types.DataType.Bfloat16)]
    [TestCase("t5.dynamo.onnx", TensorProto.Types.DataType.Float16)]
    [TestCase("t5.dynamo.onnx", TensorProto.Types.DataType.Bfloat16)]
    public void RelativePositionBucketsStayFloat32InHalfPrecision(string graph, TensorProto.Types.DataType type)
    {
        // ⌊log(d / 8) / log(16) · 8⌋ in fp16 or bf16 gives bucket 9 for d = 16 (the H200 run: T5 moved by 1e-4 in fp16
        // and failed in bf16); the conversion keeps integer-to-integer float arithmetic in float32. The buckets, run on
        // the CPU (they are integer and float32 ops only), equal transformers' formula at every distance of a 32-token
        // window.
        var model = OnnxGraph.Load(T5Fixture.PathOf(graph));
        var converted = Float16.Convert(model, type);
        // Structurally: each Log reads float32 arithmetic that starts at casts to float32 of integers, with float32
        // constants.
        var index = new GraphIndex(converted.Graph);
        var logs = converted.Graph.Node.Where(n => n.OpType == "Log").ToList();
        Assert.That(logs, Has.Count.EqualTo(2));
        foreach (var log in logs)
        {
            var pending = new Stack<string>([log.Input[0]]);
            while (pending.TryPop(out var tensor))
            {
                if (index.Constant(tensor) is { } constant)
                {
                    Assert.That(constant.DataType, Is.EqualTo((int)TensorProto.Types.DataType.Float), tensor);
                    continue;
                }
                var producer = index.Producer(tensor)!;
                if (producer.OpType == "Cast")
                {
                    Assert.That(
                        producer.Attribute.Single(a => a.Name == "to").I,
                        Is.EqualTo((long)TensorProto.Types.DataType.Float),
                        producer.Name
                    );
                    continue;
                }
                foreach (string i in producer.Input)
                    pending.Push(i);
            }
        }
        // Numerically (ONNX Runtime's CPU provider lacks bf16 kernels for the layer norm TorchScript's export reads the
        // length from).
        foreach (
            var m in type == TensorProto.Types.DataType.Float16 || graph.Contains("dynamo")
                ? new[] { model, converted }
                : [model]
        )
        {
            var gathers = m
                .Graph.Node.Where(n =>
                    n.OpType == "Gather"
                    && m.Graph.Initializer.Any(t => t.Name == n.Input[0] && t.Dims.SequenceEqual(new long[] { 32, 4 }))
                )
                .ToList();
            Assert.That(gathers, Has.Count.EqualTo(2), "the encoder's and the decoder's bias tables");
            var buckets = m.Clone();
            buckets.Graph.Output.Clear();
            foreach (var g in gathers)
                buckets.Graph.Output.Add(
                    new ValueInfoProto
                    {
                        Name = g.Input[1],
                        Type = new TypeProto
                        {
                            TensorType = new TypeProto.Types.Tensor
                            {
                                ElemType = (int)TensorProto.Types.DataType.Int64,
                            },
                        },
                    }
                );
            OnnxGraph.RemoveDeadNodes(buckets.Graph);
            using var session = OrtSession.Open(buckets, new Microsoft.ML.OnnxRuntime.SessionOptions());
            var ids = new long[32];
            var ones = Enumerable.Repeat(1L, 32).ToArray();
            using var a = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(ids, [1, 32]);
            using var b = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(ones, [1, 32]);
            using var c = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory((long[])ids.Clone(), [1, 32]);
            var feeds = new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue>
            {
                ["input_ids"] = a,
                ["attention_mask"] = b,
                ["decoder_input_ids"] = c,
            };
            using var run = new Microsoft.ML.OnnxRuntime.RunOptions();
            var names = session.InputNames.ToArray();
            using var results = session.Run(
                run,
                names,
                names.Select(n => feeds[n]).ToArray(),
                session.OutputNames.ToArray()
            );
            var tables = results.Select(r => r.GetTensorDataAsSpan<long>().ToArray()).ToList();
            for (int stack = 0; stack < 2; stack++)
            {
                bool bidirectional = stack == 0; // encoder first in graph order
                var expected = new long[32 * 32];
                for (int q = 0; q < 32; q++)
                for (int k = 0; k < 32; k++)
                    expected[q * 32 + k] = Bucket(k - q, bidirectional);
                Assert.That(
                    tables[stack],
                    Is.EqualTo(expected),
                    $"{graph} {(m == model ? "fp32" : type.ToString())} {(bidirectional ? "encoder" : "decoder")}"
                );
            }
        }
    }

    // transformers' T5Attention._relative_position_bucket (32 buckets, max distance 128), in double precision.
    static long Bucket(long relative, bool bidirectional)
    {
        long buckets = 32,
            result = 0;
        if (bidirectional)
        {
            buckets /= 2;
            if (relative > 0)
                result += buckets;
            relative = Math.Abs(relative);
        }
        else
            relative = -Math.Min(relative, 0);
        long exact = buckets / 2;
        if (relative < exact)
            return result + relative;
        long large = exact + (long)(Math.Log(relative / (double)exact) / Math.Log(128.0 / exact) * (buckets - exact));
        return result + Math.Min(large, buckets - 1);
    }

    [Test]
    public void AMergedDecoderIsReadThroughItsBranchWithoutACache()
    {
        // Optimum's decoder_model_merged.onnx: one If on use_cache_branch, the decoder without past as its else branch,
        // the one with past as its then branch (a stand-in here, never taken), the shared weights outside, past inputs
        // beside.
        var decoder = OnnxGraph.Load(T5Fixture.PathOf("optimum/decoder_model.onnx"));
        var merged = decoder.Clone();
        var g = merged.Graph;
        var withoutPast = new GraphProto { Name = "no_past" };
        var withPast = new GraphProto { Name = "with_past" };
        foreach (var node in g.Node)
        {
            var copy = node.Clone();
            for (int i = 0; i < copy.Output.Count; i++)
                if (g.Output.Any(o => o.Name == copy.Output[i]))
                    copy.Output[i] += ".no_past";
            withoutPast.Node.Add(copy);
        }
        foreach (var o in g.Output)
        {
            withoutPast.Output.Add(new ValueInfoProto { Name = o.Name + ".no_past", Type = o.Type.Clone() });
            withPast.Node.Add(
                OnnxGraph.Node("Identity", o.Name + "/stand_in", ["encoder_hidden_states"], [o.Name + ".with_past"])
            );
            withPast.Output.Add(new ValueInfoProto { Name = o.Name + ".with_past", Type = o.Type.Clone() });
        }
        g.Node.Clear();
        g.Node.Add(
            OnnxGraph.Node(
                "If",
                "optimum::if",
                [EncoderDecoder.UseCacheBranch],
                g.Output.Select(o => o.Name),
                new AttributeProto
                {
                    Name = "then_branch",
                    Type = AttributeProto.Types.AttributeType.Graph,
                    G = withPast,
                },
                new AttributeProto
                {
                    Name = "else_branch",
                    Type = AttributeProto.Types.AttributeType.Graph,
                    G = withoutPast,
                }
            )
        );
        g.Input.Add(OnnxGraph.Value(EncoderDecoder.UseCacheBranch, TensorProto.Types.DataType.Bool, 1));
        g.Input.Add(
            OnnxGraph.Value(
                "past_key_values.0.decoder.key",
                TensorProto.Types.DataType.Float,
                "batch_size",
                4,
                "past_decoder_sequence_length",
                16
            )
        );
        string folder = TestCorpus.TempDir();
        foreach (string f in new[] { "encoder_model.onnx", "config.json", "spiece.model" })
            File.Copy(T5Fixture.PathOf("optimum/" + f), Path.Combine(folder, f));
        OnnxGraph.Save(merged, Path.Combine(folder, EncoderDecoder.MergedDecoderFile));

        var fixture = T5Fixture.Load();
        string dir = Analyze(folder, T5Fixture.PathOf("heldout.ids.tsv"), "ids");
        var counts = SparsityCounts.Load(dir);
        for (int l = 0; l < fixture.Layers.Length; l++)
            Assert.That(
                counts.Layers[l].TokensPerUnit,
                Is.EqualTo(fixture.Layers[l].TokensPerUnit),
                counts.Layers[l].Name
            );

        // Pruned: the folder gets the decoder without past, the merged one is left out and named.
        string pruned = Path.Combine(TestCorpus.TempDir(), "dead");
        var (exit, output, error) = Cli.Run(
            "prune",
            "--model",
            folder,
            "--stats",
            Path.Combine(dir, SparsityStats.FileName),
            "--dead-only",
            "--out",
            pruned
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(
            output,
            Does.Contain("Exact on the statistics' text")
                .And.Contain("Left out (graphs with a past")
                .And.Contain(EncoderDecoder.MergedDecoderFile)
        );
        Assert.That(File.Exists(Path.Combine(pruned, EncoderDecoder.DecoderFile)));

        // Anything else with an If is refused by name.
        var twoIfs = merged.Clone();
        twoIfs.Graph.Node.Add(
            OnnxGraph.Node(
                "If",
                "other::if",
                ["use_cache_branch"],
                ["x"],
                new AttributeProto
                {
                    Name = "then_branch",
                    Type = AttributeProto.Types.AttributeType.Graph,
                    G = withPast.Clone(),
                },
                new AttributeProto
                {
                    Name = "else_branch",
                    Type = AttributeProto.Types.AttributeType.Graph,
                    G = withPast.Clone(),
                }
            )
        );
        var refused = Assert.Throws<UserInputException>(() => EncoderDecoder.FoldMergedDecoder(twoIfs, "two.onnx"))!;
        Assert.That(
            refused.Message,
            Does.StartWith("two.onnx is not an Optimum merged decoder (one If on use_cache_branch")
        );
    }

    [Test]
    public void TopWindowsPointIntoEachStacksOwnSide()
    {
        string dir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            T5Fixture.PathOf("optimum"),
            "--corpus",
            T5Fixture.PathOf("heldout.ids.tsv"),
            "--tokenizer",
            "ids",
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--top-examples",
            "5",
            "--out",
            dir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        var counts = SparsityCounts.Load(dir);
        var examples = UnitExamples.Load(dir, 5, counts.Layers.Select(l => l.DFf).ToList());
        var pairs = File.ReadAllLines(T5Fixture.PathOf("heldout.ids.tsv"))
            .Select(l => l.Split('\t').Select(side => Math.Min(32, side.Split(' ').Length)).ToArray())
            .ToList();
        for (int l = 0; l < counts.Layers.Count; l++)
        {
            int side = counts.Layers[l].Stack == "encoder" ? 0 : 1;
            for (int u = 0; u < 256; u++)
            {
                var top = examples.Layers[l].Top.Of(u).ToArray();
                // A unit active on n of the pairs' positions has min(5, pairs it fired in) windows; a dead one none.
                Assert.That(
                    top.Length == 0,
                    Is.EqualTo(counts.Layers[l].TokensPerUnit[u] == 0),
                    $"{counts.Layers[l].Label} unit {u}"
                );
                foreach (var e in top)
                {
                    Assert.That(e.Value, Is.GreaterThan(0f));
                    Assert.That(e.WindowStart, Is.EqualTo(0));
                    Assert.That(
                        e.Position,
                        Is.LessThan(pairs[(int)e.Document][side]),
                        $"{counts.Layers[l].Label} unit {u}: inside pair {e.Document}'s {(side == 0 ? "source" : "target")}"
                    );
                }
            }
        }
        // The decoder's windows are what it read: its start id, then the target.
        (exit, var output, error) = Cli.Run("unit", "--stats", dir, "--layer", "decoder.1", "--unit", "4");
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.StartWith("decoder.1, unit 4: active on"));
        // Pair 12's target starts 35 215 …: the decoder read 0 35 215 …, and this unit peaked on its third token.
        Assert.That(
            output,
            Does.Contain("12:2      035[[215]]"),
            "a decoder window opens with the start id 0, then the target"
        );
    }

    static long[] Histogram(int[] values, int dFf)
    {
        var h = new long[dFf + 1];
        foreach (int v in values)
            h[v]++;
        return h;
    }
}
