using NUnit.Framework;
using Sparsity.Pipeline;
using Sparsity.Pipeline.Report;
using Sparsity.Training;

namespace Sparsity.Tests;

[TestFixture]
public class CommandLineTests
{
    [Test]
    public void HelpListsTheCommands()
    {
        var (exit, output, _) = Cli.Run("--help");
        Assert.That(exit, Is.EqualTo(0));
        Assert.That(output, Does.Contain("train").And.Contain("corpus").And.Contain("tokenizer"));
        var (trainExit, trainHelp, _) = Cli.Run("train", "--help");
        Assert.That(trainExit, Is.EqualTo(0));
        Assert.That(trainHelp, Does.Contain("--mask-unused-at").And.Contain("--top-k").And.Contain("--l1"));
    }

    [Test]
    public void UnknownPresetIsOneLineNamingTheChoices()
    {
        string corpus = TestCorpus.WriteSplits();
        var (exit, _, error) = Cli.Run(
            "train",
            "--preset",
            "nope",
            "--corpus",
            Path.Combine(corpus, "train.txt"),
            "--heldout",
            Path.Combine(corpus, "heldout.txt"),
            "--tokenizer",
            "bytes",
            "--out",
            Path.Combine(corpus, "ck")
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(
            error.Trim(),
            Does.StartWith("error: Unknown preset 'nope'").And.Contain("quick").And.Contain("paper")
        );
        Assert.That(error.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(Directory.Exists(Path.Combine(corpus, "ck")), Is.False);
    }

    [Test]
    public void BadTokenizerSpecExitsNonZeroWithoutStackTrace()
    {
        var (exit, _, error) = Cli.Run(
            "tokenizer",
            "encode",
            "--tokenizer",
            "wordpiece:/missing/vocab.txt",
            "--text",
            "hi"
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("/missing/vocab.txt").And.Not.Contain("   at "));
    }

    [Test]
    public void MissingRequiredOptionIsReported()
    {
        var (exit, _, error) = Cli.Run("train", "--tokenizer", "bytes");
        Assert.That(exit, Is.Not.EqualTo(0));
        Assert.That(error, Does.Contain("Option '--out' is required"));
    }

    [Test]
    public void DoctorSaysWhatIsInstalledAndWorking()
    {
        var (exit, output, error) = Cli.Run("doctor");
        Assert.That(exit, Is.EqualTo(0), error);
        var lines = output
            .Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .ToDictionary(l => l[4..].Split("  ")[0].Trim());
        Assert.That(
            lines.Keys,
            Is.EqualTo(
                new[]
                {
                    "relu-sparsity",
                    ".NET",
                    "ONNX Runtime",
                    "TorchSharp",
                    "loader fix",
                    "CUDA",
                    "presets",
                    "Brown corpus",
                }
            )
        );
        Assert.That(
            lines["ONNX Runtime"],
            Does.StartWith("ok  ").And.Contain("1.32").And.Contain("CPUExecutionProvider")
        );
        Assert.That(
            lines["TorchSharp"],
            Does.StartWith("ok  ").And.Contain("libtorch loads"),
            "the test host loads TorchSharp"
        );
        Assert.That(lines["presets"], Does.Contain("paper, quick"));
    }

    [TestCase("tiktoken:cl100k_base", 100257)]
    [TestCase("tiktoken:o200k_base", 199999)]
    public void TiktokenSeparatesDocumentsWithItsEndOfTextToken(string spec, int id)
    {
        var tokenizer = Sparsity.Corpora.TextTokenizer.FromSpec(spec);
        Assert.That(tokenizer.EndOfTextId, Is.EqualTo(id));
        Assert.That(tokenizer.VocabSize, Is.GreaterThan(id));
    }

    [Test]
    public void OmittedCorpusAndTokenizerDefaultToTheBuiltInBrownOrNameTheCommandThatBuildsIt()
    {
        string previous = Directory.GetCurrentDirectory(),
            dir = TestCorpus.TempDir();
        try
        {
            Directory.SetCurrentDirectory(dir);
            var (exit, _, error) = Cli.Run("train", "--preset", "quick", "--out", "ck");
            Assert.That(exit, Is.EqualTo(2));
            Assert.That(
                error.Trim(),
                Is.EqualTo(
                    "error: --corpus was not given and the built-in Brown corpus is not built here (data/brown/train.txt is missing): "
                        + "give --corpus, or build it with `dotnet cake --target=Tokenizer` in a clone of relu-sparsity."
                )
            );
            Assert.That(Directory.Exists("ck"), Is.False);

            Directory.CreateDirectory("data/brown/tokenizer");
            foreach (string f in new[] { "train.txt", "heldout.txt", "tokenizer/vocab.json", "tokenizer/merges.txt" })
                File.WriteAllText(Path.Combine("data/brown", f), "x");
            var note = new StringWriter();
            var values = Sparsity.Pipeline.BrownDefaults.Apply(
                note,
                ("--corpus", "mine.txt", Sparsity.Pipeline.BrownDefaults.Kind.TrainingText),
                ("--heldout", null, Sparsity.Pipeline.BrownDefaults.Kind.HeldOutText),
                ("--tokenizer", null, Sparsity.Pipeline.BrownDefaults.Kind.Tokenizer)
            );
            Assert.That(
                values,
                Is.EqualTo(
                    new[]
                    {
                        "mine.txt",
                        "data/brown/heldout.txt",
                        "bpe:data/brown/tokenizer/vocab.json,data/brown/tokenizer/merges.txt",
                    }
                )
            );
            Assert.That(
                note.ToString(),
                Is.EqualTo(
                    "Using the built-in Brown corpus: --heldout data/brown/heldout.txt, --tokenizer bpe:data/brown/tokenizer/vocab.json,data/brown/tokenizer/merges.txt."
                        + Environment.NewLine
                )
            );
        }
        finally
        {
            Directory.SetCurrentDirectory(previous);
        }
    }

    [Test]
    public void InvalidModelOverrideIsAUserError()
    {
        string corpus = TestCorpus.WriteSplits();
        var (exit, _, error) = Cli.Run(
            "train",
            "--corpus",
            Path.Combine(corpus, "train.txt"),
            "--heldout",
            Path.Combine(corpus, "heldout.txt"),
            "--tokenizer",
            "bytes",
            "--out",
            Path.Combine(corpus, "ck"),
            "--top-k",
            "100000"
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("top_k must be in 0..d_ff (512)"));
    }

    [Test]
    public void TrainCommandWritesACheckpoint()
    {
        string corpus = TestCorpus.WriteSplits();
        string outDir = Path.Combine(corpus, "ck");
        var (exit, output, error) = Cli.Run(
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
            "3",
            "--layers",
            "1",
            "--d-ff",
            "32",
            "--eval-every",
            "2",
            "--threads",
            "2"
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("nonzero fraction"));
        Assert.That(
            Directory.GetFiles(outDir).Select(Path.GetFileName),
            Is.EquivalentTo(
                new[]
                {
                    "config.json",
                    "model.safetensors",
                    "sparsity.jsonl",
                    "unit_death.json",
                    OutputFolder.ManifestName,
                }
            )
        );
    }

    [TestCase(0, 3, 7, "3:07")]
    [TestCase(1, 5, 22, "1:05:22")]
    [TestCase(0, 0, 0, "0:00")]
    public void ProgressClockKeepsHours(int hours, int minutes, int seconds, string expected) =>
        Assert.That(Markdown.Clock(new TimeSpan(hours, minutes, seconds)), Is.EqualTo(expected));
}
