using System.Security.Cryptography;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Corpora;

namespace Sparsity.Pipeline.Streaming;

/// <summary>Fingerprints of what an analysis read, recorded in its header so that only shards of one run
/// merge.</summary>
public static class Provenance
{
    /// <summary>
    /// SHA-256 of the model file followed by each external data file it names (in name order), hex; of an
    /// encoder-decoder folder, its encoder's and decoder's files so
    /// (<see cref="Sparsity.Export.EncoderDecoder.FolderGraphs"/>).
    /// </summary>
    public static string ModelSha256(string modelPath)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (
            string file in Directory.Exists(modelPath)
                ? Sparsity.Export.EncoderDecoder.FolderGraphs(modelPath)
                : [modelPath]
        )
            AppendGraph(sha, file);
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    static void AppendGraph(IncrementalHash sha, string modelPath)
    {
        Append(sha, modelPath);
        ModelProto proto;
        using (var stream = File.OpenRead(modelPath))
            proto = ModelProto.Parser.ParseFrom(stream);
        string folder = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        foreach (
            string location in proto
                .Graph.Initializer.SelectMany(t => t.ExternalData)
                .Where(e => e.Key == "location")
                .Select(e => e.Value)
                .Distinct()
                .Order(StringComparer.Ordinal)
        )
            Append(sha, Path.Combine(folder, location));
    }

    /// <summary>The corpus as read: its path as given, the bytes and SHA-256 of its files in reading order.</summary>
    public static CorpusFingerprint Corpus(string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long bytes = 0;
        foreach (string file in TextDocuments.Files(path))
            bytes += Append(sha, file);
        return new CorpusFingerprint(path, bytes, Convert.ToHexStringLower(sha.GetHashAndReset()));
    }

    /// <summary>SHA-256 of the spec's kind and the files it names; of the spec itself for built-in
    /// tokenizers.</summary>
    public static string TokenizerSha256(TextTokenizer tokenizer)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        if (tokenizer.Files.Count == 0)
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(tokenizer.Spec));
        else
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(tokenizer.Spec.Split(':')[0]));
            foreach (string file in tokenizer.Files)
                Append(sha, file);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    static long Append(IncrementalHash sha, string file)
    {
        using var stream = File.OpenRead(file);
        var buffer = new byte[1 << 20];
        long total = 0;
        for (int n; (n = stream.Read(buffer)) > 0; total += n)
            sha.AppendData(buffer, 0, n);
        return total;
    }
}
