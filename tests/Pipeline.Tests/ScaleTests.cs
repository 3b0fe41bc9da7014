using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Pipeline.Streaming;

namespace Sparsity.Tests;

/// <summary>Past one machine: shards from the scheduler, merges of many shards, and the corpus formats of big corpora.</summary>
[TestFixture]
public class ScaleTests
{
    static Func<string, string?> Env(params (string Name, string Value)[] variables) => name => variables.FirstOrDefault(v => v.Name == name).Value;

    [Test]
    public void ShardAutoTakesTheShardFromSlurmOrKubernetes()
    {
        var slurm = ShardChoice.Parse("auto", null, Env(("SLURM_ARRAY_TASK_ID", "7"), ("SLURM_ARRAY_TASK_MIN", "5"), ("SLURM_ARRAY_TASK_COUNT", "4")));
        Assert.That((slurm.Index, slurm.Count), Is.EqualTo((2, 4)), "task 7 of an array 5-8 is shard 2 of 4");
        Assert.That(slurm.Source, Is.EqualTo("Slurm (SLURM_ARRAY_TASK_ID=7, SLURM_ARRAY_TASK_MIN=5, SLURM_ARRAY_TASK_COUNT=4)"));

        var k8s = ShardChoice.Parse("auto", null, Env(("JOB_COMPLETION_INDEX", "3"), (ShardChoice.CountVariable, "8")));
        Assert.That((k8s.Index, k8s.Count), Is.EqualTo((3, 8)));
        Assert.That(ShardChoice.Parse("auto", 5, Env(("JOB_COMPLETION_INDEX", "4"))), Is.EqualTo(new ShardChoice(4, 5, "Kubernetes (JOB_COMPLETION_INDEX=4, --shard-count=5)")));
        Assert.That(ShardChoice.Parse("1/3", null, Env(("SLURM_ARRAY_TASK_ID", "0"))), Is.EqualTo(new ShardChoice(1, 3, "--shard")), "explicit i/n wins");

        Assert.That(Assert.Throws<UserInputException>(() => ShardChoice.Parse("auto", null, Env()))!.Message, Does.StartWith("--shard auto: no scheduler's shard variables are set"));
        Assert.That(Assert.Throws<UserInputException>(() => ShardChoice.Parse("auto", null, Env(("JOB_COMPLETION_INDEX", "0"))))!.Message, Does.Contain("--shard-count N or set RELU_SPARSITY_SHARD_COUNT"));
        Assert.That(Assert.Throws<UserInputException>(() => ShardChoice.Parse("auto", 4, Env(("JOB_COMPLETION_INDEX", "4"))))!.Message, Does.Contain("out of range"));
        Assert.That(Assert.Throws<UserInputException>(() => ShardChoice.Parse("auto", 3, Env(("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "4"))))!.Message, Does.Contain("disagrees"));
        Assert.Throws<UserInputException>(() => ShardChoice.Parse("2", null, Env()));
    }

    [Test]
    public void AnalyzeSaysWhichShardTheSchedulerGaveIt()
    {
        string dir = TestCorpus.TempDir();
        try
        {
            Environment.SetEnvironmentVariable("JOB_COMPLETION_INDEX", "1");
            var (exit, output, error) = Cli.Run("analyze", "--model", HookFixture.PathOf("opt.dynamo.onnx"), "--corpus", HookFixture.Corpus, "--tokenizer", "bytes",
                "--seq-len", "32", "--batch-size", "4", "--shard", "auto", "--shard-count", "2", "--out", Path.Combine(dir, "s1"));
            Assert.That(exit, Is.EqualTo(0), error);
            Assert.That(output, Does.Contain("Shard 1/2 from Kubernetes (JOB_COMPLETION_INDEX=1, --shard-count=2)."));
            Assert.That(SparsityStats.Load(Path.Combine(dir, "s1", SparsityStats.FileName)).Shards, Is.EqualTo(new[] { "1/2" }));
        }
        finally { Environment.SetEnvironmentVariable("JOB_COMPLETION_INDEX", null); }
    }
}
