using System.Text.Json;
using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Training;
using Sparsity.Training.Model;
using static TorchSharp.torch;

namespace Sparsity.Tests;

[TestFixture]
public class TrainingTests
{
    static readonly ModelConfig Tiny = new(Layers: 2, DModel: 32, Heads: 4, DFf: 64, SeqLen: 32, VocabSize: 256);
    static readonly TrainOptions Short = new()
    {
        Steps = 120,
        BatchSize = 8,
        LearningRate = 3e-3,
        MinLearningRate = 3e-4,
        WarmupSteps = 10,
        TrackEvery = 10,
        EvalEvery = 40,
        EvalBatches = 2,
        Threads = 2,
    };

    static TrainSummary Train(
        string corpusDir,
        string outDir,
        ModelConfig? model = null,
        TrainOptions? options = null
    ) =>
        Trainer.Run(
            new TrainRequest(
                model ?? Tiny,
                options ?? Short,
                TextTokenizer.FromSpec("bytes"),
                Path.Combine(corpusDir, "train.txt"),
                Path.Combine(corpusDir, "heldout.txt"),
                outDir
            )
        );

    static List<TrainingLogEntry> ReadLog(string dir) =>
        File.ReadLines(Path.Combine(dir, Checkpoint.LogFile))
            .Select(l => JsonSerializer.Deserialize<TrainingLogEntry>(l, ProjectJson.Lines)!)
            .ToList();

    [Test]
    public void LossFallsAndTheLogTracksEveryLayer()
    {
        string corpus = TestCorpus.WriteSplits();
        string outDir = Path.Combine(TestCorpus.TempDir(), "ck");
        var summary = Train(corpus, outDir);

        var log = ReadLog(outDir);
        double firstHeldOut = log.First(e => e.HeldOutLoss != null).HeldOutLoss!.Value;
        Assert.That(
            firstHeldOut,
            Is.EqualTo(Math.Log(256)).Within(0.3),
            "an untrained model is near uniform over 256 bytes"
        );
        Assert.That(
            summary.FinalHeldOutLoss,
            Is.LessThan(0.6 * firstHeldOut),
            "held-out loss must fall on regular text"
        );
        Assert.That(summary.FinalLoss, Is.LessThan(0.6 * log[0].Loss));

        Assert.That(
            log.Select(e => e.Step),
            Is.EqualTo(new[] { 0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 119 })
        );
        Assert.That(log[0].Layers, Has.Count.EqualTo(2));
        Assert.That(
            log[0].Layers!.Select(l => l.NonzeroFraction),
            Is.All.InRange(0.35, 0.65),
            "about half the units fire at initialisation"
        );
        foreach (var layer in log.SelectMany(e => e.Layers!))
        {
            Assert.That(layer.PerTokenUnitsMean, Is.LessThanOrEqualTo(layer.PerSequenceUnitsMean));
            Assert.That(layer.PerSequenceUnitsMean, Is.LessThanOrEqualTo(layer.PerBatchUnitsMean));
            Assert.That(layer.NonzeroFraction, Is.EqualTo(layer.PerTokenUnitsMean / 64).Within(1e-12));
        }

        var death = JsonSerializer.Deserialize<UnitDeathLog>(
            File.ReadAllText(Path.Combine(outDir, Checkpoint.DeathFile)),
            ProjectJson.Options
        )!;
        Assert.That(death.LastStep, Is.EqualTo(119));
        foreach (var layer in death.Layers)
            for (int i = 0; i < 64; i++)
                Assert.That(
                    layer.DeathStep[i],
                    Is.EqualTo(layer.LastActiveStep[i] == 119 ? null : layer.LastActiveStep[i] + 1)
                );
        Assert.That(Directory.Exists(outDir + ".partial"), Is.False);
        Assert.That(Directory.Exists(Path.Combine(outDir, ".tokens")), Is.False, "token caches are removed");
    }

    [Test]
    public void RandomTargetsCannotBeLearnedAndTheRealTextIsNotLearnedEither()
    {
        // Li et al.'s random labels: the inputs are the real text, every next-token target is a random byte. Nothing
        // predicts a random target, so training loss stays at ln 256 (real targets: below 0.6 of it in the test above),
        // and the real next tokens of the held-out text are not learned either.
        string corpus = TestCorpus.WriteSplits();
        string outDir = Path.Combine(TestCorpus.TempDir(), "random-targets");
        var summary = Train(corpus, outDir, options: Short with { RandomTargets = true });
        Assert.That(summary.FinalLoss, Is.EqualTo(Math.Log(256)).Within(0.25));
        Assert.That(summary.FinalHeldOutLoss, Is.GreaterThan(0.9 * Math.Log(256)));
        Assert.That(ReadLog(outDir)[^1].Layers!.Select(l => l.NonzeroFraction), Is.All.InRange(0.0, 1.0));
    }

    [Test]
    public void SameSeedRepeatsTheLossCurve()
    {
        string corpus = TestCorpus.WriteSplits();
        var options = Short with { Steps = 30 };
        string a = Path.Combine(TestCorpus.TempDir(), "a"),
            b = Path.Combine(TestCorpus.TempDir(), "b");
        Train(corpus, a, options: options);
        Train(corpus, b, options: options);
        Assert.That(ReadLog(b).Select(e => e.Loss), Is.EqualTo(ReadLog(a).Select(e => e.Loss)));
        Assert.That(
            File.ReadAllBytes(Path.Combine(b, Checkpoint.WeightsFile)),
            Is.EqualTo(File.ReadAllBytes(Path.Combine(a, Checkpoint.WeightsFile)))
        );
    }

    [Test]
    public void CheckpointRoundTripGivesIdenticalLogits()
    {
        string corpus = TestCorpus.WriteSplits();
        string outDir = Path.Combine(TestCorpus.TempDir(), "ck");
        Train(corpus, outDir, options: Short with { Steps = 20 });

        var (model, tokenizer, info) = Checkpoint.Load(outDir);
        Assert.That(info.Model, Is.EqualTo(Tiny));
        Assert.That(info.Steps, Is.EqualTo(20));
        Assert.That(tokenizer.Spec, Is.EqualTo("bytes"));

        string copy = TestCorpus.TempDir();
        Checkpoint.Save(copy, model, tokenizer, info.Training, info.Steps);
        var (reloaded, _, _) = Checkpoint.Load(copy);
        using var ids = tensor(tokenizer.Encode("the cat sees a red ball.").Select(i => (long)i).ToArray())
            .unsqueeze(0);
        Assert.That(reloaded.forward(ids).allclose(model.forward(ids), rtol: 0, atol: 0), Is.True);
    }

    [Test]
    public void MaskedUnitsNeverFireAgain()
    {
        // A strong L1 penalty silences units early; masking at step 40 those silent since step 20 must keep them
        // silent.
        string corpus = TestCorpus.WriteSplits();
        string outDir = Path.Combine(TestCorpus.TempDir(), "ck");
        var options = Short with { Steps = 80, L1 = 0.5, MaskUnusedAt = 40, MaskWindow = 20 };
        var summary = Train(corpus, outDir, options: options);

        Assert.That(
            summary.MaskedUnits.Sum(),
            Is.GreaterThan(0),
            "the L1 penalty should silence some units by step 20"
        );
        var death = JsonSerializer.Deserialize<UnitDeathLog>(
            File.ReadAllText(Path.Combine(outDir, Checkpoint.DeathFile)),
            ProjectJson.Options
        )!;
        for (int l = 0; l < 2; l++)
            Assert.That(
                death.Layers[l].LastActiveStep.Count(s => s < 20),
                Is.EqualTo(summary.MaskedUnits[l]),
                $"layer {l}"
            );
        Assert.That(ReadLog(outDir).Last().Layers!.Select(x => x.UnitsMasked), Is.EqualTo(summary.MaskedUnits));
    }

    [Test]
    public void TopKTrainingNeverExceedsK()
    {
        string corpus = TestCorpus.WriteSplits();
        string outDir = Path.Combine(TestCorpus.TempDir(), "ck");
        Train(corpus, outDir, model: Tiny with { TopK = 8 }, options: Short with { Steps = 20 });
        Assert.That(
            ReadLog(outDir).SelectMany(e => e.Layers!).Select(l => l.PerTokenUnitsMean),
            Is.All.LessThanOrEqualTo(8.0)
        );
    }

    [Test]
    public void CorpusShorterThanOneWindowIsAClearError()
    {
        string dir = TestCorpus.TempDir();
        File.WriteAllText(Path.Combine(dir, "train.txt"), "too short\n");
        File.WriteAllText(Path.Combine(dir, "heldout.txt"), "also short\n");
        string outDir = Path.Combine(dir, "ck");
        var e = Assert.Throws<UserInputException>(() => Train(dir, outDir));
        Assert.That(e!.Message, Does.Contain("needs at least seq_len + 1 = 33"));
        Assert.That(
            Directory.Exists(outDir) || Directory.Exists(outDir + ".partial"),
            Is.False,
            "no half-written checkpoint"
        );
    }

    [Test]
    public void IdsBeyondTheVocabularyAreAClearError()
    {
        string dir = TestCorpus.TempDir();
        File.WriteAllLines(
            Path.Combine(dir, "train.txt"),
            Enumerable
                .Range(0, 10)
                .Select(i => string.Join(' ', Enumerable.Range(0, 40).Select(j => (i * 37 + j * 7) % 300)))
        );
        File.WriteAllLines(
            Path.Combine(dir, "heldout.txt"),
            Enumerable.Range(0, 2).Select(i => string.Join(' ', Enumerable.Range(0, 40).Select(j => j % 200)))
        );
        var e = Assert.Throws<UserInputException>(() =>
            Trainer.Run(
                new TrainRequest(
                    Tiny,
                    Short,
                    TextTokenizer.FromSpec("ids"),
                    Path.Combine(dir, "train.txt"),
                    Path.Combine(dir, "heldout.txt"),
                    Path.Combine(dir, "ck")
                )
            )
        );
        Assert.That(e!.Message, Does.Contain("beyond the model's vocab_size 256"));
    }

    [Test]
    public void LearningRateWarmsUpLinearlyThenDecaysByCosine()
    {
        var o = new TrainOptions
        {
            Steps = 101,
            WarmupSteps = 10,
            LearningRate = 1.0,
            MinLearningRate = 0.1,
        };
        Assert.That(o.LearningRateAt(0), Is.EqualTo(0.1).Within(1e-12));
        Assert.That(o.LearningRateAt(9), Is.EqualTo(1.0).Within(1e-12));
        Assert.That(o.LearningRateAt(10), Is.EqualTo(1.0).Within(1e-12));
        Assert.That(
            o.LearningRateAt(55),
            Is.EqualTo(0.55).Within(1e-12),
            "half way through the decay: midpoint of max and min"
        );
        Assert.That(o.LearningRateAt(100), Is.EqualTo(0.1).Within(1e-12));
    }
}
