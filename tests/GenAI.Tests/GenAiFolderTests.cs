using System.Diagnostics;
using Microsoft.ML.OnnxRuntimeGenAI;
using NUnit.Framework;

namespace Sparsity.GenAI.Tests;

/// <summary>
/// ONNX Runtime GenAI 0.18 loads the folders `relu-sparsity export --with-past --out DIR` writes, tokenizes as we do,
/// and generates the greedy text our own `generate` does. relu-sparsity runs as a process (the solution's build of it).
/// </summary>
[TestFixture]
public class GenAiFolderTests
{
    static readonly string Root = FindRoot();

    static string Fixture(string path) => Path.Combine(Root, "tests", "fixtures", path);

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Pipeline.sln")))
                return dir.FullName;
        throw new InvalidOperationException("Pipeline.sln not found above the test folder.");
    }

    // The relu-sparsity the solution just built (Debug under `dotnet test Pipeline.sln`, or Release).
    static string Tool()
    {
        var built = new[] { "Debug", "Release" }
            .Select(c => Path.Combine(Root, "src", "Cli", "bin", c, "net10.0", "relu-sparsity.dll"))
            .Where(File.Exists)
            .OrderByDescending(File.GetLastWriteTimeUtc)
            .FirstOrDefault();
        return built
            ?? throw new AssertionException(
                "relu-sparsity is not built: run `dotnet build Pipeline.sln` (or `dotnet test Pipeline.sln`) first."
            );
    }

    static string Run(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = Root,
        };
        start.ArgumentList.Add(Tool());
        foreach (string a in args)
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        string output = process.StandardOutput.ReadToEnd(),
            error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.EqualTo(0), $"relu-sparsity {string.Join(' ', args)}\n{output}\n{error}");
        return output;
    }

    static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "relu-sparsity-genai-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    static int[] Ids(string line) => line.Trim().Split(' ').Select(int.Parse).ToArray();

    // GenAI's greedy continuation of prompt, decoded, and ours from `generate`.
    static (string GenAi, string Ours) Greedy(string folder, string tokenizerSpec, string prompt, int newTokens)
    {
        using var model = new Model(folder);
        using var tokenizer = new Tokenizer(model);
        using var sequences = tokenizer.Encode(prompt);
        Assert.That(
            sequences[0].ToArray(),
            Is.EqualTo(Ids(Run("tokenizer", "encode", "--tokenizer", tokenizerSpec, "--text", prompt))),
            "GenAI's token ids are ours"
        );
        using var parameters = new GeneratorParams(model);
        parameters.SetSearchOption("max_length", sequences[0].Length + newTokens);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new Generator(model, parameters);
        generator.AppendTokenSequences(sequences);
        while (!generator.IsDone())
            generator.GenerateNextToken();
        var all = generator.GetSequence(0).ToArray();
        string genAi = prompt + tokenizer.Decode(all.AsSpan(sequences[0].Length));
        string ours = Run(
                "generate",
                "--model",
                Path.Combine(folder, "model.onnx"),
                "--tokenizer",
                tokenizerSpec,
                "--prompt",
                prompt,
                "--max-new-tokens",
                newTokens.ToString(),
                "--greedy"
            )
            .Split('\n')[0];
        return (genAi, ours);
    }

    [Test]
    public void AHuggingFaceOptFolderLoadsAndGeneratesOurGreedyText()
    {
        string folder = Path.Combine(TempDir(), "opt");
        Run("export", "--checkpoint", Fixture("hf/opt"), "--with-past", "--out", folder);
        using (var model = new Model(folder))
            Assert.That(model.GetModelType(), Is.EqualTo("decoder"));
        var (genAi, ours) = Greedy(folder, "hf:" + Fixture("hf/opt"), "The jury said that the", 24);
        Assert.That(genAi, Is.EqualTo(ours));
        Assert.That(ours.Length, Is.GreaterThan("The jury said that the".Length + 20));
    }

    [Test]
    public void OurCheckpointsFolderGetsATokenizerJsonGenAiReadsAsWeDo()
    {
        // A checkpoint trained here with a byte-level BPE (the OPT fixture's vocabulary): export writes tokenizer.json
        // for it.
        string work = TempDir(),
            checkpoint = Path.Combine(work, "ck"),
            folder = Path.Combine(work, "deploy");
        string bpe = $"bpe:{Fixture("hf/opt/vocab.json")},{Fixture("hf/opt/merges.txt")}";
        Run(
            "train",
            "--corpus",
            Fixture("hf/heldout.txt"),
            "--heldout",
            Fixture("hf/heldout.txt"),
            "--tokenizer",
            bpe,
            "--out",
            checkpoint,
            "--steps",
            "30",
            "--layers",
            "2",
            "--d-ff",
            "64",
            "--eval-every",
            "30",
            "--threads",
            "2"
        );
        string output = Run("export", "--checkpoint", checkpoint, "--with-past", "--out", folder);
        Assert.That(output, Does.Contain("tokenizer.json (byte-level BPE, GPT2Tokenizer) written"));
        var (genAi, ours) = Greedy(folder, bpe, "It was a dark and stormy night; the", 20);
        Assert.That(genAi, Is.EqualTo(ours));
    }

    [Test]
    public void SparseDecodeAndPruneKeepTheFolderLoadableAndTheGreedyText()
    {
        string work = TempDir(),
            dense = Path.Combine(work, "dense");
        string spec = "hf:" + Fixture("hf/opt");
        Run("export", "--checkpoint", Fixture("hf/opt"), "--with-past", "--out", dense);
        Run(
            "analyze",
            "--model",
            Path.Combine(dense, "model.onnx"),
            "--corpus",
            Fixture("hf/opt/heldout.ids.txt"),
            "--tokenizer",
            "ids",
            "--seq-len",
            "32",
            "--out",
            Path.Combine(work, "an")
        );
        string stats = Path.Combine(work, "an", "stats.json");
        Run(
            "sparse-decode",
            "--model",
            Path.Combine(dense, "model.onnx"),
            "--stats",
            stats,
            "--break-even",
            "0.5",
            "--out",
            Path.Combine(work, "sparse")
        );
        Run(
            "prune",
            "--model",
            Path.Combine(dense, "model.onnx"),
            "--stats",
            stats,
            "--dead-only",
            "--eval-corpus",
            Fixture("hf/heldout.txt"),
            "--allow-stats-corpus",
            "--tokenizer",
            spec,
            "--seq-len",
            "32",
            "--runs",
            "1",
            "--out",
            Path.Combine(work, "pruned")
        );
        string prompt = "The committee said that";
        var (reference, _) = Greedy(dense, spec, prompt, 24);
        foreach (string variant in new[] { "sparse", "pruned" })
        {
            Assert.That(File.Exists(Path.Combine(work, variant, "genai_config.json")), Is.True, variant);
            var (genAi, ours) = Greedy(Path.Combine(work, variant), spec, prompt, 24);
            Assert.That(genAi, Is.EqualTo(ours), variant);
            Assert.That(genAi, Is.EqualTo(reference), $"{variant}: exact rewrites keep the greedy text");
        }
    }
}
