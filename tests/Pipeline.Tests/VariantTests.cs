using System.Text.Json;
using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Streaming;
using Sparsity.Pipeline.Variants;
using Sparsity.Training;
using Sparsity.Training.Model;
using TorchSharp;

namespace Sparsity.Tests;

[TestFixture]
public class NextTokenQualityTests
{
    [Test]
    public void LossAccuracyAndEceEqualHandComputedValues()
    {
        // Three predictions over a vocabulary of 2 (probabilities by hand: softmax([a, b]) = 1 / (1 + e^(b−a))).
        var q = new NextTokenQuality();
        q.Add([0f, 0f], 0); // p = (0.5, 0.5): argmax 0 (first), correct, confidence 0.5, nll ln 2
        q.Add([(float)Math.Log(3), 0f], 0); // p = (0.75, 0.25): correct, confidence 0.75, nll ln(4/3)
        q.Add([(float)Math.Log(3), 0f], 1); // p = (0.75, 0.25): wrong, confidence 0.75, nll ln 4
        Assert.That(q.Loss, Is.EqualTo((Math.Log(2) + Math.Log(4.0 / 3) + Math.Log(4)) / 3).Within(1e-6));
        Assert.That(q.Perplexity, Is.EqualTo(Math.Exp(q.Loss)).Within(1e-9));
        Assert.That(q.Accuracy, Is.EqualTo(2.0 / 3).Within(1e-12));
        // Bins of width 1/15: 0.5 → bin 7 (accuracy 1, confidence 0.5); 0.75 → bin 11 (accuracy 0.5, confidence 0.75).
        Assert.That(q.ExpectedCalibrationError, Is.EqualTo(1.0 / 3 * 0.5 + 2.0 / 3 * 0.25).Within(1e-6));
    }

    [Test]
    public void MergeEqualsAddingEverything()
    {
        var random = new Random(3);
        var rows = Enumerable
            .Range(0, 40)
            .Select(_ =>
                (
                    Logits: Enumerable.Range(0, 7).Select(_ => (float)random.NextDouble() * 4).ToArray(),
                    Target: random.Next(7)
                )
            )
            .ToList();
        var whole = new NextTokenQuality();
        var a = new NextTokenQuality();
        var b = new NextTokenQuality();
        for (int i = 0; i < rows.Count; i++)
        {
            whole.Add(rows[i].Logits, rows[i].Target);
            (i % 2 == 0 ? a : b).Add(rows[i].Logits, rows[i].Target);
        }
        a.Merge(b);
        Assert.That(a.Loss, Is.EqualTo(whole.Loss).Within(1e-12));
        Assert.That(a.ExpectedCalibrationError, Is.EqualTo(whole.ExpectedCalibrationError).Within(1e-12));
        Assert.That(a.Correct, Is.EqualTo(whole.Correct));
    }
}

[TestFixture]
public class MaskRuleTests
{
    // Two layers of four units over 10 tokens.
    static SparsityStats Stats()
    {
        LayerStats Layer(int index, long[] counts) =>
            new(
                $"mlp_hidden.{index}",
                index,
                4,
                0,
                0,
                0,
                0,
                default,
                default,
                default,
                0,
                0,
                0,
                [],
                counts,
                counts.Select(c => c / 10.0).ToArray()
            );
        return new SparsityStats(
            "m.onnx",
            "c.txt",
            "bytes",
            10,
            1,
            1,
            10,
            1,
            0,
            null,
            ["0/1"],
            "test",
            [Layer(0, [0, 5, 1, 9]), Layer(1, [2, 0, 0, 4])]
        );
    }

    [Test]
    public void RulesKeepTheExpectedUnits()
    {
        Assert.That(
            MaskRules.DeadOnly(Stats()).Layers.Select(l => l.Kept),
            Is.EqualTo(new[] { new[] { 1, 2, 3 }, new[] { 0, 3 } })
        );
        Assert.That(
            MaskRules.MinFrequency(Stats(), 0.2).Layers.Select(l => l.Kept),
            Is.EqualTo(new[] { new[] { 1, 3 }, new[] { 0, 3 } })
        );
        Assert.That(
            MaskRules.KeepFraction(Stats(), 0.5).Layers.Select(l => l.Kept),
            Is.EqualTo(new[] { new[] { 1, 3 }, new[] { 0, 3 } })
        );
        Assert.That(
            MaskRules.KeepFraction(Stats(), 0.3).Layers.Select(l => l.Kept),
            Is.EqualTo(new[] { new[] { 1, 3 }, new[] { 0, 3 } }),
            "⌈0.3·4⌉ = 2"
        );
        // Remove 4 of 8 units, least frequent first: (0,0) 0, (1,1) 0, (1,2) 0, (0,2) 0.1.
        Assert.That(
            MaskRules.FlopReduction(Stats(), 0.5).Layers.Select(l => l.Kept),
            Is.EqualTo(new[] { new[] { 1, 3 }, new[] { 0, 3 } })
        );
        // 7 of 8 would empty a layer: each layer keeps its most active unit, so only 6 go.
        Assert.That(
            MaskRules.FlopReduction(Stats(), 0.875).Layers.Select(l => l.Kept),
            Is.EqualTo(new[] { new[] { 3 }, new[] { 3 } })
        );
        Assert.That(MaskRules.DeadOnly(Stats()).Source, Does.Contain("c.txt"));
    }

    [Test]
    public void ARuleThatEmptiesALayerIsRefused()
    {
        var e = Assert.Throws<UserInputException>(() => MaskRules.MinFrequency(Stats(), 0.95));
        Assert.That(e!.Message, Does.Contain("would remove every unit of layer 0"));
        Assert.Throws<UserInputException>(() => MaskRules.KeepFraction(Stats(), 0));
        Assert.Throws<UserInputException>(() => MaskRules.FlopReduction(Stats(), 1));
    }
}

[TestFixture]
public class VariantTests
{
    static readonly ModelConfig Byte = new(Layers: 2, DModel: 32, Heads: 4, DFf: 64, SeqLen: 16, VocabSize: 256);

    static (string Model, string Corpus) ModelWithDeadUnits()
    {
        torch.random.manual_seed(51);
        using var model = new ReluTransformer(Byte);
        model.Mlps[0].SetUnitMask(Enumerable.Range(0, 64).Select(i => i % 4 != 1).ToArray()); // 16 units dead on any input
        string dir = TestCorpus.TempDir();
        string path = Path.Combine(dir, "model.onnx");
        OnnxGraph.Save(ModelExporter.Export(model, ExportVariant.Dense), path);
        string corpus = Path.Combine(dir, "text.txt");
        File.WriteAllLines(corpus, TestCorpus.Documents(6, seed: 8));
        return (path, corpus);
    }

    [Test]
    public void DeadOnlyPruningChangesNoLogitOnItsCorpus()
    {
        var (model, corpus) = ModelWithDeadUnits();
        string statsDir = Path.Combine(TestCorpus.TempDir(), "stats");
        var stats = Analyzer.Run(
            new AnalysisRequest
            {
                Model = model,
                Corpus = corpus,
                Tokenizer = TokenizerSpec.Bytes,
                SeqLen = 16,
                BatchSize = 4,
                Threads = 2,
                OutDir = statsDir,
            }
        );
        var mask = MaskRules.DeadOnly(stats);
        Assert.That(mask.Layers[0].Kept.Length, Is.LessThanOrEqualTo(48));
        var proto = OnnxGraph.Load(model);
        var (pruned, _, report) = Surgery.Prune(proto, MlpSites.Find(proto), mask);
        Assert.That(report.ParametersAfter, Is.LessThan(report.ParametersBefore));
        string prunedPath = Path.Combine(TestCorpus.TempDir(), "pruned.onnx");
        OnnxGraph.Save(pruned, prunedPath);

        var bytes = Corpora.TextTokenizer.FromSpec("bytes");
        foreach (string doc in File.ReadLines(corpus))
        {
            long[] ids = bytes.Encode(doc).Take(16).Select(i => (long)i).ToArray();
            var before = OrtRunner.Run(model, ("input_ids", ids, new long[] { 1, ids.Length }))["logits"].Floats!;
            var after = OrtRunner.Run(prunedPath, ("input_ids", ids, new long[] { 1, ids.Length }))["logits"].Floats!;
            Assert.That(before.Zip(after, (x, y) => Math.Abs(x - y)).Max(), Is.LessThanOrEqualTo(1e-4f));
        }
    }

    [Test]
    public void EvaluatingTheSameModelTwiceGivesTheSameQuality()
    {
        var (model, corpus) = ModelWithDeadUnits();
        var request = new EvaluationRequest(model, corpus, "bytes", 16, 4, TimedRuns: 3);
        var a = Evaluator.Run(request);
        var b = Evaluator.Run(request);
        Assert.That(
            (a.Loss, a.Accuracy, a.ExpectedCalibrationError, a.NoisyAccuracy),
            Is.EqualTo((b.Loss, b.Accuracy, b.ExpectedCalibrationError, b.NoisyAccuracy))
        );
        Assert.That(a.Loss, Is.EqualTo(Math.Log(256)).Within(0.3), "an untrained model is near uniform");
        Assert.That(a.MlpFlopsPerToken, Is.EqualTo(2 * 4L * 32 * 64));
        // Each window of n real tokens predicts n − 1 next tokens: tokens minus windows per document.
        Assert.That(a.Predictions, Is.EqualTo(File.ReadLines(corpus).Sum(d => d.Length - (d.Length + 15) / 16)));
    }

    [Test]
    public void PruneFolderRefusesTheStatisticsCorpusAndTopKFolderWritesVariants()
    {
        var (model, corpus) = ModelWithDeadUnits();
        string statsDir = Path.Combine(TestCorpus.TempDir(), "stats");
        Analyzer.Run(
            new AnalysisRequest
            {
                Model = model,
                Corpus = corpus,
                Tokenizer = TokenizerSpec.Bytes,
                SeqLen = 16,
                BatchSize = 4,
                Threads = 2,
                OutDir = statsDir,
            }
        );
        string outDir = Path.Combine(TestCorpus.TempDir(), "pruned");
        var (exit, _, error) = Cli.Run(
            "prune",
            "--model",
            model,
            "--stats",
            Path.Combine(statsDir, "stats.json"),
            "--dead-only",
            "--out",
            outDir,
            "--eval-corpus",
            corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "16",
            "--runs",
            "2"
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("is the text the statistics came from"));
        Assert.That(Directory.Exists(outDir), Is.False);

        (exit, _, error) = Cli.Run(
            "prune",
            "--model",
            model,
            "--stats",
            Path.Combine(statsDir, "stats.json"),
            "--dead-only",
            "--out",
            outDir,
            "--eval-corpus",
            corpus,
            "--allow-stats-corpus",
            "--tokenizer",
            "bytes",
            "--seq-len",
            "16",
            "--runs",
            "2"
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(
            Directory.GetFiles(outDir).Select(Path.GetFileName),
            Is.EquivalentTo(
                new[]
                {
                    "model.onnx",
                    "model.mlp.json",
                    "mask.json",
                    "evaluation.json",
                    "README.md",
                    OutputFolder.ManifestName,
                }
            )
        );
        Assert.That(File.ReadAllText(Path.Combine(outDir, "README.md")), Does.Contain("relu-sparsity prune --model"));

        string topDir = Path.Combine(TestCorpus.TempDir(), "topk");
        (exit, var output, error) = Cli.Run(
            "topk",
            "--model",
            model,
            "--k",
            "4,64",
            "--out",
            topDir,
            "--eval-corpus",
            corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "16",
            "--runs",
            "2"
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(Directory.GetDirectories(topDir).Select(Path.GetFileName), Is.EquivalentTo(new[] { "k4", "k64" }));
        var rows = JsonDocument
            .Parse(File.ReadAllText(Path.Combine(topDir, "topk.json")))
            .RootElement.EnumerateArray()
            .ToList();
        Assert.That(
            rows.Select(r => r.GetProperty("variant").GetString()),
            Is.EqualTo(new[] { "dense", "k=4", "k=64" })
        );
        double Loss(int i) => rows[i].GetProperty("evaluation").GetProperty("loss").GetDouble();
        Assert.That(Loss(2), Is.EqualTo(Loss(0)).Within(1e-6), "k = d_ff is the dense model");
        Assert.That(Loss(1), Is.Not.EqualTo(Loss(0)).Within(1e-6), "k = 4 changes it");
        Assert.That(File.ReadAllText(Path.Combine(topDir, "topk.md")), Does.Contain("| k=4 |"));

        (exit, _, error) = Cli.Run(
            "topk",
            "--model",
            model,
            "--k",
            "0",
            "--out",
            Path.Combine(TestCorpus.TempDir(), "bad"),
            "--eval-corpus",
            corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "16"
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("k = 0 is outside 1..64"));
    }
}
