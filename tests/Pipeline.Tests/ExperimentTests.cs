using System.Globalization;
using NUnit.Framework;
using Sparsity.Analysis;

namespace Sparsity.Tests;

[TestFixture]
public class ExperimentTests
{
    // A recipe small enough that all six experiments (13 runs) train in seconds.
    const string TinyPreset = """
        {
          "description": "test", "tokenizer_vocab_size": 256,
          "model": { "layers": 2, "d_model": 16, "heads": 2, "d_ff": 32, "seq_len": 16, "tied_embeddings": true, "top_k": 0 },
          "training": { "steps": 9, "batch_size": 4, "learning_rate": 0.01, "min_learning_rate": 0.001, "warmup_steps": 2, "seed": 5,
                        "track_every": 1, "eval_every": 3, "eval_batches": 1 }
        }
        """;

    static string[] Args(string dir, string name) =>
    [
        "experiment", name, "--preset", Path.Combine(dir, "tiny.json"), "--corpus", Path.Combine(dir, "train.txt"), "--heldout", Path.Combine(dir, "heldout.txt"),
        "--tokenizer", "bytes", "--work", Path.Combine(dir, "runs"), "--report", Path.Combine(dir, "docs", "results.md"),
    ];

    [Test]
    public void AllSixExperimentsWriteResultsFromTheirRunsAndReuseThem()
    {
        string dir = TestCorpus.WriteSplits();
        File.WriteAllText(Path.Combine(dir, "tiny.json"), TinyPreset);
        var (exit, output, error) = Cli.Run(Args(dir, "all"));
        Assert.That(exit, Is.EqualTo(0), error + output);

        string results = File.ReadAllText(Path.Combine(dir, "docs", "results.md"));
        foreach (var title in new[] { "1. Sparsity during training", "2. Per-token against per-batch", "3. Neuron death", "4. Active units against MLP width", "5. Top-k trained", "6. L1 activation penalty" })
            Assert.That(results, Does.Contain("## " + title));
        foreach (var png in new[] { "dynamics", "layers", "death_steps", "width", "topk", "l1" })
            Assert.That(new FileInfo(Path.Combine(dir, "docs", "results", png + ".png")).Length, Is.GreaterThan(1000), png);
        Assert.That(Directory.GetDirectories(Path.Combine(dir, "runs")).Select(Path.GetFileName).Order(), Is.EqualTo(new[]
        {
            "base", "dff_128", "dff_16", "dff_64", "dff_8", "l1_0.01", "l1_0.1", "l1_1", "mask_3", "mask_6", "topk_2", "topk_4", "topk_8", "topk_applied",
        }.Order()));

        // The width fit in the report is the fit of the runs' own held-out counts.
        double[] widths = [8, 16, 32, 64, 128];
        double[] counts = widths.Select(n => SparsityStats.Load(Path.Combine(dir, "runs", n == 32 ? "base" : $"dff_{n}", "analysis", "stats.json"))
            .Layers.Average(l => l.PerTokenUnitsMean)).ToArray();
        var fit = WidthScaling.PowerLaw(widths, counts);
        Assert.That(results, Does.Contain($"| mean over layers | {fit.C.ToString("0.000", CultureInfo.InvariantCulture)} | {fit.Exponent.ToString("0.000", CultureInfo.InvariantCulture)} |"));

        // Trained Top-k keeps at most k units per token, so its held-out nonzero fraction is at most k / d_ff.
        var topk = SparsityStats.Load(Path.Combine(dir, "runs", "topk_4", "analysis", "stats.json"));
        Assert.That(topk.Layers.Max(l => l.NonzeroFraction), Is.LessThanOrEqualTo(4.0 / 32 + 1e-12));

        var (again, secondOutput, _) = Cli.Run(Args(dir, "layers"));
        Assert.That(again, Is.EqualTo(0));
        Assert.That(secondOutput, Does.Contain("Run base: reusing"));
        Assert.That(secondOutput, Does.Not.Contain("training 2 layers"));
    }

    [Test]
    public void UnknownExperimentNamesTheChoices()
    {
        var (exit, _, error) = Cli.Run("experiment", "sparsity", "--corpus", "a", "--heldout", "b", "--tokenizer", "bytes");
        Assert.That(exit, Is.Not.EqualTo(0));
        Assert.That(error, Does.Contain("dynamics").And.Contain("width").And.Contain("all"));
    }
}
