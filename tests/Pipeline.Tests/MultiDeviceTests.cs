using NUnit.Framework;
using Sparsity.Pipeline.Runtime;
using Sparsity.Training;
using Sparsity.Training.Model;

namespace Sparsity.Tests;

/// <summary>
/// <c>analyze --device</c> with several devices: the corpus read once and dealt to one session per device, the parts
/// merged in process. On this machine <c>cpu,cpu</c> stands in for two GPUs and runs the same code path.
/// </summary>
[TestFixture]
public class MultiDeviceTests
{
    static string Model() =>
        TinyModels.DenseExport(
            new ModelConfig(Layers: 2, DModel: 32, Heads: 4, DFf: 64, SeqLen: 16, VocabSize: 256),
            seed: 44
        );

    static string Corpus()
    {
        string path = Path.Combine(TestCorpus.TempDir(), "corpus.txt");
        File.WriteAllLines(path, TestCorpus.Documents(40, seed: 11));
        return path;
    }

    static (string Dir, string Output) Analyze(string model, string corpus, string device, params string[] extra)
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, output, error) = Cli.Run([
            .. new[]
            {
                "analyze",
                "--model",
                model,
                "--corpus",
                corpus,
                "--tokenizer",
                "bytes",
                "--seq-len",
                "16",
                "--batch-size",
                "3",
                "--threads",
                "1",
                "--device",
                device,
                "--out",
                outDir,
            },
            .. extra,
        ]);
        Assert.That(exit, Is.EqualTo(0), error);
        return (outDir, output);
    }

    [TestCase("cpu,cpu")]
    [TestCase("cpu,cpu,cpu")]
    public void SeveralDevicesEqualOneBitForBit(string devices)
    {
        string model = Model(),
            corpus = Corpus();
        var (one, _) = Analyze(model, corpus, "cpu", "--top-examples", "4");
        var (several, output) = Analyze(model, corpus, devices, "--top-examples", "4", "--timing");
        var files = Directory
            .GetFiles(one)
            .Select(Path.GetFileName)
            .Where(f => f!.EndsWith(".csv") || f == "counts.json" || f == "stats.json")
            .ToList();
        Assert.That(files, Has.Count.EqualTo(8), "counts, stats, two layers' unit CSVs, top examples and histograms");
        foreach (string file in files!)
            Assert.That(
                File.ReadAllText(Path.Combine(several, file!)),
                Is.EqualTo(File.ReadAllText(Path.Combine(one, file!))),
                file
            );
        int n = devices.Split(',').Length;
        // Each device's rate in the progress line and its timing (a device that started after the others had taken
        // every batch has none), then the total.
        Assert.That(output, Does.Contain("(cpu ").And.Contain(" tok/s)"));
        Assert.That(output.Split('\n').Count(l => l.StartsWith("cpu: Timing over ")), Is.InRange(1, n), output);
        Assert.That(output, Does.Contain($"All {n} devices: "));
    }

    [Test]
    public void BatchesAreDealtNotCopied()
    {
        // Every batch goes to exactly one device: the devices' tokens add up to the corpus's, which one device also
        // counts.
        string model = Model(),
            corpus = Corpus();
        var (_, output) = Analyze(model, corpus, "cpu,cpu");
        var (one, _) = Analyze(model, corpus, "cpu");
        long tokens = Sparsity.Analysis.SparsityCounts.Load(one).Layers[0].UnitsPerTokenHistogram.Sum();
        Assert.That(output, Does.Contain($"{tokens:N0} tokens"));
        Assert.That(tokens, Is.EqualTo(File.ReadAllLines(corpus).Sum(l => System.Text.Encoding.UTF8.GetByteCount(l))));
    }

    [TestCase("cpu,auto", "auto and cuda:all stand alone")]
    [TestCase("cpu,,cpu", "auto and cuda:all stand alone")]
    [TestCase("cpu,gpu", "--device gpu: use cpu, cuda, cuda:N (N = GPU index) or auto.")]
    public void BadDeviceListsAreRefusedByName(string devices, string message)
    {
        var e = Assert.Throws<UserInputException>(() => Devices.ResolveAll(devices));
        Assert.That(e!.Message, Does.Contain(message));
    }

    [Test]
    public void CudaAllWithoutCudaNamesWhatIsMissing()
    {
        if (Devices.CudaProblem() == null)
            Assert.Ignore("This machine has CUDA; the message is for machines without it.");
        var e = Assert.Throws<UserInputException>(() => Devices.ResolveAll("cuda:all"));
        Assert.That(
            e!.Message,
            Does.StartWith("--device cuda:all: ").And.Contain("cannot be loaded").Or.Contain("no CUDA provider")
        );
    }

    [Test]
    public void AFailingReadStopsEveryDeviceAndWritesNothing()
    {
        // Id 200 is outside this 128-id vocabulary: the reader fails mid-corpus, the devices stop, no folder is left.
        string model = TinyModels.DenseExport(
            new ModelConfig(Layers: 1, DModel: 16, Heads: 2, DFf: 32, SeqLen: 16, VocabSize: 128),
            seed: 45
        );
        string corpus = Path.Combine(TestCorpus.TempDir(), "corpus.txt");
        File.WriteAllLines(
            corpus,
            [
                .. Enumerable.Range(0, 30).Select(d => string.Join(' ', Enumerable.Range(d, 40).Select(i => i % 128))),
                "5 200 7",
            ]
        );
        string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
        var (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            model,
            "--corpus",
            corpus,
            "--tokenizer",
            "ids",
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--device",
            "cpu,cpu",
            "--out",
            outDir
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error.Trim(), Does.Contain("outside the model's vocabulary").And.Not.Contain("   at "));
        Assert.That(
            Directory.GetFileSystemEntries(Path.GetDirectoryName(outDir)!),
            Is.Empty,
            "neither the folder nor a temporary sibling is left"
        );
    }
}
