using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Training;
using Sparsity.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Sparsity.Tests;

[TestFixture]
public class ExportTests
{
    static readonly ModelConfig Small = new(Layers: 3, DModel: 32, Heads: 4, DFf: 96, SeqLen: 24, VocabSize: 70);

    static long[] RandomIds(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (long)random.Next(70)).ToArray();
    }

    static string Write(ReluTransformer model, ExportVariant variant, string name)
    {
        string path = Path.Combine(TestCorpus.TempDir(), name);
        OnnxGraph.Save(ModelExporter.Export(model, variant), path);
        return path;
    }

    static float MaxAbsDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    [TestCase(1, 1)]
    [TestCase(2, 7)]
    [TestCase(3, 24)]
    public void LogitsAndHiddenMatchTorchSharp(int batch, int seq)
    {
        torch.random.manual_seed(21);
        using var model = new ReluTransformer(Small with { TiedEmbeddings = seq != 7 });
        model.eval();
        string path = Write(model, ExportVariant.Dense, "dense.onnx");
        long[] ids = RandomIds(batch * seq, seq);
        var ort = OrtRunner.Run(path, ("input_ids", ids, new long[] { batch, seq }));

        using var input = tensor(ids, new long[] { batch, seq });
        var (logits, hidden) = model.Forward(input);
        float logitDiff = MaxAbsDiff(ort["logits"].Floats!, logits.data<float>().ToArray());
        TestContext.Out.WriteLine($"[{batch}, {seq}] max |logits ORT − TorchSharp| = {logitDiff:E2}");
        Assert.That(ort["logits"].Shape, Is.EqualTo(new long[] { batch, seq, 70 }));
        Assert.That(logitDiff, Is.LessThanOrEqualTo(1e-4f));
        for (int l = 0; l < Small.Layers; l++)
        {
            var h = ort[ModelExporter.HiddenOutput(l)];
            Assert.That(h.Shape, Is.EqualTo(new long[] { batch, seq, 96 }));
            Assert.That(
                MaxAbsDiff(h.Floats!, hidden[l].data<float>().ToArray()),
                Is.LessThanOrEqualTo(1e-4f),
                $"layer {l}"
            );
        }
    }

    [TestCase(1, 1)]
    [TestCase(3, 24)]
    public void FusedAttentionGivesTheLogitsAndActivationsOfTheUnfusedGraph(int batch, int seq)
    {
        torch.random.manual_seed(22);
        using var model = new ReluTransformer(Small);
        model.eval();
        string unfused = Write(model, ExportVariant.Dense, "dense.onnx"),
            fused = Path.Combine(TestCorpus.TempDir(), "fused.onnx");
        var fusedProto = ModelExporter.Export(model, ExportVariant.Dense, fusedAttention: true);
        OnnxGraph.Save(fusedProto, fused);
        Assert.That(
            fusedProto.Graph.Node.Count(n => n.OpType == "MultiHeadAttention" && n.Domain == "com.microsoft"),
            Is.EqualTo(Small.Layers)
        );
        Assert.That(
            fusedProto.Graph.Node.Any(n => n.OpType is "Softmax" or "Trilu"),
            Is.False,
            "the unfused attention and its causal mask are gone"
        );
        long[] ids = RandomIds(batch * seq, seq);
        var a = OrtRunner.Run(unfused, ("input_ids", ids, new long[] { batch, seq }));
        var b = OrtRunner.Run(fused, ("input_ids", ids, new long[] { batch, seq }));
        Assert.That(MaxAbsDiff(a["logits"].Floats!, b["logits"].Floats!), Is.LessThanOrEqualTo(1e-4f));
        for (int l = 0; l < Small.Layers; l++)
            Assert.That(
                MaxAbsDiff(a[ModelExporter.HiddenOutput(l)].Floats!, b[ModelExporter.HiddenOutput(l)].Floats!),
                Is.LessThanOrEqualTo(1e-4f),
                $"layer {l}"
            );
        // The rest of the tool takes it as any graph: its MLPs are found, and a Top-k rewrite of it runs.
        var sites = MlpSites.Find(fusedProto);
        Assert.That(sites.Select(site => site.DFf), Is.EqualTo(Enumerable.Repeat(96, Small.Layers)));
        Assert.That(
            Sparsity.Pipeline.Runtime.GraphCheck.Verify(
                Surgery.InsertTopK(fusedProto, sites, [96]),
                "Top-k graph",
                Sparsity.Pipeline.Runtime.ProbeBatch.For(fusedProto),
                reference: fusedProto
            ),
            Is.LessThanOrEqualTo(1e-4f)
        );
    }

    [Test]
    public void TopKAndUnitMasksAreExportedAsTrained()
    {
        torch.random.manual_seed(22);
        using var model = new ReluTransformer(Small with { TopK = 10 });
        model.Mlps[1].SetUnitMask(Enumerable.Range(0, 96).Select(i => i % 4 != 0).ToArray());
        string path = Path.Combine(TestCorpus.TempDir(), "topk.onnx");
        OnnxGraph.Save(ModelExporter.Export(model, ExportVariant.Dense), path);
        long[] ids = RandomIds(2 * 12, 5);
        var ort = OrtRunner.Run(path, ("input_ids", ids, new long[] { 2, 12 }));
        using var input = tensor(ids, new long[] { 2, 12 });
        var (logits, hidden) = model.Forward(input);
        Assert.That(MaxAbsDiff(ort["logits"].Floats!, logits.data<float>().ToArray()), Is.LessThanOrEqualTo(1e-4f));
        for (int l = 0; l < 3; l++)
        {
            float[] h = ort[ModelExporter.HiddenOutput(l)].Floats!;
            for (int token = 0; token < 24; token++)
                Assert.That(h.Skip(token * 96).Take(96).Count(v => v > 0), Is.LessThanOrEqualTo(10));
        }
        float[] masked = ort[ModelExporter.HiddenOutput(1)].Floats!;
        Assert.That(
            Enumerable.Range(0, masked.Length).Where(i => i % 96 % 4 == 0).Select(i => masked[i]),
            Is.All.EqualTo(0f)
        );
    }

    [Test]
    public void StatsVariantEqualsDenseStatisticsWithPadding()
    {
        torch.random.manual_seed(23);
        using var model = new ReluTransformer(Small);
        string dense = Write(model, ExportVariant.Dense, "dense.onnx");
        string stats = Write(model, ExportVariant.Stats, "stats.onnx");
        const int B = 3,
            T = 10;
        long[] ids = RandomIds(B * T, 9);
        long[] mask = new long[B * T];
        int[] lengths = { 10, 4, 7 }; // right-padded sequences
        for (int b = 0; b < B; b++)
        for (int t = 0; t < lengths[b]; t++)
            mask[b * T + t] = 1;

        var denseOut = OrtRunner.Run(dense, ("input_ids", ids, new long[] { B, T }));
        var statsOut = OrtRunner.Run(
            stats,
            ("input_ids", ids, new long[] { B, T }),
            ("attention_mask", mask, new long[] { B, T })
        );
        Assert.That(
            statsOut.Keys,
            Has.None.StartsWith("mlp_hidden").And.None.EqualTo("logits"),
            "only counts leave the runtime"
        );

        for (int l = 0; l < Small.Layers; l++)
        {
            var expected = new LayerUnitUse(96);
            expected.AddDense(
                denseOut[ModelExporter.HiddenOutput(l)].Floats!,
                B,
                T,
                mask.Select(m => m == 1).ToArray()
            );

            long[] perToken = statsOut[StatsReduction.ActiveUnitsOutput(l)].Longs!;
            long[] perSequence = statsOut[StatsReduction.UnitsPerSequenceOutput(l)].Longs!;
            long[] perUnit = statsOut[StatsReduction.UnitTokensOutput(l)].Longs!;
            Assert.That(
                Enumerable.Range(0, B * T).Where(i => mask[i] == 0).Select(i => perToken[i]),
                Is.All.EqualTo(0L),
                "padding counts nothing"
            );
            var reduced = new LayerUnitUse(96);
            reduced.AddBatch(
                Enumerable.Range(0, B * T).Where(i => mask[i] == 1).Select(i => (int)perToken[i]).ToArray(),
                perSequence.Select(n => (int)n).ToArray(),
                perUnit
            );

            Assert.That(
                reduced.UnitsPerTokenHistogram.ToArray(),
                Is.EqualTo(expected.UnitsPerTokenHistogram.ToArray()),
                $"layer {l} per token"
            );
            Assert.That(
                reduced.UnitsPerSequenceHistogram.ToArray(),
                Is.EqualTo(expected.UnitsPerSequenceHistogram.ToArray()),
                $"layer {l} per sequence"
            );
            Assert.That(
                reduced.TokensPerUnit.ToArray(),
                Is.EqualTo(expected.TokensPerUnit.ToArray()),
                $"layer {l} per unit"
            );
            Assert.That(perSequence, Has.Length.EqualTo(B), "one count per window, not per unit");
        }
    }

    [Test]
    public void ExportedModelsCarryProducerAndOpset()
    {
        using var model = new ReluTransformer(Small);
        var proto = ModelExporter.Export(model, ExportVariant.Dense);
        Assert.That(proto.ProducerName, Is.EqualTo("relu-sparsity"));
        Assert.That(proto.ProducerVersion, Is.Not.Empty);
        Assert.That(proto.OpsetImport.Single().Version, Is.GreaterThanOrEqualTo(17));
        Assert.That(proto.Graph.Input.Single().Name, Is.EqualTo("input_ids"));
        Assert.That(
            proto.Graph.Output.Select(o => o.Name),
            Is.EqualTo(new[] { "logits", "mlp_hidden.0", "mlp_hidden.1", "mlp_hidden.2" })
        );
    }
}
