using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Streaming;
using Sparsity.Pipeline.Benchmarking;
using Sparsity.Training;
using Sparsity.Training.Data;
using Sparsity.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Sparsity.Tests;

[TestFixture]
public class BenchTests
{
    [Test]
    public void HiddenCountsMatchHandCountsAndSkipPadding()
    {
        // Batch of 2 sequences × 2 positions × 3 units; the second sequence's last position is padding.
        var hidden = tensor(new float[] { 1, 0, 2,   0, 0, 3,     0, 5, 0,   9, 9, 9 }, [2, 2, 3]);
        var real = tensor(new[] { true, true, true, false }, [2, 2]);
        var c = HiddenCounts.Of(hidden, real, 0f);
        Assert.That(c.UnitsPerToken, Is.EqualTo(new[] { 2, 1, 1 }));
        Assert.That(c.UnitsPerSequence, Is.EqualTo(new[] { 2, 1 }));         // {0, 2} and {1}
        Assert.That(c.TokensPerUnit, Is.EqualTo(new long[] { 1, 1, 2 }));
        var all = HiddenCounts.Of(hidden, null, 0.5f);
        Assert.That(all.UnitsPerToken, Is.EqualTo(new[] { 2, 1, 1, 3 }));
        Assert.That(all.TokensPerUnit, Is.EqualTo(new long[] { 2, 2, 3 }));
    }

    [Test]
    public void EveryContenderMeasuresTheSameCountsAsAnalyze()
    {
        torch.random.manual_seed(7);
        var config = new ModelConfig(Layers: 2, DModel: 32, Heads: 4, DFf: 48, SeqLen: 16, VocabSize: 256);
        string dir = TestCorpus.TempDir();
        var tokenizer = TextTokenizer.FromSpec("bytes");
        using (var model = new ReluTransformer(config))
        {
            Checkpoint.Save(dir, model, tokenizer, new TrainOptions(), 0);
            OnnxGraph.Save(ModelExporter.Export(model, ExportVariant.Dense), Path.Combine(dir, "model.onnx"));
        }
        string corpus = Path.Combine(dir, "corpus.txt");
        File.WriteAllLines(corpus, TestCorpus.Documents(9, seed: 3).Select((d, i) => d[..(7 + i * 11 % d.Length)]));
        var data = TokenBatches.From(corpus, tokenizer, 16, 3, 256);

        var analyzed = Analyzer.Run(new AnalysisRequest(Path.Combine(dir, "model.onnx"), corpus, "bytes", 16, 3, null, 0, 1, 0f, "cpu", 1, Path.Combine(dir, "analysis"), ["Relu"]));
        var counts = SparsityCounts.Load(Path.Combine(dir, "analysis"));
        var direct = Contenders.DirectStatistics(Path.Combine(dir, "model.onnx"), data, 1);
        var torchSharp = Contenders.TorchSharpStatistics(dir, data, 1);
        Assert.That(data.Tokens, Is.EqualTo(analyzed.Tokens));
        for (int l = 0; l < config.Layers; l++)
        {
            var reference = counts.Layers[l].ToUse();
            AssertCounts.Equal(direct[l], reference); // same runtime, same graph: exact
            Assert.That(torchSharp[l].Tokens, Is.EqualTo(reference.Tokens));
            // TorchSharp and ONNX Runtime round differently, so a unit within float error of zero could flip; on this seed none does, and a wrong mask or layout would flip many.
            Assert.That(torchSharp[l].TokensPerUnit.ToArray(), Is.EqualTo(reference.TokensPerUnit.ToArray()));
            Assert.That(torchSharp[l].UnitsPerSequenceHistogram.ToArray(), Is.EqualTo(reference.UnitsPerSequenceHistogram.ToArray()));
        }
    }
}
