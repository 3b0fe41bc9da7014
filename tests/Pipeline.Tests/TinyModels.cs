using Sparsity.Export;
using Sparsity.Training;
using Sparsity.Training.Model;
using TorchSharp;

namespace Sparsity.Tests;

/// <summary>Small seeded models of our own, exported dense for tests that run a real graph.</summary>
public static class TinyModels
{
    /// <summary>A <see cref="ReluTransformer"/> of <paramref name="config"/> seeded with <paramref name="seed"/>,
    /// exported dense into a fresh folder; returns the path.</summary>
    public static string DenseExport(ModelConfig config, int seed)
    {
        torch.random.manual_seed(seed);
        var model = new ReluTransformer(config);
        model.eval();
        string path = Path.Combine(TestCorpus.TempDir(), "dense.onnx");
        OnnxGraph.Save(ModelExporter.Export(model, ExportVariant.Dense), path);
        return path;
    }
}
