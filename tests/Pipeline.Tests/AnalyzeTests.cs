using System.Text.Json;
using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Streaming;
using Sparsity.Training;
using Sparsity.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Sparsity.Tests;

[TestFixture]
public class AnalyzeTests
{
    static readonly ModelConfig Byte = new(Layers: 2, DModel: 32, Heads: 4, DFf: 64, SeqLen: 16, VocabSize: 256);
    const int T = 12,
        B = 3;

    static (string Dense, string Stats, ReluTransformer Model) Export()
    {
        torch.random.manual_seed(41);
        var model = new ReluTransformer(Byte);
        model.eval();
        string dir = TestCorpus.TempDir();
        OnnxGraph.Save(ModelExporter.Export(model, ExportVariant.Dense), Path.Combine(dir, "dense.onnx"));
        OnnxGraph.Save(ModelExporter.Export(model, ExportVariant.Stats), Path.Combine(dir, "stats.onnx"));
        return (Path.Combine(dir, "dense.onnx"), Path.Combine(dir, "stats.onnx"), model);
    }

    static string Corpus()
    {
        // Documents of varied length: several windows, partial last windows, and a partial last batch.
        string path = Path.Combine(TestCorpus.TempDir(), "corpus.txt");
        File.WriteAllLines(path, TestCorpus.Documents(7, seed: 5).Select((d, i) => d[..(5 + i * 13 % d.Length)]));
        return path;
    }

    static AnalysisRequest Request(
        string model,
        string corpus,
        string outDir,
        string tokenizer = "bytes",
        int shard = 0,
        int shards = 1,
        int seqLen = T,
        int batch = B
    ) =>
        new()
        {
            Model = model,
            Corpus = corpus,
            Tokenizer = TokenizerSpec.Parse(tokenizer),
            SeqLen = seqLen,
            BatchSize = batch,
            ShardIndex = shard,
            ShardCount = shards,
            Threads = 2,
            OutDir = outDir,
        };

    [Test]
    public void StatisticsEqualAnIndependentTorchSharpComputation()
    {
        var (dense, _, model) = Export();
        string corpus = Corpus();
        var stats = Analyzer.Run(Request(dense, corpus, Path.Combine(TestCorpus.TempDir(), "out")));

        // Independent: same windows and batches, TorchSharp forward, host counting.
        var bytes = TextTokenizer.FromSpec("bytes");
        var windows = File.ReadLines(corpus)
            .SelectMany(d =>
            {
                var ids = bytes.Encode(d);
                return Enumerable.Range(0, (ids.Count + T - 1) / T).Select(w => ids.Skip(w * T).Take(T).ToArray());
            })
            .ToList();
        var expected = Enumerable.Range(0, Byte.Layers).Select(_ => new LayerUnitUse(Byte.DFf)).ToArray();
        foreach (var batch in windows.Chunk(B))
        {
            var ids = new long[B * T];
            var real = new bool[B * T];
            for (int w = 0; w < batch.Length; w++)
            for (int t = 0; t < batch[w].Length; t++)
            {
                ids[w * T + t] = batch[w][t];
                real[w * T + t] = true;
            }
            using var scope = NewDisposeScope();
            var hidden = model.Forward(tensor(ids, new long[] { B, T })).Hidden;
            for (int l = 0; l < Byte.Layers; l++)
                expected[l].AddDense(hidden[l].data<float>().ToArray(), B, T, real);
        }

        Assert.That(
            stats.Tokens,
            Is.EqualTo(File.ReadLines(corpus).Sum(d => (long)d.Length)),
            "every real token, no padding"
        );
        Assert.That(stats.Sequences, Is.EqualTo(windows.Count));
        Assert.That(stats.Batches, Is.EqualTo((windows.Count + B - 1) / B));
        // Two runtimes, two kernels: a pre-activation within float32 rounding of 0 may fall on either side. The margin:
        // each unit's count within 1 token, the layer's active pairs within 0.1 %, per-sequence and per-batch means
        // within 0.1 unit.
        for (int l = 0; l < Byte.Layers; l++)
        {
            long[] actual = stats.Layers[l].UnitActivationCounts,
                reference = expected[l].TokensPerUnit.ToArray();
            Assert.That(
                actual.Zip(reference, (a, b) => Math.Abs(a - b)).Max(),
                Is.LessThanOrEqualTo(1),
                $"layer {l}: per-unit counts"
            );
            Assert.That(
                actual.Sum(),
                Is.EqualTo(reference.Sum()).Within((long)(0.001 * reference.Sum()) + 1),
                $"layer {l}: active pairs"
            );
            Assert.That(stats.Layers[l].NonzeroFraction, Is.EqualTo(expected[l].NonzeroFraction).Within(1e-3));
            Assert.That(
                stats.Layers[l].PerSequenceUnitsMean,
                Is.EqualTo(expected[l].PerSequenceUnitUse.Mean).Within(0.1)
            );
            Assert.That(stats.Layers[l].PerBatchUnitsMean, Is.EqualTo(expected[l].PerBatchUnitUse.Mean).Within(0.1));
        }
    }

    [Test]
    public void MergedShardsEqualTheWholeRunAndTheStatsVariantEqualsDense()
    {
        var (dense, statsModel, _) = Export();
        string corpus = Corpus();
        string whole = Path.Combine(TestCorpus.TempDir(), "whole");
        Analyzer.Run(Request(dense, corpus, whole));
        var shards = Enumerable
            .Range(0, 3)
            .Select(i =>
            {
                string dir = Path.Combine(TestCorpus.TempDir(), $"shard{i}");
                Analyzer.Run(Request(dense, corpus, dir, shard: i, shards: 3));
                return SparsityCounts.Load(dir);
            })
            .ToList();
        var merged = SparsityCounts.Merge([shards[2], shards[0], shards[1]]);
        var reference = SparsityCounts.Load(whole);
        string Layers(SparsityCounts c) => JsonSerializer.Serialize(c.Layers, ProjectJson.Options);
        Assert.That(Layers(merged), Is.EqualTo(Layers(reference)));
        Assert.That(merged.Header.Shards, Is.EqualTo(new[] { "0/3", "1/3", "2/3" }));
        Assert.That(shards.Select(s => s.Layers[0].ToUse().Batches), Is.All.GreaterThan(0));

        string statsDir = Path.Combine(TestCorpus.TempDir(), "stats");
        Analyzer.Run(Request(statsModel, corpus, statsDir));
        Assert.That(
            Layers(SparsityCounts.Load(statsDir)),
            Is.EqualTo(Layers(reference)),
            "counts reduced in the runtime equal dense counting"
        );
    }

    [TestCase("opt_gemm")]
    [TestCase("gpt_matmul")]
    public void TorchOnnxFixturesGiveTheirHookStatistics(string name)
    {
        // Each fixture sequence becomes one document of ids; windows of exactly seq tokens, one batch.
        var fixture = Fixture.Load(name);
        string corpus = Path.Combine(TestCorpus.TempDir(), "ids.txt");
        File.WriteAllLines(corpus, fixture.InputIds.Chunk(fixture.Seq).Select(ids => string.Join(' ', ids)));
        string outDir = Path.Combine(TestCorpus.TempDir(), "out");
        var stats = Analyzer.Run(
            Request(
                Fixture.PathOf(name + ".onnx"),
                corpus,
                outDir,
                tokenizer: "ids",
                seqLen: fixture.Seq,
                batch: fixture.Batch
            )
        );

        Assert.That(stats.Layers, Has.Count.EqualTo(fixture.Layers.Length));
        for (int l = 0; l < fixture.Layers.Length; l++)
        {
            var reference = new LayerUnitUse(fixture.Layers[l].DFf);
            reference.AddBatch(
                fixture.Layers[l].UnitsPerToken,
                fixture.Layers[l].UnitsPerSequence,
                fixture.Layers[l].TokensPerUnit
            );
            Assert.That(
                stats.Layers[l].UnitActivationCounts,
                Is.EqualTo(fixture.Layers[l].TokensPerUnit),
                $"layer {l}"
            );
            Assert.That(stats.Layers[l].PerTokenUnits, Is.EqualTo(reference.PerTokenUnitUse), $"layer {l}");
            Assert.That(stats.Layers[l].PerSequenceUnits, Is.EqualTo(reference.PerSequenceUnitUse), $"layer {l}");
            Assert.That(stats.Layers[l].DeadUnits, Is.EqualTo(fixture.Layers[l].TokensPerUnit.Count(c => c == 0)));
        }
        // The instrumented copy analyze runs (analysis.onnx, written into the folder while it works) is not left
        // behind.
        Assert.That(
            Directory.GetFiles(outDir).Select(Path.GetFileName),
            Is.EquivalentTo(
                new[] { "counts.json", "stats.json", OutputFolder.ManifestName }.Concat(
                    Enumerable.Range(0, fixture.Layers.Length).Select(l => $"layer_{l}.csv")
                )
            )
        );
        Assert.That(
            File.ReadLines(Path.Combine(outDir, "layer_0.csv")).First(),
            Is.EqualTo("unit,active_tokens,frequency")
        );
    }

    [Test]
    public void BadInputsAreOneLineAndLeaveNoOutput()
    {
        var (dense, statsModel, _) = Export();
        string dir = TestCorpus.TempDir();
        string empty = Path.Combine(dir, "empty.txt");
        File.WriteAllText(empty, "\n\n");
        string ids = Path.Combine(dir, "ids.txt");
        File.WriteAllText(ids, "1 2 3 999\n");
        string notOnnx = Path.Combine(dir, "x.onnx");
        File.WriteAllText(notOnnx, "nope");
        string outDir = Path.Combine(dir, "out");
        string corpus = Corpus();

        var cases = new (AnalysisRequest Request, string Message)[]
        {
            (Request(dense, empty, outDir), "holds no documents"),
            (Request(dense, ids, outDir, tokenizer: "ids"), "Token id 999 is outside the model's vocabulary (0..255)"),
            (Request(dense, corpus, outDir, seqLen: 17), "--seq-len 17 exceeds what the model can take (16 positions)"),
            (Request(notOnnx, corpus, outDir), "is not an ONNX model"),
            (Request(dense, Path.Combine(dir, "missing.txt"), outDir), "does not exist"),
            (Request(statsModel, corpus, outDir) with { Threshold = 0.5f }, "counts activations above 0"),
            (Request(dense, corpus, outDir, shard: 3, shards: 3), "0 ≤ i < n"),
        };
        foreach (var (request, message) in cases.Where(c => c.Message.Length > 0)) // the CUDA case only where CUDA cannot start
        {
            var e = Assert.Throws<UserInputException>(() => Analyzer.Run(request), message);
            Assert.That(e!.Message, Does.Contain(message));
            Assert.That(e.Message, Does.Not.Contain("\n"));
            Assert.That(
                Directory.GetDirectories(Path.GetDirectoryName(outDir)!).Where(d => d.StartsWith(outDir)),
                Is.Empty,
                message
            );
        }
        // Devices are resolved before a request exists: the GPU build on a machine without CUDA names the first library
        // it cannot load; the CPU build says it has no CUDA provider.
        Assert.That(
            Assert.Throws<UserInputException>(() => Pipeline.Runtime.Devices.ResolveAll("tpu"))!.Message,
            Does.Contain("use cpu, cuda, cuda:N (N = GPU index) or auto")
        );
        if (Pipeline.Runtime.Devices.CudaProblem() is not null)
            Assert.That(
                Assert.Throws<UserInputException>(() => Pipeline.Runtime.Devices.ResolveAll("cuda:0"))!.Message,
                Does.Contain(
                    "--device cuda:0: "
                        + (
                            Microsoft
                                .ML.OnnxRuntime.OrtEnv.Instance()
                                .GetAvailableProviders()
                                .Contains("CUDAExecutionProvider")
                                ? "libcuda.so.1 (the NVIDIA driver) cannot be loaded"
                                : "no CUDA provider"
                        )
                )
            );
    }

    [Test]
    public void DeviceAutoSaysWhatItChose()
    {
        var (dense, _, _) = Export();
        string outDir = Path.Combine(TestCorpus.TempDir(), "auto");
        var (exit, output, error) = Cli.Run(
            "analyze",
            "--model",
            dense,
            "--corpus",
            Corpus(),
            "--tokenizer",
            "bytes",
            "--seq-len",
            $"{T}",
            "--batch-size",
            $"{B}",
            "--device",
            "auto",
            "--out",
            outDir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        string? problem = Pipeline.Runtime.Devices.CudaProblem();
        Assert.That(
            output,
            Does.StartWith(
                problem == null ? "--device auto: using cuda:0." : $"--device auto: using the CPU ({problem})."
            )
        );
    }

    [Test]
    public void AnalyzeCommandPrintsTheTableAndWritesStats()
    {
        var (dense, _, _) = Export();
        string outDir = Path.Combine(TestCorpus.TempDir(), "out");
        var (exit, output, error) = Cli.Run(
            "analyze",
            "--model",
            dense,
            "--corpus",
            Corpus(),
            "--tokenizer",
            "bytes",
            "--seq-len",
            "12",
            "--batch-size",
            "3",
            "--out",
            outDir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("units/batch"));
        var stats = JsonSerializer.Deserialize<SparsityStats>(
            File.ReadAllText(Path.Combine(outDir, "stats.json")),
            ProjectJson.Options
        )!;
        Assert.That(stats.Layers.Select(l => l.Name), Is.EqualTo(new[] { "mlp_hidden.0", "mlp_hidden.1" }));
        Assert.That(stats.Layers[0].UnitFrequencyHistogram.Sum(b => b.Units), Is.EqualTo(64));
    }

    [Test]
    public void ReportWritesMarkdownAndPngPlots()
    {
        var (dense, _, _) = Export();
        string outDir = Path.Combine(TestCorpus.TempDir(), "out");
        Analyzer.Run(Request(dense, Corpus(), outDir));
        // A checkpoint folder with a training log, from a few real training steps.
        string corpus = TestCorpus.WriteSplits();
        string checkpoint = Path.Combine(TestCorpus.TempDir(), "ck");
        Trainer.Run(
            new TrainRequest(
                Byte,
                new TrainOptions
                {
                    Steps = 6,
                    BatchSize = 2,
                    TrackEvery = 2,
                    EvalEvery = 3,
                    EvalBatches = 1,
                    Threads = 2,
                },
                TextTokenizer.FromSpec("bytes"),
                Path.Combine(corpus, "train.txt"),
                Path.Combine(corpus, "heldout.txt"),
                checkpoint
            )
        );

        string report = Sparsity.Pipeline.Report.SparsityReport.Write(outDir, checkpoint);
        string text = File.ReadAllText(report);
        string[] pngs =
        [
            "nonzero_fraction.png",
            "unit_use.png",
            "unit_frequency.png",
            "training_trajectory.png",
            "death_steps.png",
        ];
        foreach (string png in pngs)
        {
            Assert.That(text, Does.Contain($"]({png})"));
            byte[] bytes = File.ReadAllBytes(Path.Combine(outDir, png));
            Assert.That(
                bytes.Take(8),
                Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }),
                png + " is a PNG"
            );
            Assert.That(bytes.Length, Is.GreaterThan(10_000), png + " has content");
        }
        var stats = JsonSerializer.Deserialize<SparsityStats>(
            File.ReadAllText(Path.Combine(outDir, "stats.json")),
            ProjectJson.Options
        )!;
        Assert.That(text, Does.Contain($"| 0 | 64 | {stats.Layers[0].NonzeroFraction:0.0000} |"));
        Assert.That(
            Assert
                .Throws<UserInputException>(() =>
                    Sparsity.Pipeline.Report.SparsityReport.Write(TestCorpus.TempDir(), null)
                )!
                .Message,
            Does.Contain("run `analyze`")
        );
    }
}

[TestFixture]
public class ReadAheadTests
{
    [Test]
    public void ItemsArriveInOrderAndAFailureWhileReadingSurfacesInTheConsumer()
    {
        Assert.That(
            Sparsity.Pipeline.Streaming.ReadAhead.Of(Enumerable.Range(0, 100), capacity: 3).ToList(),
            Is.EqualTo(Enumerable.Range(0, 100))
        );
        static IEnumerable<int> Failing()
        {
            yield return 1;
            yield return 2;
            throw new UserInputException("bad corpus line 3");
        }
        var seen = new List<int>();
        var e = Assert.Throws<UserInputException>(() =>
        {
            foreach (int i in Sparsity.Pipeline.Streaming.ReadAhead.Of(Failing(), capacity: 1))
                seen.Add(i);
        })!;
        Assert.That(e.Message, Is.EqualTo("bad corpus line 3"));
        Assert.That(seen, Is.EqualTo(new[] { 1, 2 }));
    }

    [Test]
    public void StoppingEarlyStopsTheReader()
    {
        int produced = 0;
        IEnumerable<int> Endless()
        {
            while (true)
            {
                produced++;
                yield return produced;
            }
        }
        Assert.That(
            Sparsity.Pipeline.Streaming.ReadAhead.Of(Endless(), capacity: 2).Take(5).ToList(),
            Is.EqualTo(new[] { 1, 2, 3, 4, 5 })
        );
        int after = produced;
        Thread.Sleep(50);
        Assert.That(produced, Is.EqualTo(after), "the reader thread ended with the consumer");
        Assert.That(after, Is.LessThanOrEqualTo(5 + 2 + 1), "bounded by the capacity");
    }

    [Test]
    public void ABatchLargerThanTheCorpusRunsAsJustItsWindows()
    {
        // 100,000 windows of 32 would need gigabytes; the fixture holds 72 windows, run as one batch of exactly those.
        string dir = TestCorpus.TempDir();
        SparsityCounts Counts(int batch)
        {
            string outDir = Path.Combine(dir, $"b{batch}");
            Analyzer.Run(
                new AnalysisRequest
                {
                    Model = HookFixture.PathOf("opt.torchscript.onnx"),
                    Corpus = HookFixture.Corpus,
                    Tokenizer = TokenizerSpec.Bytes,
                    SeqLen = 32,
                    BatchSize = batch,
                    Threads = 2,
                    OutDir = outDir,
                }
            );
            return SparsityCounts.Load(outDir);
        }
        var huge = Counts(100_000);
        var exact = Counts(72);
        Assert.That(huge.Layers[0].UnitsPerSequenceHistogram.Sum(), Is.EqualTo(72), "the corpus's windows");
        Assert.That(huge.Header.BatchSize, Is.EqualTo(100_000), "the header keeps the batch asked for");
        Assert.That(
            JsonSerializer.Serialize(huge.Layers, ProjectJson.Options),
            Is.EqualTo(JsonSerializer.Serialize(exact.Layers, ProjectJson.Options))
        );
    }
}
