using System.Security.Cryptography;
using System.Text.Json.Nodes;
using NUnit.Framework;
using Sparsity.Analysis;

namespace Sparsity.Tests;

/// <summary>Statistics record where they came from, and only shards of one run merge.</summary>
[TestFixture]
public class ProvenanceTests
{
    static string Shard(string shard, string? model = null, string? corpus = null, params string[] extra)
    {
        string dir = Path.Combine(TestCorpus.TempDir(), "shard");
        var (exit, _, error) = Cli.Run([
            "analyze",
            "--model",
            model ?? HookFixture.PathOf("opt.torchscript.onnx"),
            "--corpus",
            corpus ?? HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--threads",
            "2",
            "--shard",
            shard,
            "--out",
            dir,
            .. extra,
        ]);
        Assert.That(exit, Is.EqualTo(0), error);
        return dir;
    }

    static (int Exit, string Out, string Err) Merge(params string[] inputs) =>
        Cli.Run(["merge", "--inputs", .. inputs, "--out", Path.Combine(TestCorpus.TempDir(), "merged")]);

    static string Hex(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    [Test]
    public void TheHeaderRecordsModelCorpusAndTokenizerHashes()
    {
        var h = SparsityCounts.Load(Shard("1/3")).Header;
        Assert.That(h.ModelSha256, Is.EqualTo(Hex(File.ReadAllBytes(HookFixture.PathOf("opt.torchscript.onnx")))));
        Assert.That(
            h.CorpusFingerprint,
            Is.EqualTo(
                new CorpusFingerprint(
                    HookFixture.Corpus,
                    new FileInfo(HookFixture.Corpus).Length,
                    Hex(File.ReadAllBytes(HookFixture.Corpus))
                )
            )
        );
        Assert.That(h.TokenizerSha256, Is.EqualTo(Hex("bytes"u8.ToArray())));
        Assert.That(
            (h.SeqLen, h.BatchSize, h.Threshold, h.MaxTokens, h.Shards[0]),
            Is.EqualTo((32, 4, 0f, (long?)null, "1/3"))
        );
        Assert.That(h.Producer, Does.StartWith("relu-sparsity 0.2.0"));
        var stats = SparsityStats.Load(Path.Combine(Shard("0/1"), SparsityStats.FileName));
        Assert.That(stats.ModelSha256, Is.EqualTo(h.ModelSha256), "stats.json carries the same provenance");
    }

    [Test]
    public void ExternalDataIsPartOfTheModelHash()
    {
        var h = SparsityCounts.Load(Shard("0/1", model: HookFixture.PathOf("opt.ext.onnx"))).Header;
        byte[] both =
        [
            .. File.ReadAllBytes(HookFixture.PathOf("opt.ext.onnx")),
            .. File.ReadAllBytes(HookFixture.PathOf("opt.ext.onnx.data")),
        ];
        Assert.That(h.ModelSha256, Is.EqualTo(Hex(both)));
    }

    [Test]
    public void ShardsOfDifferentCountsAreRefused()
    {
        var (exit, _, error) = Merge(Shard("0/2"), Shard("1/3"));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("shard count n differs").And.Contain("(2) and").And.Contain("(3);"));
    }

    [Test]
    public void ShardsOfDifferentCorporaAreRefused()
    {
        string other = Path.Combine(TestCorpus.TempDir(), "heldout.txt");
        File.WriteAllLines(other, File.ReadAllLines(HookFixture.Corpus).Select(l => l.ToUpperInvariant()));
        var (exit, _, error) = Merge(Shard("0/2"), Shard("1/2", corpus: other));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("Cannot merge: corpus (SHA-256) differs"));
    }

    [Test]
    public void ShardsOfTwoModelsWithTheSameFileNameAreRefused()
    {
        string a = Path.Combine(TestCorpus.TempDir(), "model.onnx"),
            b = Path.Combine(TestCorpus.TempDir(), "model.onnx");
        File.Copy(HookFixture.PathOf("opt.torchscript.onnx"), a);
        File.Copy(HookFixture.PathOf("gpt2.torchscript.onnx"), b);
        var (exit, _, error) = Merge(Shard("0/2", model: a), Shard("1/2", model: b));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("Cannot merge: model (SHA-256) differs"));
    }

    [Test]
    public void DifferentSettingsAreRefusedByName()
    {
        Assert.That(
            Merge(Shard("0/2"), Shard("1/2", null, null, "--threshold", "0.5")).Err,
            Does.Contain("threshold differs")
        );
        Assert.That(
            Merge(Shard("0/2"), Shard("1/2", null, null, "--max-tokens", "500")).Err,
            Does.Contain("max_tokens differs")
        );
        Assert.That(Merge(Shard("0/2"), Shard("0/2")).Err, Does.Contain("Shard 0/2 appears twice"));
    }

    [Test]
    public void MissingShardsAreRefusedUnlessPartialIsAsked()
    {
        string s0 = Shard("0/3"),
            s2 = Shard("2/3");
        var (exit, _, error) = Merge(s0, s2);
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("Shards 1/3 are missing"));

        string outDir = Path.Combine(TestCorpus.TempDir(), "partial");
        var (ok, output, err) = Cli.Run("merge", "--inputs", s0, s2, "--partial", "--out", outDir);
        Assert.That(ok, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("Partial merge: shards 1/3 are missing; the statistics cover 2 of 3 shards."));
        Assert.That(
            SparsityStats.Load(Path.Combine(outDir, SparsityStats.FileName)).Shards,
            Is.EqualTo(new[] { "0/3", "2/3" })
        );
    }

    [Test]
    public void AMergeOfMergesEqualsTheFlatMergeAndTheSingleRun()
    {
        var shards = Enumerable.Range(0, 4).Select(i => Shard($"{i}/4")).ToList();
        string Merged(params string[] inputs)
        {
            string dir = Path.Combine(TestCorpus.TempDir(), "merged");
            var (exit, _, error) = Cli.Run(["merge", "--inputs", .. inputs, "--out", dir, "--partial"]);
            Assert.That(exit, Is.EqualTo(0), error);
            return dir;
        }
        var flat = SparsityCounts.Load(Merged([.. shards]));
        var nested = SparsityCounts.Load(Merged(Merged(shards[0], shards[2]), Merged(shards[3], shards[1])));
        var single = SparsityCounts.Load(Shard("0/1"));
        Assert.That(nested.Header.Shards, Is.EqualTo(new[] { "0/4", "1/4", "2/4", "3/4" }));
        for (int l = 0; l < flat.Layers.Count; l++)
            foreach (var counts in new[] { nested, single })
            {
                Assert.That(counts.Layers[l].TokensPerUnit, Is.EqualTo(flat.Layers[l].TokensPerUnit));
                Assert.That(counts.Layers[l].UnitsPerTokenHistogram, Is.EqualTo(flat.Layers[l].UnitsPerTokenHistogram));
                Assert.That(
                    counts.Layers[l].UnitsPerSequenceHistogram,
                    Is.EqualTo(flat.Layers[l].UnitsPerSequenceHistogram)
                );
                Assert.That(counts.Layers[l].UnitsPerBatchHistogram, Is.EqualTo(flat.Layers[l].UnitsPerBatchHistogram));
            }
    }

    [Test]
    public void CountsWithoutProvenanceAreRefused()
    {
        string old = Shard("0/2");
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(old, SparsityCounts.FileName)))!;
        json["header"]!.AsObject().Remove("model_sha256");
        File.WriteAllText(Path.Combine(old, SparsityCounts.FileName), json.ToJsonString());
        var (exit, _, error) = Merge(old, Shard("1/2"));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain($"{old} records no provenance"));
    }

    [Test]
    public void PruningWithAnotherModelsStatisticsIsRefused()
    {
        string stats = Path.Combine(Shard("0/1"), SparsityStats.FileName);
        var (exit, _, error) = Cli.Run(
            "prune",
            "--model",
            HookFixture.PathOf("opt.dynamo.onnx"),
            "--stats",
            stats,
            "--dead-only",
            "--out",
            Path.Combine(TestCorpus.TempDir(), "p.onnx")
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain($"{stats} describes another model (opt.torchscript.onnx"));
    }
}
