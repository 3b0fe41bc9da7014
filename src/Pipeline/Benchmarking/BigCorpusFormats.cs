using Parquet.Serialization;
using Sparsity.Corpora;

namespace Sparsity.Pipeline.Benchmarking;

/// <summary>
/// The same text in the formats big corpora come in (zstd JSON Lines, Parquet with a text column, a uint32 token file),
/// so the bench can show that analyze's memory stays flat in each.
/// </summary>
public static class BigCorpusFormats
{
    /// <summary>Paths of the three files.</summary>
    public sealed record Files(string JsonLinesZstd, string ParquetText, string TokenFile);

    /// <summary>Writes <paramref name="corpus"/>'s documents into <paramref name="dir"/> in each format (the token file
    /// through <paramref name="tokenizer"/>).</summary>
    public static Files Write(string corpus, TextTokenizer tokenizer, string dir)
    {
        var files = new Files(
            Path.Combine(dir, "corpus.jsonl.zst"),
            Path.Combine(dir, "corpus.parquet"),
            Path.Combine(dir, "corpus.u32.bin")
        );
        using (var file = File.Create(files.JsonLinesZstd))
        using (var zstd = new ZstdSharp.CompressionStream(file))
        using (var writer = new StreamWriter(zstd))
            foreach (string d in TextDocuments.Read(corpus))
                writer.WriteLine(System.Text.Json.JsonSerializer.Serialize(new { text = d }));
        ParquetSerializer
            .SerializeAsync(
                TextDocuments.Read(corpus).Select(d => new TokenDocuments.TextRow { text = d }),
                files.ParquetText,
                new Parquet.ParquetOptions { RowGroupSize = 256 }
            )
            .GetAwaiter()
            .GetResult();
        using (var tokens = new BinaryWriter(File.Create(files.TokenFile)))
            foreach (string d in TextDocuments.Read(corpus))
            foreach (int id in tokenizer.Encode(d))
                tokens.Write((uint)id);
        return files;
    }
}
