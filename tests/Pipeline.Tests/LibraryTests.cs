using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Streaming;
using Sparsity.Pipeline.Variants;

namespace Sparsity.Tests;

/// <summary>The capabilities as C# calls, without the command line: what a user's own program or notebook
/// does.</summary>
[TestFixture]
public class LibraryTests
{
    static AnalysisRequest Request(string model, string outDir, int shard = 0, int shards = 1) =>
        new()
        {
            Model = model,
            Corpus = HookFixture.Corpus,
            Tokenizer = TokenizerSpec.Bytes,
            SeqLen = 32,
            BatchSize = 4,
            ShardIndex = shard,
            ShardCount = shards,
            Threads = 2,
            OutDir = outDir,
        };

    [Test]
    public void AnalyzeInShardsMergePruneAndTopKFromCode()
    {
        string model = HookFixture.PathOf("llama.dynamo.onnx"),
            dir = TestCorpus.TempDir();
        var fixture = HookFixture.Load("llama");
        var whole = Analyzer.Run(Request(model, Path.Combine(dir, "whole")));
        Analyzer.Run(Request(model, Path.Combine(dir, "s0"), 0, 2));
        Analyzer.Run(Request(model, Path.Combine(dir, "s1"), 1, 2));
        var merged = SparsityStats.From(
            Shards.Merge(
                [Path.Combine(dir, "s0"), Path.Combine(dir, "s1")],
                allowPartial: false,
                Path.Combine(dir, "merged")
            )
        );

        // PyTorch hooks on the same 1,959 tokens: the gated MLP's units are relu(gate).
        Assert.That(whole.Tokens, Is.EqualTo(fixture.Tokens));
        Assert.That(whole.Layers.Select(l => l.DeadUnits), Is.EqualTo(fixture.Layers.Select(l => l.DeadUnits)));
        Assert.That(
            whole.Layers.Select(l => l.NonzeroFraction),
            Is.EqualTo(fixture.Layers.Select(l => l.NonzeroFraction)).Within(1e-4)
        );
        string Json(SparsityStats x) =>
            System.Text.Json.JsonSerializer.Serialize(x with { Shards = [] }, ProjectJson.Options);
        Assert.That(
            Json(merged),
            Is.EqualTo(Json(whole)),
            "two shards merged = one run, every figure but the shard list"
        );
        Assert.That(merged.Shards, Is.EqualTo(new[] { "0/2", "1/2" }));

        var pruned = Pruning.Run(
            new PruneRequest(
                model,
                MaskRules.DeadOnly(whole),
                Path.Combine(dir, "dead.onnx"),
                ["Relu"],
                Stats: Path.Combine(dir, "whole", SparsityStats.FileName),
                DeadOnly: true
            )
        );
        Assert.That(pruned.Report.UnitsAfter, Is.EqualTo(fixture.Layers.Select(l => l.DFf - l.DeadUnits)));
        Assert.That(pruned.MaxLogitChange, Is.LessThan(1e-4f), "dead units removed: exact on the statistics' text");
        Assert.That(
            MlpSites.Find(OnnxGraph.Load(Path.Combine(dir, "dead.onnx"))).Select(s => s.DFf),
            Is.EqualTo(pruned.Report.UnitsAfter)
        );

        var topK = TopKVariants.Run(
            new TopKRequest(model, [new TopKVariant("k=256", "k256", [256])], Path.Combine(dir, "k256.onnx"), ["Relu"])
        );
        Assert.That(topK.MaxLogitChange, Is.LessThan(1e-4f), "k = d_ff changes nothing");
        Assert.That(topK.Layers, Is.EqualTo(2));
    }
}

[TestFixture]
public class CountingThreadTests
{
    [Test]
    public void CountingOnAThreadOfItsOwnGivesTheSameCounts()
    {
        string dir = TestCorpus.TempDir();
        AnalysisRequest Request(string outDir, bool thread) =>
            new()
            {
                Model = HookFixture.PathOf("llama.dynamo.onnx"),
                Corpus = HookFixture.Corpus,
                Tokenizer = TokenizerSpec.Bytes,
                SeqLen = 32,
                BatchSize = 4,
                Threads = 2,
                OutDir = Path.Combine(dir, outDir),
                CountingThread = thread,
            };
        Analyzer.Run(Request("inline", false));
        Analyzer.Run(Request("thread", true));
        string Json(string d) =>
            System.Text.Json.JsonSerializer.Serialize(
                SparsityCounts.Load(Path.Combine(dir, d)).Layers,
                ProjectJson.Options
            );
        Assert.That(
            Json("thread"),
            Is.EqualTo(Json("inline")),
            "18 batches counted on the counting thread, buffers reused"
        );
        Assert.That(
            SparsityCounts.Load(Path.Combine(dir, "thread")).Layers[0].UnitsPerBatchHistogram.Sum(),
            Is.EqualTo(18)
        );
    }
}
