using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using Sparsity.Export;

namespace Sparsity.Pipeline.Runtime;

/// <summary>ONNX Runtime sessions on in-memory graphs, of any size.</summary>
public static class OrtSession
{
    /// <summary>
    /// A session on <paramref name="model"/>: from its bytes when they fit a protobuf message, otherwise from a
    /// temporary copy saved with external data (deleted once loaded), so models over 2 GB run too.
    /// </summary>
    public static InferenceSession Open(
        ModelProto model,
        SessionOptions options,
        long inlineLimit = ExternalData.InlineLimit
    )
    {
        if (model.Graph.Initializer.Sum(t => (long)t.RawData.Length) <= inlineLimit)
            return new InferenceSession(model.ToByteArray(), options);
        string dir = Path.Combine(Path.GetTempPath(), "relu-sparsity-" + Guid.NewGuid().ToString("N"));
        try
        {
            string path = Path.Combine(dir, "model.onnx");
            Directory.CreateDirectory(dir);
            OnnxGraph.Save(model, path, inlineLimit);
            return new InferenceSession(path, options);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
