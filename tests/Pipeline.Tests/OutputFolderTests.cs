using NUnit.Framework;
using Sparsity.Training;

namespace Sparsity.Tests;

/// <summary>No command with --out loses a file it did not write; replacing its own output works.</summary>
[TestFixture]
public class OutputFolderTests
{
    static string Model => HookFixture.PathOf("opt.torchscript.onnx");
    static string Corpus => HookFixture.Corpus;
    static readonly string[] Eval = ["--tokenizer", "bytes", "--seq-len", "32", "--batch-size", "4", "--runs", "1"];

    static string[] AnalyzeArgs(string outDir, params string[] extra) =>
        [
            "analyze",
            "--model",
            Model,
            "--corpus",
            Corpus,
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
            .. extra,
        ];

    static string Analysis()
    {
        string dir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, _, error) = Cli.Run(AnalyzeArgs(dir));
        Assert.That(exit, Is.EqualTo(0), error);
        return dir;
    }

    // Every command with --out, given a folder: its arguments.
    static IEnumerable<TestCaseData> Commands()
    {
        yield return new TestCaseData("analyze", (Func<string, string[]>)(o => AnalyzeArgs(o))).SetName("analyze");
        yield return new TestCaseData(
            "merge",
            (Func<string, string[]>)(o => ["merge", "--inputs", Analysis(), "--out", o])
        ).SetName("merge");
        yield return new TestCaseData(
            "evaluate",
            (Func<string, string[]>)(o => ["evaluate", "--model", Model, "--corpus", Corpus, .. Eval, "--out", o])
        ).SetName("evaluate");
        yield return new TestCaseData(
            "prune",
            (Func<string, string[]>)(
                o =>
                    [
                        "prune",
                        "--model",
                        Model,
                        "--stats",
                        Path.Combine(Analysis(), "stats.json"),
                        "--keep-fraction",
                        "0.5",
                        "--eval-corpus",
                        Corpus,
                        "--allow-stats-corpus",
                        .. Eval,
                        "--out",
                        o,
                    ]
            )
        ).SetName("prune");
        yield return new TestCaseData(
            "topk",
            (Func<string, string[]>)(
                o => ["topk", "--model", Model, "--k", "32", "--eval-corpus", Corpus, .. Eval, "--out", o]
            )
        ).SetName("topk");
        yield return new TestCaseData("train", (Func<string, string[]>)(o => TrainArgs(o))).SetName("train");
    }

    static string[] TrainArgs(string outDir)
    {
        string corpus = TestCorpus.WriteSplits();
        return
        [
            "train",
            "--corpus",
            Path.Combine(corpus, "train.txt"),
            "--heldout",
            Path.Combine(corpus, "heldout.txt"),
            "--tokenizer",
            "bytes",
            "--out",
            outDir,
            "--steps",
            "2",
            "--layers",
            "1",
            "--d-ff",
            "32",
            "--eval-every",
            "2",
            "--threads",
            "2",
        ];
    }

    static void AssertNoSiblings(string dir) =>
        Assert.That(
            Directory.GetDirectories(Path.GetDirectoryName(dir)!).Select(Path.GetFileName),
            Is.EqualTo(new[] { Path.GetFileName(dir) }),
            "no temporary folder left beside it"
        );

    [TestCaseSource(nameof(Commands))]
    public void AFolderHoldingAUsersFileIsRefusedAndKept(string command, Func<string, string[]> args)
    {
        string dir = Path.Combine(TestCorpus.TempDir(), "out");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "mine");
        var (exit, _, error) = Cli.Run(args(dir));
        Assert.That(exit, Is.EqualTo(2), error);
        Assert.That(
            error.Trim(),
            Is.EqualTo(
                $"error: --out {dir} already holds files relu-sparsity did not write (notes.txt); choose a new or empty folder."
            )
        );
        Assert.That(Directory.GetFileSystemEntries(dir), Is.EqualTo(new[] { Path.Combine(dir, "notes.txt") }));
        Assert.That(File.ReadAllText(Path.Combine(dir, "notes.txt")), Is.EqualTo("mine"));
        AssertNoSiblings(dir);
    }

    [TestCaseSource(nameof(Commands))]
    public void ACommandReplacesItsOwnEarlierOutputAndNothingElse(string command, Func<string, string[]> args)
    {
        string dir = Path.Combine(TestCorpus.TempDir(), "out");
        var (exit, _, error) = Cli.Run(args(dir));
        Assert.That(exit, Is.EqualTo(0), error);
        var manifest = OutputFolder.Read(dir)!;
        Assert.That(manifest.Command, Is.EqualTo(command));
        Assert.That(
            manifest.Files,
            Is.EquivalentTo(
                Directory
                    .GetFiles(dir, "*", SearchOption.AllDirectories)
                    .Select(f => Path.GetRelativePath(dir, f))
                    .Where(f => f != OutputFolder.ManifestName)
            ),
            "the manifest lists exactly what was written"
        );

        (exit, _, error) = Cli.Run(args(dir));
        Assert.That(exit, Is.EqualTo(0), error);
        AssertNoSiblings(dir);

        File.WriteAllText(Path.Combine(dir, "notes.txt"), "mine");
        (exit, _, error) = Cli.Run(args(dir));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain($"holds an earlier {command} output and files it did not write (notes.txt)"));
        Assert.That(File.ReadAllText(Path.Combine(dir, "notes.txt")), Is.EqualTo("mine"));
    }

    [Test]
    public void BenchRefusesAUsersFolderBeforeAnyWork()
    {
        string ck = Path.Combine(TestCorpus.TempDir(), "ck");
        Assert.That(Cli.Run(TrainArgs(ck)).Exit, Is.EqualTo(0));
        string dir = Path.Combine(TestCorpus.TempDir(), "bench");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "results.csv"), "1,2");
        var (exit, _, error) = Cli.Run(
            "bench",
            "--checkpoint",
            ck,
            "--corpus",
            Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "16",
            "--out",
            dir
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("already holds files relu-sparsity did not write (results.csv)"));
        Assert.That(Directory.GetFileSystemEntries(dir), Has.Length.EqualTo(1));
    }

    [Test]
    public void RetrainingACheckpointRemovesItsStaleDerivedOutputsButNotAUsersFile()
    {
        string ck = Path.Combine(TestCorpus.TempDir(), "ck");
        Assert.That(Cli.Run(TrainArgs(ck)).Exit, Is.EqualTo(0));
        Assert.That(Cli.Run("export", "--checkpoint", ck, "--out", Path.Combine(ck, "model.onnx")).Exit, Is.EqualTo(0));
        var (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            Path.Combine(ck, "model.onnx"),
            "--corpus",
            Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "16",
            "--out",
            Path.Combine(ck, "analysis")
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(Cli.Run("report", "--in", Path.Combine(ck, "analysis")).Exit, Is.EqualTo(0));
        Assert.That(
            OutputFolder.Read(ck)!.Files,
            Does.Contain("model.onnx").And.Contain("model.mlp.json"),
            "an export into a checkpoint joins its manifest"
        );
        Assert.That(
            OutputFolder.Read(Path.Combine(ck, "analysis"))!.Files,
            Does.Contain("report.md"),
            "a report joins its analysis"
        );

        // Analysis of another command's folder is refused; retraining replaces the checkpoint and drops what was
        // derived from it.
        (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            Path.Combine(ck, "model.onnx"),
            "--corpus",
            Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "16",
            "--out",
            ck
        );
        Assert.That(error, Does.Contain($"--out {ck} holds the output of `train`, not of `analyze`"));
        (exit, _, error) = Cli.Run(TrainArgs(ck));
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(File.Exists(Path.Combine(ck, "model.onnx")), Is.False);
        Assert.That(Directory.Exists(Path.Combine(ck, "analysis")), Is.False);
        Assert.That(File.Exists(Path.Combine(ck, "config.json")), Is.True);

        File.WriteAllText(Path.Combine(ck, "my-notes.md"), "mine");
        (exit, _, error) = Cli.Run(TrainArgs(ck));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("files it did not write (my-notes.md)"));
    }

    [Test]
    public void ASingleFileOutputIsReplacedWhileItIsOursAndUnchanged()
    {
        string dir = TestCorpus.TempDir(),
            stats = Path.Combine(Analysis(), "stats.json"),
            pruned = Path.Combine(dir, "pruned.onnx");
        string[] prune = ["prune", "--model", Model, "--stats", stats, "--dead-only", "--out", pruned];
        Assert.That(Cli.Run(prune).Exit, Is.EqualTo(0));
        var (exit, _, error) = Cli.Run(prune);
        Assert.That(exit, Is.EqualTo(0), "our own unchanged output is replaced: " + error);
        Assert.That(
            OutputFile.IsOurs(pruned, "prune") && OutputFile.IsOurs(Path.ChangeExtension(pruned, ".mlp.json"), "prune"),
            Is.True
        );

        File.AppendAllText(pruned, " ");
        byte[] edited = File.ReadAllBytes(pruned);
        (exit, _, error) = Cli.Run(prune);
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("exists and is not an unchanged output of an earlier `prune`"));
        Assert.That(File.ReadAllBytes(pruned), Is.EqualTo(edited), "the edited file is the user's and stays");

        File.Delete(pruned);
        Assert.That(Cli.Run(prune).Exit, Is.EqualTo(0), "once the user's file is gone the name is free again");
        Assert.That(
            Directory.GetFiles(dir).Select(Path.GetFileName),
            Is.EquivalentTo(new[] { "pruned.onnx", "pruned.mlp.json", OutputFile.LedgerName }),
            "nothing else left"
        );
    }

    [Test]
    public void LeftoversOfKilledRunsOnThisHostAreRemovedOthersStay()
    {
        string parent = TestCorpus.TempDir(),
            outDir = Path.Combine(parent, "analysis");
        string host = Temporaries.Tag.Split('~')[0];
        string dead = $"{outDir}.partial-{host}~{int.MaxValue - 1}~12345",
            otherHost = $"{outDir}.partial-{host}x~{int.MaxValue - 1}~12345";
        string deadTmp = Path.Combine(parent, $"notes.txt.tmp-{host}~{int.MaxValue - 1}~1");
        Directory.CreateDirectory(dead);
        File.WriteAllText(Path.Combine(dead, "counts.json"), "half-written");
        Directory.CreateDirectory(otherHost);
        File.WriteAllText(deadTmp, "x");
        var (exit, _, error) = Cli.Run(AnalyzeArgs(outDir));
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(
            Directory.Exists(dead),
            Is.False,
            "a killed run's partial folder on this host is removed by the next run into the same --out"
        );
        Assert.That(
            Directory.Exists(otherHost),
            Is.True,
            "another host's may be live (a shared filesystem under Slurm)"
        );
        Assert.That(File.Exists(deadTmp), Is.True, "only the siblings of this --out are touched");
    }

    [Test]
    public void AnEmptyOutFolderIsFilledWithNothingLeftBeside()
    {
        string parent = TestCorpus.TempDir(),
            outDir = Path.Combine(parent, "analysis");
        Directory.CreateDirectory(outDir);
        var (exit, _, error) = Cli.Run(AnalyzeArgs(outDir));
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(
            Directory.GetFileSystemEntries(parent).Select(Path.GetFileName),
            Is.EqualTo(new[] { "analysis" }),
            "no NAME.old-… left behind"
        );
    }
}
