using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Benchmarking;
using Sparsity.Pipeline.Streaming;
using Sparsity.Training;
using Sparsity.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Sparsity.Tests;

[TestFixture]
public class BenchTests
{
    [Test]
    public void HiddenCountsMatchHandCountsAndSkipPadding()
    {
        // Batch of 2 sequences × 2 positions × 3 units; the second sequence's last position is padding.
        var hidden = tensor(new float[] { 1, 0, 2, 0, 0, 3, 0, 5, 0, 9, 9, 9 }, [2, 2, 3]);
        var real = tensor(new[] { true, true, true, false }, [2, 2]);
        var c = HiddenCounts.Of(hidden, real, 0f);
        Assert.That(c.UnitsPerToken, Is.EqualTo(new[] { 2, 1, 1 }));
        Assert.That(c.UnitsPerSequence, Is.EqualTo(new[] { 2, 1 })); // {0, 2} and {1}
        Assert.That(c.TokensPerUnit, Is.EqualTo(new long[] { 1, 1, 2 }));
        var all = HiddenCounts.Of(hidden, null, 0.5f);
        Assert.That(all.UnitsPerToken, Is.EqualTo(new[] { 2, 1, 1, 3 }));
        Assert.That(all.TokensPerUnit, Is.EqualTo(new long[] { 2, 2, 3 }));
    }

    [Test]
    public void EveryContenderMeasuresTheSameCountsAsAnalyze()
    {
        torch.random.manual_seed(7);
        var config = new ModelConfig(Layers: 2, DModel: 32, Heads: 4, DFf: 48, SeqLen: 16, VocabSize: 256);
        string dir = TestCorpus.TempDir();
        var tokenizer = TextTokenizer.FromSpec("bytes");
        using (var model = new ReluTransformer(config))
        {
            Checkpoint.Save(dir, model, tokenizer, new TrainOptions(), 0);
            OnnxGraph.Save(ModelExporter.Export(model, ExportVariant.Dense), Path.Combine(dir, "model.onnx"));
        }
        string corpus = Path.Combine(dir, "corpus.txt");
        File.WriteAllLines(corpus, TestCorpus.Documents(9, seed: 3).Select((d, i) => d[..(7 + i * 11 % d.Length)]));
        var data = TokenBatches.From(corpus, tokenizer, 16, 3, 256);

        var analyzed = Analyzer.Run(
            new AnalysisRequest
            {
                Model = Path.Combine(dir, "model.onnx"),
                Corpus = corpus,
                Tokenizer = TokenizerSpec.Bytes,
                SeqLen = 16,
                BatchSize = 3,
                Threads = 1,
                OutDir = Path.Combine(dir, "analysis"),
            }
        );
        var counts = SparsityCounts.Load(Path.Combine(dir, "analysis"));
        var direct = Contenders.DirectStatistics(Path.Combine(dir, "model.onnx"), data, 1);
        var torchSharp = Contenders.TorchSharpStatistics(dir, data, 1);
        Assert.That(data.Tokens, Is.EqualTo(analyzed.Tokens));
        for (int l = 0; l < config.Layers; l++)
        {
            var reference = counts.Layers[l].ToUse();
            AssertCounts.Equal(direct[l], reference); // same runtime, same graph: exact
            Assert.That(torchSharp[l].Tokens, Is.EqualTo(reference.Tokens));
            // TorchSharp and ONNX Runtime round differently, so a unit within float error of zero could flip; on this
            // seed none does, and a wrong mask or layout would flip many.
            Assert.That(torchSharp[l].TokensPerUnit.ToArray(), Is.EqualTo(reference.TokensPerUnit.ToArray()));
            Assert.That(
                torchSharp[l].UnitsPerSequenceHistogram.ToArray(),
                Is.EqualTo(reference.UnitsPerSequenceHistogram.ToArray())
            );
        }
    }
}

[TestFixture]
public class BenchReportTests
{
    static Sparsity.Pipeline.Variants.Evaluation Latency(double ms, int units) =>
        new(
            "m.onnx",
            "c.txt",
            16,
            4,
            100,
            2.5,
            Math.Exp(2.5),
            0.3,
            0.02,
            0.1,
            0.25,
            1000,
            4000,
            [units, units],
            2,
            ms,
            ms - 0.5,
            ms + 0.5,
            64 / (ms / 1000)
        );

    [Test]
    public void TheReportStatesEachRatioAgainstTheBareForwardOnTheSameTokens()
    {
        var data = new TokenBatches([], 4, 16, 1000);
        var request = new BenchRequest("ck", "c.txt", "bytes", 16, 4, 2, 3, "python3", "s.py", 8);
        var timings = new List<Timing>
        {
            new("tokenize", "t", [0.5, 0.5, 0.5], 1000),
            new("bare forward", "b", [1.0, 2.0, 3.0], 1000), // median 2
            new("analyze (stats)", "a", [2.0, 3.0, 9.0], 1000), // median 3: 1.50× bare, 3 / (2 + 0.5) = 1.20× bare + tokenize
            new("bare forward 8×", "b8", [10.0, 10.0, 10.0], 8000),
            new("analyze (stats) 8×", "a8", [12.0, 12.0, 12.0], 8000), // against the 8× bare forward: 1.20×, no tokenize column
        };
        var agreement = new List<Agreement> { new("analyze (stats)", 1000, [1234, 5678], [3.25, 4.5], [40.25, 50]) };
        var memory = new List<MemoryRow>
        {
            new("1×", 1000, 100_000_000, TimeSpan.FromSeconds(1.5)),
            new("8×", 8000, 110_000_000, TimeSpan.FromSeconds(9)),
        };
        var latency = new List<(string, Sparsity.Pipeline.Variants.Evaluation)>
        {
            ("dense", Latency(4, 48)),
            ("dead-only", Latency(3, 40)),
        };
        string dir = TestCorpus.TempDir();
        string md = BenchReport.Write(new BenchResult(data, request, timings, agreement, memory, latency, null), dir);

        string Row(string first) => md.Split('\n').First(l => l.StartsWith($"| {first} |"));
        Assert.That(
            Row("analyze (stats)"),
            Is.EqualTo("| analyze (stats) | a | 3.000 | 2.000–9.000 | 333 | 1.50 | 1.20 |")
        );
        Assert.That(Row("analyze (stats) 8×"), Does.EndWith("| 12.000 | 12.000–12.000 | 667 | 1.20 |  |"));
        Assert.That(md, Does.Contain("| analyze (stats) | 1,000 | 1,234 / 5,678 | 3.250, 4.500 | 40.25, 50.00 |"));
        Assert.That(Row("8×"), Is.EqualTo("| 8× | 8,000 | 110.0 | 9.00 | 1.10 |"));
        Assert.That(Row("dead-only"), Is.EqualTo("| dead-only | 40 / 40 | 3.00 | 2.50–3.50 | 0.75 | 2.5000 |"));
        Assert.That(File.ReadAllText(Path.Combine(dir, "bench.json")), Does.Contain("\"tokens_per_second\": 333.333"));
    }
}

[TestFixture]
public class BenchAnyGraphTests
{
    [Test]
    public void BenchOnAnyGraphRunsWithoutACheckpointAndSaysWhatItLeftOut()
    {
        string dir = Path.Combine(TestCorpus.TempDir(), "bench");
        var (exit, output, error) = Cli.Run(
            "bench",
            "--model",
            HookFixture.PathOf("opt.dynamo.onnx"),
            "--corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--threads",
            "1",
            "--repeats",
            "1",
            "--memory-factor",
            "2",
            "--out",
            dir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        string md = File.ReadAllText(Path.Combine(dir, "bench.md"));
        foreach (
            string row in new[]
            {
                "| bare forward |",
                "| analyze (dense) |",
                "| analyze (any graph) |",
                "| direct ORT loop |",
                "| analyze (any graph) 2× |",
                "| 2× as token ids (.u32.bin) |",
                "| dead-only |",
            }
        )
            Assert.That(md, Does.Contain(row));
        Assert.That(md, Does.Not.Contain("| TorchSharp |").And.Not.Contain("| analyze (stats) |"));
        Assert.That(
            md,
            Does.Contain(
                "without its checkpoint: the stats-export, TorchSharp and PyTorch-hook rows need the checkpoint and are left out."
            )
        );
        Assert.That(md, Does.Contain("; ONNX Runtime on cpu."));
        // Every contender measured the same thing: the active (token, unit) pairs per layer agree.
        var agreement = md.Split('\n')
            .Where(l =>
                l.StartsWith("| analyze (dense) | 1,959 |")
                || l.StartsWith("| analyze (any graph) | 1,959 |")
                || l.StartsWith("| direct ORT loop | 1,959 |")
            )
            .Select(l => l.Split('|')[3])
            .ToList();
        Assert.That(agreement, Has.Count.EqualTo(3));
        Assert.That(agreement.Distinct().Count(), Is.EqualTo(1), string.Join(" / ", agreement));

        (exit, _, error) = Cli.Run("bench", "--checkpoint", "x", "--model", "y.onnx", "--out", Path.Combine(dir, "2"));
        Assert.That(
            (exit, error.Trim()),
            Is.EqualTo(
                (2, "error: Give --checkpoint DIR (a model trained here) or --model M.onnx (any graph), not both.")
            )
        );
        // --device as analyze takes it: on this machine (no GPU) cuda is one line naming what is missing, and nothing
        // is written.
        (exit, _, error) = Cli.Run(
            "bench",
            "--model",
            HookFixture.PathOf("opt.dynamo.onnx"),
            "--corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--device",
            "cuda",
            "--out",
            Path.Combine(dir, "3")
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(error, Does.Contain("CUDA"));
        Assert.That(Directory.Exists(Path.Combine(dir, "3")), Is.False);
    }
}
