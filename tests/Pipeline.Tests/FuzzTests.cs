using System.Diagnostics;
using System.Security.Cryptography;
using NUnit.Framework;

namespace Sparsity.Tests;

/// <summary>
/// Hostile inputs made by machine, seeded: fixtures truncated at random lengths and with random bytes flipped (and, in
/// JSON, digits changed, which keeps the file valid JSON but makes its counts impossible). Every command must end in
/// exit 0 (the damage left a valid input, e.g. a flipped weight) or exit 2 with one `error:` line and no stack trace;
/// its input files stay byte-identical, and its output's folder holds nothing but what was there (and, on exit 0, the
/// output). Corrupted graphs run in child processes, so a native crash in ONNX Runtime fails one case, not the test
/// host.
/// </summary>
[TestFixture]
public class FuzzTests
{
    // Fixed so CI runs the same cases; RELU_SPARSITY_FUZZ_SEED explores others (a failure there is a new table row).
    static readonly int Seed = int.TryParse(Environment.GetEnvironmentVariable("RELU_SPARSITY_FUZZ_SEED"), out int s)
        ? s
        : 20261203;
    static readonly string[] Window =
    [
        "--tokenizer",
        "bytes",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--threads",
        "1",
    ];
    static string _analysis = "";

    [OneTimeSetUp]
    public void ValidInputs()
    {
        _analysis = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, _, error) = Cli.Run([
            "analyze",
            "--model",
            HookFixture.PathOf("opt.torchscript.onnx"),
            "--corpus",
            HookFixture.Corpus,
            .. Window,
            "--out",
            _analysis,
        ]);
        Assert.That(exit, Is.EqualTo(0), error);
    }

    /// <summary>A damaged copy of a file: kind 0 truncates, 1 flips bits, 2 changes digits (text formats).</summary>
    static byte[] Damage(byte[] data, int kind, Random random)
    {
        var copy = (byte[])data.Clone();
        switch (kind)
        {
            case 0:
                return copy[..random.Next(0, copy.Length)];
            case 1:
                for (int i = random.Next(1, 17); i > 0; i--)
                    copy[random.Next(copy.Length)] ^= (byte)(1 << random.Next(8));
                return copy;
            default:
                var digits = Enumerable
                    .Range(0, copy.Length)
                    .Where(i => copy[i] is >= (byte)'0' and <= (byte)'9')
                    .ToArray();
                for (int i = random.Next(1, 4); i > 0; i--)
                    copy[digits[random.Next(digits.Length)]] = (byte)('0' + random.Next(10));
                return copy;
        }
    }

    static IEnumerable<TestCaseData> Cases(string family, int truncations, int flips, int digitEdits)
    {
        var random = new Random(Seed + family.Sum(c => c)); // string.GetHashCode differs per process: not a seed
        for (int i = 0; i < truncations + flips + digitEdits; i++)
        {
            int kind =
                i < truncations ? 0
                : i < truncations + flips ? 1
                : 2;
            yield return new TestCaseData(kind, random.Next()).SetName(
                $"{family} {(kind == 0 ? "truncated" : kind == 1 ? "bits flipped" : "digits changed")} #{i}"
            );
        }
    }

    static IEnumerable<TestCaseData> GraphCases() => Cases("onnx", 8, 8, 0);

    static IEnumerable<TestCaseData> CountsCases() => Cases("counts", 4, 4, 8);

    static IEnumerable<TestCaseData> StatsCases() => Cases("stats", 3, 3, 6);

    static IEnumerable<TestCaseData> CorpusCases() => Cases("corpus", 4, 4, 0);

    static IEnumerable<TestCaseData> SafetensorsCases() => Cases("safetensors", 3, 3, 0);

    [TestCaseSource(nameof(GraphCases))]
    public void AnalyzeOfADamagedGraph(int kind, int seed)
    {
        string dir = TestCorpus.TempDir(),
            model = Path.Combine(dir, "model.onnx");
        File.WriteAllBytes(
            model,
            Damage(File.ReadAllBytes(HookFixture.PathOf("opt.torchscript.onnx")), kind, new Random(seed))
        );
        Check(dir, [model], "out", () =>
            Child([
                "analyze",
                "--model",
                model,
                "--corpus",
                HookFixture.Corpus,
                .. Window,
                "--out",
                Path.Combine(dir, "out"),
            ])
        );
    }

    [TestCaseSource(nameof(CountsCases))]
    public void MergeOfDamagedCounts(int kind, int seed)
    {
        string dir = TestCorpus.TempDir(),
            shard = Path.Combine(dir, "shard");
        Directory.CreateDirectory(shard);
        File.WriteAllBytes(
            Path.Combine(shard, "counts.json"),
            Damage(File.ReadAllBytes(Path.Combine(_analysis, "counts.json")), kind, new Random(seed))
        );
        Check(dir, [Path.Combine(shard, "counts.json")], "out", () =>
            Cli.Run("merge", "--inputs", shard, "--out", Path.Combine(dir, "out"))
        );
    }

    [TestCaseSource(nameof(StatsCases))]
    public void PruneWithDamagedStats(int kind, int seed)
    {
        string dir = TestCorpus.TempDir(),
            stats = Path.Combine(dir, "stats.json");
        File.WriteAllBytes(
            stats,
            Damage(File.ReadAllBytes(Path.Combine(_analysis, "stats.json")), kind, new Random(seed))
        );
        Check(dir, [stats], "pruned.onnx", () =>
            Cli.Run(
                "prune",
                "--model",
                HookFixture.PathOf("opt.torchscript.onnx"),
                "--stats",
                stats,
                "--dead-only",
                "--out",
                Path.Combine(dir, "pruned.onnx")
            )
        );
    }

    [TestCaseSource(nameof(CorpusCases))]
    public void AnalyzeOfADamagedCompressedCorpus(int kind, int seed)
    {
        string dir = TestCorpus.TempDir(),
            corpus = Path.Combine(dir, "corpus.txt.gz");
        using (var buffer = new MemoryStream())
        {
            using (
                var gzip = new System.IO.Compression.GZipStream(buffer, System.IO.Compression.CompressionLevel.Optimal)
            )
                gzip.Write(File.ReadAllBytes(HookFixture.Corpus));
            File.WriteAllBytes(corpus, Damage(buffer.ToArray(), kind, new Random(seed)));
        }
        Check(dir, [corpus], "out", () =>
            Cli.Run([
                "analyze",
                "--model",
                HookFixture.PathOf("opt.torchscript.onnx"),
                "--corpus",
                corpus,
                .. Window,
                "--out",
                Path.Combine(dir, "out"),
            ])
        );
    }

    [TestCaseSource(nameof(SafetensorsCases))]
    public void ExportOfADamagedCheckpoint(int kind, int seed)
    {
        string dir = TestCorpus.TempDir(),
            checkpoint = Path.Combine(dir, "opt");
        Directory.CreateDirectory(checkpoint);
        foreach (string f in Directory.GetFiles(CheckpointReference.Folder("opt")))
            File.Copy(f, Path.Combine(checkpoint, Path.GetFileName(f)));
        string weights = Directory.GetFiles(checkpoint, "*.safetensors").Order(StringComparer.Ordinal).First();
        File.WriteAllBytes(weights, Damage(File.ReadAllBytes(weights), kind, new Random(seed)));
        Check(dir, Directory.GetFiles(checkpoint), "model.onnx", () =>
            Cli.Run("export", "--checkpoint", checkpoint, "--out", Path.Combine(dir, "model.onnx"))
        );
    }

    // Runs a command and asserts the contract above; dir holds the inputs, and the output is written there as `output`.
    static void Check(
        string dir,
        IReadOnlyList<string> inputs,
        string output,
        Func<(int Exit, string Out, string Err)> run
    )
    {
        var hashes = inputs.Select(f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))).ToList();
        var entries = Directory
            .GetFileSystemEntries(dir)
            .Select(Path.GetFileName)
            .Order(StringComparer.Ordinal)
            .ToList();
        var (exit, stdout, stderr) = run();
        Assert.That(exit, Is.EqualTo(0).Or.EqualTo(2), $"exit {exit}\n{stdout}\n{stderr}");
        Assert.That(stdout + stderr, Does.Not.Contain("   at ").And.Not.Contain("Exception"), "no stack trace");
        if (exit == 2)
        {
            Assert.That(stderr.Trim().Split('\n'), Has.Length.EqualTo(1), stderr);
            Assert.That(stderr, Does.StartWith("error: "));
        }
        Assert.That(
            inputs.Select(f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))),
            Is.EqualTo(hashes),
            "inputs byte-identical"
        );
        var after = Directory
            .GetFileSystemEntries(dir)
            .Select(Path.GetFileName)
            .Where(e => exit != 0 || !IsOutput(e!, output))
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.That(after, Is.EqualTo(entries), "nothing left beside the output but what was there");
    }

    // The output and the files that go with it (sidecar, external data, the ledger of single files written).
    static bool IsOutput(string entry, string output) =>
        entry == output
        || entry == Path.ChangeExtension(output, ".mlp.json")
        || entry == output + ".data"
        || entry == OutputFile.LedgerName;

    // The command in a process of its own: a native crash is a failed case, not a crashed test host.
    static (int Exit, string Out, string Err) Child(string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(TestContext.CurrentContext.TestDirectory, "relu-sparsity.dll"));
        foreach (string a in args)
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        string stderr = process.StandardError.ReadToEnd();
        if (!process.WaitForExit(120_000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{string.Join(' ', args)} did not end in 2 minutes");
        }
        return (process.ExitCode, stdout.Result, stderr);
    }
}
