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

    static string[] Args(string dir, string name, params string[] extra) =>
        [
            "experiment",
            name,
            .. extra,
            "--preset",
            Path.Combine(dir, "tiny.json"),
            "--corpus",
            Path.Combine(dir, "train.txt"),
            "--heldout",
            Path.Combine(dir, "heldout.txt"),
            "--tokenizer",
            "bytes",
            "--work",
            Path.Combine(dir, "runs"),
            "--report",
            Path.Combine(dir, "docs", "results.md"),
        ];

    [Test]
    public void AllExperimentsWriteResultsOverSeedsFromTheirRunsAndReuseThem()
    {
        string dir = TestCorpus.WriteSplits();
        File.WriteAllText(Path.Combine(dir, "tiny.json"), TinyPreset);
        var (exit, output, error) = Cli.Run(Args(dir, "all", "--seeds", "2"));
        Assert.That(exit, Is.EqualTo(0), error + output);
        Assert.That(output, Does.Contain("19 configurations × 2 seeds = 38 training runs"));

        string results = File.ReadAllText(Path.Combine(dir, "docs", "results.md"));
        foreach (
            var title in new[]
            {
                "1. Sparsity during training",
                "2. Per-token against per-batch",
                "3. Neuron death",
                "4. Active units against MLP width",
                "5. Top-k trained",
                "6. L1 activation penalty",
                "7. Sparsity with random data",
                "8. Sparsity against depth",
                "9. Per-batch inversion, examined",
            }
        )
            Assert.That(results, Does.Contain("## " + title));
        foreach (
            var png in new[]
            {
                "dynamics",
                "layers",
                "death_steps",
                "width",
                "topk",
                "l1",
                "random",
                "depth",
                "inversion",
            }
        )
            Assert.That(
                new FileInfo(Path.Combine(dir, "docs", "results", png + ".png")).Length,
                Is.GreaterThan(1000),
                png
            );
        string[] configurations =
        [
            "base",
            "dff_4",
            "dff_8",
            "dff_16",
            "dff_64",
            "dff_128",
            "dff_256",
            "l1_0.01",
            "l1_0.1",
            "l1_1",
            "mask_3",
            "mask_6",
            "topk_2",
            "topk_4",
            "topk_8",
            "random_targets",
            "random_tokens",
            "layers_1",
            "layers_4",
        ];
        Assert.That(
            Directory.GetDirectories(Path.Combine(dir, "runs")).Select(Path.GetFileName).Order(),
            Is.EqualTo(
                configurations
                    .Concat(configurations.Select(c => c + "_seed6"))
                    .Append("topk_applied")
                    .Append("random_tokens_corpus_v256")
                    .Order()
            )
        );
        Assert.That(results, Does.Contain("2 seeds per configuration (5, 6)"));
        Assert.That(results, Does.Contain("the 38 training runs behind this report took"));

        // Seeds aggregate as mean ± sample sd of the runs' own figures: layer 0's held-out nonzero fraction in section
        // 2.
        double[] layer0 = new[] { "base", "base_seed6" }
            .Select(r =>
                SparsityStats.Load(Path.Combine(dir, "runs", r, "analysis", "stats.json")).Layers[0].NonzeroFraction
            )
            .ToArray();
        Assert.That(layer0[0], Is.Not.EqualTo(layer0[1]), "two seeds, two models");
        Assert.That(results, Does.Contain($" | {new SeedSpread(layer0).ToString("0.000")} | "));

        // The width fit in the report is the fit of the runs' own held-out counts, averaged over seeds.
        double[] widths = [4, 8, 16, 32, 64, 128, 256];
        double[] counts = widths
            .Select(n =>
                new[] { "", "_seed6" }.Average(seed =>
                    SparsityStats
                        .Load(
                            Path.Combine(dir, "runs", (n == 32 ? "base" : $"dff_{n}") + seed, "analysis", "stats.json")
                        )
                        .Layers.Average(l => l.PerTokenUnitsMean)
                )
            )
            .ToArray();
        var fit = WidthScaling.PowerLaw(widths, counts);
        Assert.That(
            results,
            Does.Contain(
                $"| mean over layers | {fit.C.ToString("0.000", CultureInfo.InvariantCulture)} | {fit.Exponent.ToString("0.000", CultureInfo.InvariantCulture)} |"
            )
        );
        Assert.That(results, Does.Contain("percentile bootstrap over seeds"));
        // Random tokens trained on the generated ids; the inversion's analyses are kept beside each base run.
        Assert.That(
            File.ReadAllText(Path.Combine(dir, "runs", "random_tokens", "experiment.json")),
            Does.Contain("random_tokens_corpus_v256")
        );
        Assert.That(
            Directory.GetDirectories(Path.Combine(dir, "runs", "base_seed6", "inversion")),
            Has.Length.EqualTo(25)
        );
        // The inversion's saturation figure is the minimum over every setting, seed and layer of the kept analyses.
        double lowest = new[] { "base", "base_seed6" }
            .SelectMany(r => Directory.GetDirectories(Path.Combine(dir, "runs", r, "inversion")))
            .SelectMany(d =>
                SparsityStats
                    .Load(Path.Combine(d, SparsityStats.FileName))
                    .Layers.Select(l => l.PerBatchUnitsMean / l.DFf)
            )
            .Min();
        Assert.That(
            results,
            Does.Contain(
                $"The lowest per-batch use of any layer, setting and seed is {lowest.ToString("0.000", CultureInfo.InvariantCulture)} of d_ff"
            )
        );

        // Trained Top-k keeps at most k units per token, so its held-out nonzero fraction is at most k / d_ff.
        var topk = SparsityStats.Load(Path.Combine(dir, "runs", "topk_4", "analysis", "stats.json"));
        Assert.That(topk.Layers.Max(l => l.NonzeroFraction), Is.LessThanOrEqualTo(4.0 / 32 + 1e-12));

        var (again, secondOutput, _) = Cli.Run(Args(dir, "layers", "--seeds", "2"));
        Assert.That(again, Is.EqualTo(0));
        Assert.That(secondOutput, Does.Contain("Run base: reusing").And.Contain("Run base_seed6: reusing"));
        Assert.That(secondOutput, Does.Not.Contain("training 2 layers"));
    }

    [Test]
    public void FastIsOneSeedOfShortRunsAndSaysItCannotBeCited()
    {
        string dir = TestCorpus.WriteSplits();
        File.WriteAllText(Path.Combine(dir, "tiny.json"), TinyPreset.Replace("\"steps\": 9", "\"steps\": 60"));
        var (exit, output, error) = Cli.Run(Args(dir, "dynamics", "--fast"));
        Assert.That(exit, Is.EqualTo(0), error + output);
        Assert.That(output, Does.Contain("1 configuration × 1 seed = 1 training run of 30 steps"));
        Assert.That(File.ReadAllText(Path.Combine(dir, "docs", "results.md")), Does.Contain("Smoke test (`--fast`)"));
    }

    [Test]
    public void UnknownExperimentNamesTheChoices()
    {
        var (exit, _, error) = Cli.Run(
            "experiment",
            "sparsity",
            "--corpus",
            "a",
            "--heldout",
            "b",
            "--tokenizer",
            "bytes"
        );
        Assert.That(exit, Is.Not.EqualTo(0));
        Assert.That(error, Does.Contain("dynamics").And.Contain("width").And.Contain("all"));
    }
}
