using Onnx;

namespace Sparsity.Export;

/// <summary>
/// The files one ONNX model is made of: the graph, its external data, its <see cref="MlpSidecar"/>. Commands that read
/// a model and write one check the two lists against each other (<see cref="OutputFile.Require"/>), so no output lands
/// on a file of the input, sidecar and weights included.
/// </summary>
public static class ModelFiles
{
    /// <summary>
    /// Refuses, before any work, writing a model to <paramref name="path"/> for <paramref name="command"/> over any
    /// file of the input models <paramref name="models"/> or of <paramref name="otherInputs"/>, or over files
    /// relu-sparsity did not write.
    /// </summary>
    public static void RequireWritable(
        string command,
        string path,
        IEnumerable<string> models,
        params string[] otherInputs
    ) => OutputFile.Require(command, Written(path), models.SelectMany(Read).Concat(otherInputs));

    /// <summary>Writes <paramref name="model"/> (external data beside it when large) and its sidecar, and records them
    /// as <paramref name="command"/>'s.</summary>
    public static void Save(string command, ModelProto model, string path, IReadOnlyList<MlpSite>? sites)
    {
        OnnxGraph.Save(model, path);
        if (sites != null)
            MlpSidecar.Write(path, sites);
        OutputFile.Record(command, Written(path));
    }

    /// <summary>Every file writing a model to <paramref name="path"/> may create or replace.</summary>
    public static IReadOnlyList<string> Written(string path) => [path, path + ".data", MlpSidecar.PathFor(path)];

    /// <summary>Every file of the model at <paramref name="path"/> that exists: the graph, the external data it names,
    /// its sidecar.</summary>
    public static IReadOnlyList<string> Read(string path)
    {
        var files = new List<string> { path, path + ".data", MlpSidecar.PathFor(path) };
        try
        {
            ModelProto proto;
            using (var stream = File.OpenRead(path))
                proto = ModelProto.Parser.ParseFrom(stream);
            string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
            files.AddRange(
                proto
                    .Graph?.Initializer.SelectMany(t => t.ExternalData)
                    .Where(e => e.Key == "location")
                    .Select(e => Path.Combine(folder, e.Value))
                    ?? []
            );
        }
        catch (Exception e)
            when (e is IOException or UnauthorizedAccessException or Google.Protobuf.InvalidProtocolBufferException) { } // loading it says what is wrong
        return files.Where(File.Exists).Distinct().ToList();
    }
}
