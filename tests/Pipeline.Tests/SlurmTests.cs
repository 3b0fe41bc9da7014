using System.Diagnostics;
using System.Text.Json;
using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Pipeline.Streaming;

namespace Sparsity.Tests;

/// <summary>
/// deploy/slurm/analyze-array.sh against a real Slurm: a one-node cluster from Debian's packages
/// (deploy/slurm/single-node.sh, as root), four array tasks and a merge, compared with one local run bit for bit.
/// If Slurm cannot be started here the tests fail with the reason; the daemons are stopped at the end.
/// </summary>
[TestFixture, NonParallelizable]
public class SlurmTests
{
    static string Script(string name) => Path.Combine(TestCorpus.RepositoryRoot, "deploy", "slurm", name);

    // The command line built beside the tests runs on the node (same machine, same files).
    static readonly string Tool =
        $"dotnet {Path.Combine(TestContext.CurrentContext.TestDirectory, "relu-sparsity.dll")}";

    static (int Exit, string Out, string Err) Bash(params string[] args)
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
            start.ArgumentList.Add(a);
        using var p = Process.Start(start)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"bash {string.Join(' ', args)} did not end within 5 minutes.");
        }
        return (p.ExitCode, stdout.Result, stderr);
    }

    static string[] Analyze(params string[] extra) =>
        [
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
            .. extra,
        ];

    [OneTimeSetUp]
    public void StartSlurm()
    {
        var (exit, output, error) = Bash(Script("single-node.sh"), "start");
        if (exit != 0)
            Assert.Fail(
                $"Slurm could not be started here (deploy/slurm/single-node.sh start, exit {exit}): {error.Trim()} {output.Trim()}"
            );
    }

    [OneTimeTearDown]
    public void StopSlurm() => Bash(Script("single-node.sh"), "stop");

    [Test]
    public void FourArrayTasksAndTheMergeEqualOneLocalRunBitForBit()
    {
        string dir = TestCorpus.TempDir();
        var (exit, output, error) = Bash([
            Script("analyze-array.sh"),
            "--tasks",
            "4",
            "--out",
            Path.Combine(dir, "slurm"),
            "--tool",
            Tool,
            "--wait",
            "--",
            .. Analyze(),
        ]);
        Assert.That(exit, Is.EqualTo(0), output + error);
        Assert.That(
            output,
            Does.Match(@"Submitted job array \d+ \(4 tasks: .*\) and merge job \d+ \(after all succeed: .*merged\)\.")
        );
        Assert.That(
            File.ReadAllText(Directory.GetFiles(Path.Combine(dir, "slurm", "logs"), "analyze-*_2.out").Single()),
            Does.Contain(
                "Shard 2/4 from Slurm (SLURM_ARRAY_TASK_ID=2, SLURM_ARRAY_TASK_MIN=0, SLURM_ARRAY_TASK_COUNT=4)."
            )
        );

        Analyzer.Run(
            new AnalysisRequest
            {
                Model = HookFixture.PathOf("opt.dynamo.onnx"),
                Corpus = HookFixture.Corpus,
                Tokenizer = TokenizerSpec.Bytes,
                SeqLen = 32,
                BatchSize = 4,
                Threads = 1,
                OutDir = Path.Combine(dir, "local"),
            }
        );
        var merged = SparsityCounts.Load(Path.Combine(dir, "slurm", "merged"));
        var local = SparsityCounts.Load(Path.Combine(dir, "local"));
        Assert.That(merged.Header.Shards, Is.EqualTo(new[] { "0/4", "1/4", "2/4", "3/4" }));
        Assert.That(
            JsonSerializer.Serialize(merged.Layers, ProjectJson.Options),
            Is.EqualTo(JsonSerializer.Serialize(local.Layers, ProjectJson.Options))
        );
        Assert.That(merged.Layers[0].TokensPerUnit.Sum(), Is.GreaterThan(0));
    }

    [Test]
    public void AFailedTaskCancelsTheMergeAndTheScriptSaysSo()
    {
        string dir = TestCorpus.TempDir();
        var (exit, _, error) = Bash([
            Script("analyze-array.sh"),
            "--tasks",
            "2",
            "--out",
            Path.Combine(dir, "slurm"),
            "--tool",
            Tool,
            "--wait",
            "--",
            .. Analyze("--activation", "NoSuchOp"),
        ]);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(error, Does.Match(@"error: merge job \d+ ended (CANCELLED|FAILED)"));
        Assert.That(Directory.Exists(Path.Combine(dir, "slurm", "merged")), Is.False);
    }

    [Test]
    public void AToolThatDoesNotRunIsRefusedBeforeAnythingIsSubmitted()
    {
        string dir = TestCorpus.TempDir();
        var (exit, output, error) = Bash([
            Script("analyze-array.sh"),
            "--tasks",
            "2",
            "--out",
            Path.Combine(dir, "slurm"),
            "--tool",
            "/nonexistent/relu-sparsity",
            "--",
            .. Analyze(),
        ]);
        Assert.That(exit, Is.EqualTo(2), output);
        Assert.That(
            error.Trim(),
            Does.StartWith("error: '/nonexistent/relu-sparsity --version' does not run here")
                .And.EndWith("nothing was submitted.")
        );
        Assert.That(Directory.Exists(Path.Combine(dir, "slurm")), Is.False, "no folder, no job");
    }

    [TestCase(null, "--device cuda:all")]
    [TestCase("cuda:1", "--device cuda:1")]
    public void GpusPerTaskPassTheTasksGpusToAnalyze(string? device, string expected)
    {
        // A stand-in sbatch records what it was asked (this one-node cluster has no GPU to schedule).
        string dir = TestCorpus.TempDir(),
            bin = Path.Combine(dir, "bin");
        Directory.CreateDirectory(bin);
        File.WriteAllText(
            Path.Combine(bin, "sbatch"),
            $"#!/usr/bin/env bash\necho \"$*\" >> {dir}/sbatch-args\necho 1234\n"
        );
        Bash("-c", $"chmod +x {bin}/sbatch");
        string[] extra = device == null ? [] : ["--device", device];
        var (exit, output, error) = Bash([
            "-c",
            $"PATH={bin}:$PATH exec bash \"$0\" \"$@\"",
            Script("analyze-array.sh"),
            "--tasks",
            "2",
            "--gpus-per-task",
            "4",
            "--out",
            Path.Combine(dir, "slurm"),
            "--tool",
            Tool,
            "--",
            .. Analyze(extra),
        ]);
        Assert.That(exit, Is.EqualTo(0), output + error);
        Assert.That(File.ReadAllText(Path.Combine(dir, "sbatch-args")), Does.Contain("--gpus-per-task 4"));
        string task = File.ReadAllText(Path.Combine(dir, "slurm", "jobs", "analyze.sbatch"));
        Assert.That(task, Does.Contain(expected + " --shard auto"));
        Assert.That(System.Text.RegularExpressions.Regex.Matches(task, "--device"), Has.Count.EqualTo(1));
    }

    [TestCase(new[] { "--out", "x", "--", "--model", "m" }, "--tasks N is required")]
    [TestCase(
        new[] { "--tasks", "2", "--out", "x", "--", "--model", "m", "--shard", "0/2" },
        "do not pass --shard after --"
    )]
    [TestCase(new[] { "--tasks", "2", "--out", "x" }, "give the analyze options after --")]
    [TestCase(new[] { "--tasks", "2", "--out", "x", "--nodes", "3" }, "unknown option --nodes")]
    public void BadArgumentsAreOneLineAndExitTwo(string[] args, string message)
    {
        var (exit, _, error) = Bash([Script("analyze-array.sh"), .. args]);
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error.Trim(), Does.StartWith("error: ").And.Contain(message));
        Assert.That(error.Trim().Split('\n'), Has.Length.EqualTo(1));
    }
}
