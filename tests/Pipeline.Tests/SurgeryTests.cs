using System.Text.Json;
using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline;
using Sparsity.Training;
using Sparsity.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Sparsity.Tests;

/// <summary>Reference statistics the fixture generator computed with PyTorch forward hooks.</summary>
public sealed record FixtureLayer(int DFf, int[] UnitsPerToken, int[] UnitsPerSequence, long[] TokensPerUnit);

public sealed record Fixture(
    string Exporter,
    int Batch,
    int Seq,
    int Vocab,
    long[] InputIds,
    float[] Logits,
    FixtureLayer[] Layers
)
{
    public static Fixture Load(string name) =>
        JsonSerializer.Deserialize<Fixture>(File.ReadAllText(PathOf(name + ".json")), ProjectJson.Options)!;

    public static string PathOf(string file) =>
        Path.Combine(TestContext.CurrentContext.TestDirectory, "fixtures", file);
}

[TestFixture]
public class SurgeryTests
{
    static float MaxAbsDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    static (string Path, IReadOnlyList<MlpSite> Sites) Instrumented(string name)
    {
        var model = OnnxGraph.Load(Fixture.PathOf(name + ".onnx"));
        var sites = MlpSites.Find(model);
        string path = Path.Combine(TestCorpus.TempDir(), name + ".instrumented.onnx");
        OnnxGraph.Save(Surgery.Instrument(model, sites), path);
        return (path, sites);
    }

    [TestCase("opt_gemm", "Gemm", 1, "tokens_dff", 2, 128)]
    [TestCase("gpt_matmul", "MatMul", 0, "batch_seq_dff", 3, 96)]
    public void FindsTheMlpsOfTorchOnnxGraphs(string name, string op, int transB, string layout, int layers, int dFf)
    {
        var sites = MlpSites.Find(OnnxGraph.Load(Fixture.PathOf(name + ".onnx")));
        Assert.That(sites, Has.Count.EqualTo(layers));
        Assert.That(sites.Select(s => s.Layer), Is.EqualTo(Enumerable.Range(0, layers)));
        foreach (var s in sites)
        {
            Assert.That((s.Up.Op, s.Down.Op), Is.EqualTo((op, op)));
            Assert.That((s.Up.TransB, s.Down.TransB), Is.EqualTo((transB, transB)));
            Assert.That(s.Up.Bias, Is.Not.Null);
            Assert.That(s.Down.Bias, Is.Not.Null);
            Assert.That(s.DFf, Is.EqualTo(dFf));
            Assert.That(s.Layout, Is.EqualTo(layout));
        }
    }

    [TestCase("opt_gemm")]
    [TestCase("gpt_matmul")]
    public void InstrumentedActivationsGiveTheHookStatistics(string name)
    {
        var fixture = Fixture.Load(name);
        var (path, sites) = Instrumented(name);
        var ort = OrtRunner.Run(path, ("input_ids", fixture.InputIds, new long[] { fixture.Batch, fixture.Seq }));
        Assert.That(
            MaxAbsDiff(ort["logits"].Floats!, fixture.Logits),
            Is.LessThanOrEqualTo(1e-4f),
            "logits match PyTorch"
        );

        for (int l = 0; l < sites.Count; l++)
        {
            var reference = fixture.Layers[l];
            var use = new LayerUnitUse(sites[l].DFf);
            use.AddDense(ort[sites[l].Output].Floats!, fixture.Batch, fixture.Seq, default); // flattened layouts viewed as [B, T, d_ff]
            var expected = new LayerUnitUse(reference.DFf);
            expected.AddBatch(reference.UnitsPerToken, reference.UnitsPerSequence, reference.TokensPerUnit);
            Assert.That(use.TokensPerUnit.ToArray(), Is.EqualTo(reference.TokensPerUnit), $"layer {l} per unit");
            Assert.That(
                use.UnitsPerTokenHistogram.ToArray(),
                Is.EqualTo(expected.UnitsPerTokenHistogram.ToArray()),
                $"layer {l} per token"
            );
            Assert.That(
                use.UnitsPerSequenceHistogram.ToArray(),
                Is.EqualTo(expected.UnitsPerSequenceHistogram.ToArray()),
                $"layer {l} per sequence"
            );
        }
    }

    [Test]
    public void PruningLayersThatShareABiasGivesEachLayerItsOwnCopy()
    {
        // torch.onnx 2.11 (TorchScript exporter, bench/gpu/opt125m.py export-tiny) found every layer's zero fc1 bias
        // identical: layer 0's Gemm reads the initializer, the others read it through Identity nodes. Each layer keeps
        // other units, so each needs its own sliced bias (before, layers 1-5 kept the full bias and ONNX Runtime
        // refused the pruned graph at run time: "Gemm: Invalid bias shape for broadcast").
        var model = OnnxGraph.Load(Fixture.PathOf("opt_tiny_torch211.onnx"));
        var sites = MlpSites.Find(model);
        Assert.That(sites, Has.Count.EqualTo(6));
        var index = new GraphIndex(model.Graph);
        Assert.That(index.Initializers.ContainsKey(sites[1].Up.Bias!), Is.False, "read through Identity");
        Assert.That(index.InitializerThroughIdentity(sites[1].Up.Bias!), Is.EqualTo(sites[0].Up.Bias));
        var mask = new UnitMask(
            "test",
            "every third unit, shifted by layer",
            sites
                .Select(s => new LayerKeep(
                    s.Layer,
                    s.DFf,
                    Enumerable.Range(0, s.DFf).Where(u => (u + s.Layer) % 3 != 0).ToArray()
                ))
                .ToList()
        );
        var (pruned, _, _) = Surgery.Prune(model, sites, mask);
        string path = Path.Combine(TestCorpus.TempDir(), "pruned.onnx");
        OnnxGraph.Save(pruned, path);

        // Reference: the dense graph with the removed units' down-projection inputs zeroed, which takes them out
        // exactly.
        var reference = model.Clone();
        foreach (var site in sites)
        {
            var weight = reference.Graph.Initializer.Single(t => t.Name == site.Down.Weight);
            float[] w = Surgery.ReadFloats(weight);
            long outer = weight.Dims[0],
                inner = weight.Dims[1];
            foreach (int u in Enumerable.Range(0, site.DFf).Where(u => (u + site.Layer) % 3 == 0))
                for (long o = 0; o < (site.Down.TransB == 1 ? outer : inner); o++)
                    w[site.Down.TransB == 1 ? o * inner + u : u * inner + o] = 0;
            weight.FloatData.Clear();
            weight.RawData = Google.Protobuf.ByteString.CopyFrom(
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(w.AsSpan())
            );
        }
        string referencePath = Path.Combine(TestCorpus.TempDir(), "reference.onnx");
        OnnxGraph.Save(reference, referencePath);
        var ids = Enumerable.Range(0, 2 * 12).Select(i => (long)(4 + i * 37 % 500)).ToArray();
        (string, long[], long[])[] inputs =
        [
            ("input_ids", ids, [2, 12]),
            ("attention_mask", Enumerable.Repeat(1L, 24).ToArray(), [2, 12]),
        ];
        float[] expected = OrtRunner.Run(referencePath, inputs)["logits"].Floats!,
            actual = OrtRunner.Run(path, inputs)["logits"].Floats!;
        Assert.That(MaxAbsDiff(actual, expected), Is.LessThanOrEqualTo(1e-4f));
        Assert.That(
            MaxAbsDiff(OrtRunner.Run(Fixture.PathOf("opt_tiny_torch211.onnx"), inputs)["logits"].Floats!, expected),
            Is.GreaterThan(1e-3f),
            "the removed units mattered"
        );
        Assert.That(MlpSites.Find(pruned).Select(s => s.DFf), Is.EqualTo(mask.Layers.Select(l => l.Kept.Length)));
    }

    [TestCase("opt_gemm")]
    [TestCase("gpt_matmul")]
    public void PruningDeadUnitsLeavesLogitsUnchanged(string name)
    {
        var fixture = Fixture.Load(name);
        var model = OnnxGraph.Load(Fixture.PathOf(name + ".onnx"));
        var sites = MlpSites.Find(model);
        var mask = new UnitMask(
            "dead units",
            name + " fixture ids",
            fixture
                .Layers.Select(
                    (l, i) =>
                        new LayerKeep(i, l.DFf, Enumerable.Range(0, l.DFf).Where(u => l.TokensPerUnit[u] > 0).ToArray())
                )
                .ToList()
        );
        var (pruned, prunedSites, report) = Surgery.Prune(model, sites, mask);
        string path = Path.Combine(TestCorpus.TempDir(), "pruned.onnx");
        OnnxGraph.Save(pruned, path);

        var ort = OrtRunner.Run(path, ("input_ids", fixture.InputIds, new long[] { fixture.Batch, fixture.Seq }));
        Assert.That(MaxAbsDiff(ort["logits"].Floats!, fixture.Logits), Is.LessThanOrEqualTo(1e-4f));
        int removed = fixture.Layers.Sum(l => l.TokensPerUnit.Count(c => c == 0));
        int dModel = (int)model.Graph.Initializer.First(i => i.Name == sites[0].Down.Bias).Dims[0];
        Assert.That(
            report.ParametersBefore - report.ParametersAfter,
            Is.EqualTo((long)removed * (2 * dModel + 1)),
            "d inputs + bias per up unit, d outputs per down unit"
        );
        Assert.That(
            prunedSites.Select(s => s.DFf),
            Is.EqualTo(fixture.Layers.Select(l => l.TokensPerUnit.Count(c => c > 0)))
        );
        Assert.That(
            MlpSites.Find(pruned).Select(s => s.DFf),
            Is.EqualTo(prunedSites.Select(s => s.DFf)),
            "the pruned graph is still recognised"
        );
    }

    [TestCase("opt_gemm")]
    [TestCase("gpt_matmul")]
    public void TopKOfDFfChangesNothingAndSmallKBoundsActiveUnits(string name)
    {
        var fixture = Fixture.Load(name);
        var model = OnnxGraph.Load(Fixture.PathOf(name + ".onnx"));
        var sites = MlpSites.Find(model);
        var ids = ("input_ids", fixture.InputIds, new long[] { fixture.Batch, fixture.Seq });

        string full = Path.Combine(TestCorpus.TempDir(), "full.onnx");
        OnnxGraph.Save(Surgery.InsertTopK(model, sites, [sites[0].DFf]), full);
        Assert.That(OrtRunner.Run(full, ids)["logits"].Floats!, Is.EqualTo(fixture.Logits).Within(1e-4f));

        var topK = Surgery.InsertTopK(model, sites, [5]);
        var topKSites = MlpSites.Find(topK);
        Assert.That(
            topKSites.Select(s => s.Output),
            Is.EqualTo(sites.Select(s => s.Output)),
            "the measured tensor keeps its name, now after Top-k"
        );
        string path = Path.Combine(TestCorpus.TempDir(), "top5.onnx");
        OnnxGraph.Save(Surgery.Instrument(topK, topKSites), path);
        var ort = OrtRunner.Run(path, ids);
        foreach (var s in topKSites)
        {
            var use = new LayerUnitUse(s.DFf);
            use.AddDense(ort[s.Output].Floats!, fixture.Batch, fixture.Seq, default);
            Assert.That(use.PerTokenUnitUse.Max, Is.LessThanOrEqualTo(5), $"layer {s.Layer}");
        }
        Assert.That(
            MaxAbsDiff(ort["logits"].Floats!, fixture.Logits),
            Is.GreaterThan(1e-3f),
            "Top-5 changes the model"
        );
    }

    [Test]
    public void PruningMaskedUnitsOfOurExportLeavesLogitsUnchanged()
    {
        torch.random.manual_seed(31);
        var config = new ModelConfig(Layers: 2, DModel: 32, Heads: 4, DFf: 64, SeqLen: 16, VocabSize: 40, TopK: 20);
        using var model = new ReluTransformer(config);
        var keep0 = Enumerable.Range(0, 64).Select(i => i % 3 != 0).ToArray();
        model.Mlps[0].SetUnitMask(keep0);
        var proto = ModelExporter.Export(model, ExportVariant.Dense);
        var sites = MlpSites.Find(proto);
        Assert.That(sites.Select(s => s.Output), Is.EqualTo(new[] { "mlp_hidden.0", "mlp_hidden.1" }));

        // Masked units are dead on every input; layer 1 keeps only 10 units, below k = 20.
        var mask = new UnitMask(
            "test",
            "unit_mask",
            [
                new LayerKeep(0, 64, Enumerable.Range(0, 64).Where(i => keep0[i]).ToArray()),
                new LayerKeep(1, 64, Enumerable.Range(0, 10).ToArray()),
            ]
        );
        var (pruned, _, _) = Surgery.Prune(proto, sites, mask);
        string original = Path.Combine(TestCorpus.TempDir(), "model.onnx"),
            prunedPath = Path.Combine(TestCorpus.TempDir(), "pruned.onnx");
        OnnxGraph.Save(proto, original);
        OnnxGraph.Save(pruned, prunedPath);
        long[] ids = Enumerable.Range(0, 2 * 16).Select(i => (long)(i * 7 % 40)).ToArray();
        var before = OrtRunner.Run(original, ("input_ids", ids, new long[] { 2, 16 }));
        var after = OrtRunner.Run(prunedPath, ("input_ids", ids, new long[] { 2, 16 }));
        Assert.That(after["mlp_hidden.0"].Shape, Is.EqualTo(new long[] { 2, 16, 42 }));
        Assert.That(
            after["mlp_hidden.1"].Shape,
            Is.EqualTo(new long[] { 2, 16, 10 }),
            "k clamped to the 10 units left"
        );
        // Layer 0 lost only dead units: its surviving activations are the kept columns of the original.
        float[] h0 = before["mlp_hidden.0"].Floats!,
            p0 = after["mlp_hidden.0"].Floats!;
        int[] kept = mask.Layers[0].Kept;
        for (int t = 0; t < 32; t++)
        for (int j = 0; j < kept.Length; j++)
            Assert.That(p0[t * 42 + j], Is.EqualTo(h0[t * 64 + kept[j]]).Within(1e-5f));
    }

    [Test]
    public void UnfoldedTransposedWeightsAreFoundAndPruned()
    {
        // Exporters without constant folding keep nn.Linear's weight [out, in] and a Transpose node before MatMul.
        torch.random.manual_seed(32);
        var config = new ModelConfig(Layers: 2, DModel: 32, Heads: 4, DFf: 64, SeqLen: 16, VocabSize: 40);
        using var model = new ReluTransformer(config);
        var keep = Enumerable.Range(0, 64).Select(i => i % 5 != 0).ToArray();
        model.Mlps[1].SetUnitMask(keep);
        var proto = ModelExporter.Export(model, ExportVariant.Dense);
        var original = Path.Combine(TestCorpus.TempDir(), "folded.onnx");
        OnnxGraph.Save(proto, original);
        foreach (string name in new[] { "h.1.mlp.up.weight", "h.1.mlp.down.weight" })
        {
            var w = proto.Graph.Initializer.Single(t => t.Name == name);
            int rows = (int)w.Dims[0],
                cols = (int)w.Dims[1];
            float[] values = Surgery.ReadFloats(w),
                transposed = new float[values.Length];
            for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                transposed[c * rows + r] = values[r * cols + c];
            proto.Graph.Initializer.Remove(w);
            proto.Graph.Initializer.Add(OnnxGraph.FloatTensor(name + ".stored", [cols, rows], transposed));
            proto.Graph.Node.Insert(
                0,
                OnnxGraph.Node(
                    "Transpose",
                    name + "/Transpose",
                    [name + ".stored"],
                    [name],
                    OnnxGraph.Ints("perm", 1, 0)
                )
            );
        }
        var sites = MlpSites.Find(proto);
        Assert.That(
            (sites[1].Up.Weight, sites[1].Up.TransB, sites[1].Down.Weight, sites[1].Down.TransB),
            Is.EqualTo(("h.1.mlp.up.weight.stored", 1, "h.1.mlp.down.weight.stored", 1))
        );
        Assert.That(sites[1].DFf, Is.EqualTo(64));

        var mask = new UnitMask(
            "masked units",
            "unit_mask",
            [new LayerKeep(1, 64, Enumerable.Range(0, 64).Where(i => keep[i]).ToArray())]
        );
        var (pruned, _, _) = Surgery.Prune(proto, sites, mask);
        string unfolded = Path.Combine(TestCorpus.TempDir(), "unfolded.onnx"),
            prunedPath = Path.Combine(TestCorpus.TempDir(), "pruned.onnx");
        OnnxGraph.Save(proto, unfolded);
        OnnxGraph.Save(pruned, prunedPath);
        long[] ids = Enumerable.Range(0, 16).Select(i => (long)(i * 3 % 40)).ToArray();
        float[] Logits(string path) => OrtRunner.Run(path, ("input_ids", ids, new long[] { 1, 16 }))["logits"].Floats!;
        Assert.That(Logits(unfolded), Is.EqualTo(Logits(original)).Within(1e-5f));
        Assert.That(
            Logits(prunedPath),
            Is.EqualTo(Logits(original)).Within(1e-4f),
            "removing masked (dead) units through the transposed weights"
        );
        Assert.That(
            OrtRunner.Run(prunedPath, ("input_ids", ids, new long[] { 1, 16 }))["mlp_hidden.1"].Shape,
            Is.EqualTo(new long[] { 1, 16, 51 })
        );
    }

    [Test]
    public void BadInputsAreClearErrorsAndWriteNothing()
    {
        var model = OnnxGraph.Load(Fixture.PathOf("opt_gemm.onnx"));
        var sites = MlpSites.Find(model);
        Assert.That(
            Assert.Throws<UserInputException>(() => Surgery.InsertTopK(model, sites, [0]))!.Message,
            Does.Contain("outside 1..128")
        );
        Assert.That(
            Assert.Throws<UserInputException>(() => Surgery.InsertTopK(model, sites, [129]))!.Message,
            Does.Contain("outside 1..128")
        );
        Assert.That(
            Assert.Throws<UserInputException>(() => Surgery.InsertTopK(model, sites, [4, 4, 4]))!.Message,
            Does.Contain("one per layer (2)")
        );
        Assert.That(
            Assert
                .Throws<UserInputException>(() =>
                    Surgery.Prune(model, sites, new UnitMask("r", "s", [new LayerKeep(0, 128, [0, 128])]))
                )!
                .Message,
            Does.Contain("keeps unit 128 of layer 0")
        );
        Assert.That(
            Assert
                .Throws<UserInputException>(() =>
                    Surgery.Prune(model, sites, new UnitMask("r", "s", [new LayerKeep(1, 128, [])]))
                )!
                .Message,
            Does.Contain("removes every unit of layer 1")
        );
        Assert.That(
            Assert
                .Throws<UserInputException>(() =>
                    Surgery.Prune(model, sites, new UnitMask("r", "s", [new LayerKeep(5, 128, [1])]))
                )!
                .Message,
            Does.Contain("layers 0..1")
        );
        Assert.That(
            Assert
                .Throws<UserInputException>(() =>
                    Surgery.Prune(
                        model,
                        sites,
                        new UnitMask("r", "s", [new LayerKeep(0, 128, Enumerable.Range(0, 128).ToArray())])
                    )
                )!
                .Message,
            Does.Contain("unchanged model")
        );
        Assert.That(
            Assert.Throws<UserInputException>(() => MlpSites.Find(model, ["Gelu"]))!.Message,
            Does.StartWith("No MLP activation found")
        );
    }
}

[TestFixture]
public class ExportCommandTests
{
    [Test]
    public void NonOnnxInputIsOneLineAndNoOutput()
    {
        string dir = TestCorpus.TempDir();
        string bogus = Path.Combine(dir, "model.onnx");
        File.WriteAllText(bogus, "this is not a protobuf");
        string outPath = Path.Combine(dir, "out.onnx");
        foreach (
            var args in new[]
            {
                new[] { "instrument", "--model", bogus, "--out", outPath },
                ["topk", "--model", bogus, "--k", "4", "--out", outPath],
            }
        )
        {
            var (exit, _, error) = Cli.Run(args);
            Assert.That(exit, Is.EqualTo(2));
            Assert.That(
                error.Trim(),
                Is.EqualTo(
                    $"error: {bogus} is not an ONNX model (it does not parse as an ONNX ModelProto with a graph)."
                )
            );
        }
        Assert.That(Directory.GetFiles(dir), Is.EqualTo(new[] { bogus }));
    }

    [Test]
    public void InstrumentWritesModelAndSidecar()
    {
        string dir = TestCorpus.TempDir();
        string outPath = Path.Combine(dir, "gpt.onnx");
        var (exit, output, error) = Cli.Run(
            "instrument",
            "--model",
            Fixture.PathOf("gpt_matmul.onnx"),
            "--out",
            outPath
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("layer 2:"));
        var sidecar = JsonSerializer.Deserialize<MlpSidecar>(
            File.ReadAllText(Path.Combine(dir, "gpt.mlp.json")),
            ProjectJson.Options
        )!;
        Assert.That(sidecar.Layers.Select(l => l.DFf), Is.EqualTo(new[] { 96, 96, 96 }));
        Assert.That(
            OnnxGraph.Load(outPath).Graph.Output.Select(o => o.Name),
            Is.EqualTo(new[] { "logits" }.Concat(sidecar.Layers.Select(l => l.Output)))
        );
    }

    [Test]
    public void PruneCommandRefusesAMaskNamingMissingUnits()
    {
        string dir = TestCorpus.TempDir();
        string mask = Path.Combine(dir, "mask.json");
        File.WriteAllText(mask, new UnitMask("manual", "test", [new LayerKeep(0, 96, [1, 2, 300])]).ToJson());
        var (exit, _, error) = Cli.Run(
            "prune",
            "--model",
            Fixture.PathOf("gpt_matmul.onnx"),
            "--mask",
            mask,
            "--out",
            Path.Combine(dir, "p.onnx")
        );
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("keeps unit 300 of layer 0, which has units 0..95"));
        Assert.That(File.Exists(Path.Combine(dir, "p.onnx")), Is.False);
    }
}
