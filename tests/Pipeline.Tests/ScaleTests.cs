using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Pipeline.Streaming;

namespace Sparsity.Tests;

/// <summary>Past one machine: shards from the scheduler, merges of many shards, and the corpus formats of big
/// corpora.</summary>
[TestFixture]
public class ScaleTests
{
    static Func<string, string?> Env(params (string Name, string Value)[] variables) =>
        name => variables.FirstOrDefault(v => v.Name == name).Value;

    [Test]
    public void ShardAutoTakesTheShardFromSlurmOrKubernetes()
    {
        var slurm = ShardChoice.Parse(
            "auto",
            null,
            Env(("SLURM_ARRAY_TASK_ID", "7"), ("SLURM_ARRAY_TASK_MIN", "5"), ("SLURM_ARRAY_TASK_COUNT", "4"))
        );
        Assert.That((slurm.Index, slurm.Count), Is.EqualTo((2, 4)), "task 7 of an array 5-8 is shard 2 of 4");
        Assert.That(
            slurm.Source,
            Is.EqualTo("Slurm (SLURM_ARRAY_TASK_ID=7, SLURM_ARRAY_TASK_MIN=5, SLURM_ARRAY_TASK_COUNT=4)")
        );

        var k8s = ShardChoice.Parse("auto", null, Env(("JOB_COMPLETION_INDEX", "3"), (ShardChoice.CountVariable, "8")));
        Assert.That((k8s.Index, k8s.Count), Is.EqualTo((3, 8)));
        Assert.That(
            ShardChoice.Parse("auto", 5, Env(("JOB_COMPLETION_INDEX", "4"))),
            Is.EqualTo(new ShardChoice(4, 5, "Kubernetes (JOB_COMPLETION_INDEX=4, --shard-count=5)"))
        );
        Assert.That(
            ShardChoice.Parse("1/3", null, Env(("SLURM_ARRAY_TASK_ID", "0"))),
            Is.EqualTo(new ShardChoice(1, 3, "--shard")),
            "explicit i/n wins"
        );

        Assert.That(
            Assert.Throws<UserInputException>(() => ShardChoice.Parse("auto", null, Env()))!.Message,
            Does.StartWith("--shard auto: no scheduler's shard variables are set")
        );
        Assert.That(
            Assert
                .Throws<UserInputException>(() => ShardChoice.Parse("auto", null, Env(("JOB_COMPLETION_INDEX", "0"))))!
                .Message,
            Does.Contain("--shard-count N or set RELU_SPARSITY_SHARD_COUNT")
        );
        Assert.That(
            Assert
                .Throws<UserInputException>(() => ShardChoice.Parse("auto", 4, Env(("JOB_COMPLETION_INDEX", "4"))))!
                .Message,
            Does.Contain("out of range")
        );
        Assert.That(
            Assert
                .Throws<UserInputException>(() =>
                    ShardChoice.Parse("auto", 3, Env(("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "4")))
                )!
                .Message,
            Does.Contain("disagrees")
        );
        Assert.Throws<UserInputException>(() => ShardChoice.Parse("2", null, Env()));
    }

    [Test]
    public void AnalyzeSaysWhichShardTheSchedulerGaveIt()
    {
        string dir = TestCorpus.TempDir();
        try
        {
            Environment.SetEnvironmentVariable("JOB_COMPLETION_INDEX", "1");
            var (exit, output, error) = Cli.Run(
                "analyze",
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
                "--shard",
                "auto",
                "--shard-count",
                "2",
                "--out",
                Path.Combine(dir, "s1")
            );
            Assert.That(exit, Is.EqualTo(0), error);
            Assert.That(output, Does.Contain("Shard 1/2 from Kubernetes (JOB_COMPLETION_INDEX=1, --shard-count=2)."));
            Assert.That(
                SparsityStats.Load(Path.Combine(dir, "s1", SparsityStats.FileName)).Shards,
                Is.EqualTo(new[] { "1/2" })
            );
        }
        finally
        {
            Environment.SetEnvironmentVariable("JOB_COMPLETION_INDEX", null);
        }
    }
}

/// <summary>Merging many shards: a tree of merges equals the flat merge, and a thousand shards merge in seconds and
/// flat memory.</summary>
[TestFixture]
public class ManyShardsTests
{
    // A synthetic shard i of n: random per-batch counts of `layers` layers of d_ff units, with provenance.
    internal static SparsityCounts Shard(int i, int n, int layers, int dFf, int batches, int seed)
    {
        var random = new Random(seed * 7919 + i);
        var header = new AnalysisHeader(
            "m.onnx",
            "c.txt",
            "bytes",
            8,
            4,
            0f,
            null,
            [$"{i}/{n}"],
            Tool.Producer,
            "ab12",
            new CorpusFingerprint("c.txt", 10, "cd34"),
            "ef56",
            "fp32"
        );
        return new SparsityCounts(
            header,
            Enumerable
                .Range(0, layers)
                .Select(l =>
                {
                    var use = new LayerUnitUse(dFf);
                    for (int b = 0; b < batches; b++)
                    {
                        var perUnit = Enumerable
                            .Range(0, dFf)
                            .Select(_ => random.Next(3) == 0 ? (long)random.Next(1, 33) : 0L)
                            .ToArray();
                        use.AddBatch(
                            Enumerable.Range(0, 32).Select(_ => random.Next(dFf + 1)).ToArray(),
                            Enumerable.Range(0, 4).Select(_ => random.Next(dFf + 1)).ToArray(),
                            perUnit
                        );
                    }
                    return LayerCounts.From($"mlp_hidden.{l}", l, use);
                })
                .ToList()
        );
    }

    static string Json(SparsityCounts c) => System.Text.Json.JsonSerializer.Serialize(c, ProjectJson.Options);

    [Test]
    public void ATreeOfMergesEqualsTheFlatMerge()
    {
        const int n = 27;
        var shards = Enumerable.Range(0, n).Select(i => Shard(i, n, 3, 64, 2, seed: 1)).ToList();
        var flat = SparsityCounts.Merge(shards);
        // Three levels: groups of three, then of three again, then the rest; partial merges in between.
        var level1 = shards.Chunk(3).Select(g => SparsityCounts.Merge(g, allowPartial: true)).ToList();
        var level2 = level1.Chunk(3).Select(g => SparsityCounts.Merge(g, allowPartial: true)).ToList();
        var tree = SparsityCounts.Merge(level2);
        Assert.That(Json(tree), Is.EqualTo(Json(flat)));
        Assert.That(flat.Header.Shards, Has.Count.EqualTo(n));
        Assert.That(flat.Layers[2].TokensPerUnit.Sum(), Is.EqualTo(shards.Sum(s => s.Layers[2].TokensPerUnit.Sum())));
        Assert.That(
            Json(SparsityCounts.Merge(Enumerable.Reverse(shards).ToList())),
            Is.EqualTo(Json(flat)),
            "order does not matter"
        );
        Assert.That(
            Assert.Throws<UserInputException>(() => SparsityCounts.Merge([level2[0], level1[0]]))!.Message,
            Does.StartWith("Shard 0/27 appears twice")
        );
    }

    [
        Test,
        Explicit(
            "Measurement for docs/scale.md: writes 1,000 OPT-125M-shaped shard folders (about 1 GB) and merges them."
        )
    ]
    public void AThousandShardFoldersMergeInSecondsAndFlatMemory()
    {
        const int n = 1000;
        string dir = TestCorpus.TempDir();
        var folders = new List<string>();
        var write = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < n; i++)
        {
            string folder = Path.Combine(dir, $"{i}");
            Directory.CreateDirectory(folder);
            Shard(i, n, 12, 3072, 1, seed: 2).Write(folder);
            folders.Add(folder);
        }
        TestContext.Out.WriteLine(
            $"wrote {n} shards in {write.Elapsed.TotalSeconds:0.0} s, {Directory.GetFiles(dir, "counts.json", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) / 1e6:0} MB of counts.json"
        );
        GC.Collect();
        long before = GC.GetTotalMemory(true);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var merged = Sparsity.Pipeline.Streaming.Shards.Merge(
            folders,
            allowPartial: false,
            Path.Combine(dir, "merged")
        );
        double seconds = clock.Elapsed.TotalSeconds;
        long after = GC.GetTotalMemory(false);
        TestContext.Out.WriteLine(
            $"merged {n} shards (12 layers x 3,072 units) in {seconds:0.0} s; managed heap {before / 1e6:0} MB before, {after / 1e6:0} MB after; "
                + $"process peak working set {System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64 / 1e6:0} MB"
        );
        Assert.That(merged.Header.Shards, Has.Count.EqualTo(n));
        Assert.That(seconds, Is.LessThan(600));
    }
}

/// <summary>The corpus formats of big corpora, each streamed and giving the same counts as the same tokens read as
/// text.</summary>
[TestFixture]
public class CorpusFormatTests
{
    static readonly string Model = HookFixture.PathOf("opt.dynamo.onnx");

    static List<string> Documents() => Sparsity.Corpora.TextDocuments.Read(HookFixture.Corpus).ToList();

    static void WriteParquet<T>(IEnumerable<T> rows, string path)
        where T : class, new() =>
        Parquet
            .Serialization.ParquetSerializer.SerializeAsync(rows, path, new Parquet.ParquetOptions { RowGroupSize = 5 })
            .GetAwaiter()
            .GetResult();

    static string Counts(string corpus, string tokenizer, int seqLen = 32)
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            Model,
            "--corpus",
            corpus,
            "--tokenizer",
            tokenizer,
            "--seq-len",
            $"{seqLen}",
            "--batch-size",
            "4",
            "--threads",
            "1",
            "--out",
            outDir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        return System.Text.Json.JsonSerializer.Serialize(SparsityCounts.Load(outDir).Layers, ProjectJson.Options);
    }

    [Test]
    public void ZstdJsonLinesAndParquetTextReadTheSameDocuments()
    {
        string dir = TestCorpus.TempDir(),
            zst = Path.Combine(dir, "corpus.jsonl.zst"),
            parquet = Path.Combine(dir, "corpus.parquet");
        using (var file = File.Create(zst))
        using (var compressor = new ZstdSharp.CompressionStream(file))
        using (var writer = new StreamWriter(compressor))
            foreach (string d in Documents())
                writer.WriteLine(System.Text.Json.JsonSerializer.Serialize(new { text = d, meta = 1 }));
        WriteParquet(Documents().Select(d => new Sparsity.Corpora.TokenDocuments.TextRow { text = d }), parquet);

        Assert.That(Sparsity.Corpora.TextDocuments.Read(zst), Is.EqualTo(Documents()));
        Assert.That(
            Sparsity.Corpora.TextDocuments.Read(parquet),
            Is.EqualTo(Documents()),
            "24 rows in row groups of 5"
        );
        string text = Counts(HookFixture.Corpus, "bytes");
        Assert.That(Counts(zst, "bytes"), Is.EqualTo(text));
        Assert.That(Counts(parquet, "bytes"), Is.EqualTo(text));
    }

    [Test]
    public void PreTokenizedParquetAndTokenFilesGiveTheCountsOfTheSameTokens()
    {
        string dir = TestCorpus.TempDir();
        var bytes = Sparsity.Corpora.TextTokenizer.FromSpec("bytes");
        var ids = Documents().Select(d => bytes.Encode(d).ToList()).ToList();
        WriteParquet(
            ids.Select(d => new Sparsity.Corpora.TokenDocuments.Int32Ids { input_ids = d }),
            Path.Combine(dir, "ids32.parquet")
        );
        WriteParquet(
            ids.Select(d => new Sparsity.Corpora.TokenDocuments.Int64Ids
            {
                input_ids = d.Select(i => (long)i).ToList(),
            }),
            Path.Combine(dir, "ids64.parquet")
        );
        string text = Counts(HookFixture.Corpus, "bytes");
        Assert.That(
            Counts(Path.Combine(dir, "ids32.parquet"), "ids"),
            Is.EqualTo(text),
            "one row per document: the documents and windows of the text"
        );
        Assert.That(Counts(Path.Combine(dir, "ids64.parquet"), "ids"), Is.EqualTo(text));

        // A token file is one long document (nanoGPT): the same as one line of ids, whatever the chunking.
        var stream = ids.SelectMany(d => d).ToArray();
        File.WriteAllBytes(
            Path.Combine(dir, "tokens.bin"),
            stream.SelectMany(i => BitConverter.GetBytes((ushort)i)).ToArray()
        );
        File.WriteAllBytes(
            Path.Combine(dir, "tokens.u32.bin"),
            stream.SelectMany(i => BitConverter.GetBytes((uint)i)).ToArray()
        );
        File.WriteAllText(Path.Combine(dir, "tokens.txt"), string.Join(' ', stream) + "\n");
        string line = Counts(Path.Combine(dir, "tokens.txt"), "ids");
        Assert.That(Counts(Path.Combine(dir, "tokens.bin"), "ids"), Is.EqualTo(line));
        Assert.That(Counts(Path.Combine(dir, "tokens.u32.bin"), "ids"), Is.EqualTo(line));
        Assert.That(
            Sparsity.Corpora.TokenDocuments.Read(Path.Combine(dir, "tokens.bin"), 64).Select(c => c.Length).Take(3),
            Is.EqualTo(new[] { 64, 64, 64 }),
            "chunks of whole windows"
        );
    }

    [Test]
    public void TokenIdsWithATextTokenizerOrAMalformedFileAreOneLine()
    {
        string dir = TestCorpus.TempDir();
        File.WriteAllBytes(Path.Combine(dir, "odd.u32.bin"), [1, 0, 0, 0, 2, 0]);
        File.WriteAllBytes(Path.Combine(dir, "ok.bin"), [1, 0, 2, 0]);
        WriteParquet(
            [new Sparsity.Corpora.TokenDocuments.Int64Ids { input_ids = [1, 2] }],
            Path.Combine(dir, "ids.parquet")
        );
        File.WriteAllText(Path.Combine(dir, "broken.parquet"), "not parquet");
        foreach (
            var (corpus, tokenizer, message) in new[]
            {
                ("ok.bin", "bytes", "holds token ids, not text: pass --tokenizer ids"),
                ("ids.parquet", "bytes", "holds token ids, not text: pass --tokenizer ids"),
                ("odd.u32.bin", "ids", "not a whole number of uint32 tokens"),
                ("broken.parquet", "bytes", "is not a readable Parquet file"),
            }
        )
        {
            var (exit, _, error) = Cli.Run(
                "analyze",
                "--model",
                Model,
                "--corpus",
                Path.Combine(dir, corpus),
                "--tokenizer",
                tokenizer,
                "--seq-len",
                "8",
                "--out",
                Path.Combine(dir, "out-" + corpus)
            );
            Assert.That(exit, Is.EqualTo(2), corpus);
            Assert.That(error, Does.Contain(message), corpus);
            Assert.That(error.Trim().Split('\n'), Has.Length.EqualTo(1), corpus);
        }
    }
}

/// <summary>
/// deploy/kubernetes, read back (no cluster here): the Indexed Job's shard count agrees with its completions, every
/// pod takes its shard from JOB_COMPLETION_INDEX into its own folder, and the merge Job lists exactly those folders.
/// </summary>
[TestFixture]
public class KubernetesManifestTests
{
    static Dictionary<object, object> Load(string file)
    {
        string path = Path.Combine(TestCorpus.RepositoryRoot, "deploy", "kubernetes", file);
        return new YamlDotNet.Serialization.Deserializer().Deserialize<Dictionary<object, object>>(
            File.ReadAllText(path)
        );
    }

    static Dictionary<object, object> Map(object node, params string[] keys) =>
        keys.Aggregate((Dictionary<object, object>)node, (m, k) => (Dictionary<object, object>)m[k]);

    static Dictionary<object, object> Container(Dictionary<object, object> job) =>
        (Dictionary<object, object>)((List<object>)Map(job, "spec", "template", "spec")["containers"]).Single();

    [Test]
    public void TheShardJobAndTheMergeJobAgree()
    {
        var shards = Load("analyze-shards.yaml");
        var spec = Map(shards, "spec");
        Assert.That(shards["kind"], Is.EqualTo("Job"));
        Assert.That(spec["completionMode"], Is.EqualTo("Indexed"));
        int completions = int.Parse((string)spec["completions"]);
        var analyze = Container(shards);
        var env = ((List<object>)analyze["env"])
            .Cast<Dictionary<object, object>>()
            .ToDictionary(e => (string)e["name"], e => (string)e["value"]);
        Assert.That(
            int.Parse(env[Sparsity.Pipeline.Streaming.ShardChoice.CountVariable]),
            Is.EqualTo(completions),
            "the shard count the pods see = completions"
        );
        var args = ((List<object>)analyze["args"]).Cast<string>().ToList();
        Assert.That(args[0], Is.EqualTo("analyze"));
        Assert.That(args[args.IndexOf("--shard") + 1], Is.EqualTo("auto"));
        string outPattern = args[args.IndexOf("--out") + 1];
        Assert.That(outPattern, Does.EndWith("$(JOB_COMPLETION_INDEX)"));

        // What each pod would run, through the real option parser: shard i of n.
        for (int i = 0; i < completions; i++)
        {
            var choice = Sparsity.Pipeline.Streaming.ShardChoice.Parse("auto", null, name =>
                name == "JOB_COMPLETION_INDEX" ? $"{i}" : env.GetValueOrDefault(name)
            );
            Assert.That((choice.Index, choice.Count), Is.EqualTo((i, completions)));
        }

        var merge = Container(Load("merge-job.yaml"));
        var mergeArgs = ((List<object>)merge["args"]).Cast<string>().ToList();
        Assert.That(mergeArgs[0], Is.EqualTo("merge"));
        var inputs = mergeArgs.Skip(mergeArgs.IndexOf("--inputs") + 1).TakeWhile(a => !a.StartsWith("--")).ToList();
        Assert.That(
            inputs,
            Is.EqualTo(
                Enumerable.Range(0, completions).Select(i => outPattern.Replace("$(JOB_COMPLETION_INDEX)", $"{i}"))
            )
        );
        Assert.That(merge["image"], Is.EqualTo(analyze["image"]));
    }
}
