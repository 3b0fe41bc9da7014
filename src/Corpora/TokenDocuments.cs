using System.Buffers.Binary;
using Parquet;
using Parquet.Schema;
using Parquet.Serialization;

namespace Sparsity.Corpora;

/// <summary>
/// Pre-tokenized corpora, streamed: nanoGPT's token files (<c>.bin</c>, uint16 little-endian; <c>.u32.bin</c>, uint32),
/// read in chunks of whole windows, so the windows are those of one long document; and Parquet files with an
/// <c>input_ids</c> column (a list of int32 or int64 per row, one document per row), read one row group at a time.
/// Analysed with <c>--tokenizer ids</c>: the ids are the model's.
/// </summary>
public static class TokenDocuments
{
    /// <summary>Parquet column of pre-tokenized documents (the Hugging Face datasets name).</summary>
    public const string IdsColumn = "input_ids";

    /// <summary>Parquet column of text documents.</summary>
    public const string TextColumn = "text";

    /// <summary>Whether <paramref name="path"/> is a pre-tokenized file.</summary>
    public static bool Handles(string path) =>
        File.Exists(path)
        && (
            path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)
            || path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase)
                && Schema(path).Fields.Any(f => f.Name == IdsColumn)
        );

    /// <summary>
    /// The documents of a pre-tokenized file; a token file comes in chunks of <paramref name="chunkTokens"/> (a
    /// multiple of the window length, so chunking changes no window).
    /// </summary>
    public static IEnumerable<long[]> Read(string path, int chunkTokens)
    {
        if (!File.Exists(path))
            throw new UserInputException($"Corpus {path} does not exist.");
        return path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase)
            ? ParquetIds(path)
            : TokenFile(path, chunkTokens);
    }

    /// <summary>How many documents <see cref="Read"/> yields (progress and its estimate of time left).</summary>
    public static long Count(string path, int chunkTokens)
    {
        if (path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase))
            return WithReader(path, r => r.RowGroups.Sum(g => g.RowCount));
        long tokens = new FileInfo(path).Length / Width(path);
        return (tokens + chunkTokens - 1) / chunkTokens;
    }

    static int Width(string path) => path.EndsWith(".u32.bin", StringComparison.OrdinalIgnoreCase) ? 4 : 2;

    static IEnumerable<long[]> TokenFile(string path, int chunkTokens)
    {
        int width = Width(path);
        if (new FileInfo(path).Length % width != 0)
            throw new UserInputException(
                $"{path} has {new FileInfo(path).Length} bytes, not a whole number of {(width == 2 ? "uint16" : "uint32")} tokens: is it a {(width == 2 ? ".u32.bin" : ".bin")} file?"
            );
        using var stream = File.OpenRead(path);
        var buffer = new byte[chunkTokens * width];
        int read;
        while ((read = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false)) > 0)
        {
            var ids = new long[read / width];
            for (int i = 0; i < ids.Length; i++)
                ids[i] =
                    width == 2
                        ? BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(2 * i))
                        : BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(4 * i));
            yield return ids;
        }
    }

    static ParquetSchema Schema(string path)
    {
        try
        {
            return ParquetReader.ReadSchemaAsync(path).GetAwaiter().GetResult();
        }
        catch (Exception e)
            when (e is IOException or InvalidDataException or NotSupportedException or Parquet.ParquetException)
        {
            throw new UserInputException($"{path} is not a readable Parquet file ({e.Message.Split('\n')[0]}).");
        }
    }

    static IEnumerable<long[]> ParquetIds(string path)
    {
        var field = Schema(path).Fields.First(f => f.Name == IdsColumn) is ListField { Item: DataField item }
            ? item
            : throw new UserInputException($"{path}: column {IdsColumn} is not a list of token ids.");
        if (field.ClrType == typeof(int))
            return RowGroups<Int32Ids>(path).Select(r => r.input_ids?.Select(i => (long)i).ToArray() ?? []);
        if (field.ClrType == typeof(long))
            return RowGroups<Int64Ids>(path).Select(r => r.input_ids?.ToArray() ?? []);
        throw new UserInputException(
            $"{path}: column {IdsColumn} holds {field.ClrType.Name}; relu-sparsity reads lists of int32 or int64 token ids."
        );
    }

    /// <summary>The <c>text</c> column of a Parquet file, one row group at a time.</summary>
    public static IEnumerable<string> ParquetTexts(string path)
    {
        if (!Schema(path).Fields.Any(f => f.Name == TextColumn && f is DataField))
            throw new UserInputException(
                $"{path} has no string column \"{TextColumn}\" (nor \"{IdsColumn}\" token ids)."
            );
        return RowGroups<TextRow>(path).Select(r => r.text ?? "");
    }

    // One row group in memory at a time.
    static IEnumerable<T> RowGroups<T>(string path)
        where T : class, new()
    {
        int groups = WithReader(path, r => r.RowGroupCount);
        for (int g = 0; g < groups; g++)
        {
            IList<T> rows;
            using (var stream = File.OpenRead(path))
                rows = ParquetSerializer.DeserializeAsync<T>(stream, null, g).GetAwaiter().GetResult().Data;
            foreach (var row in rows)
                yield return row;
        }
    }

    // The reader is only asynchronously disposable; corpora are read on one thread, synchronously.
    static T WithReader<T>(string path, Func<ParquetReader, T> read)
    {
        using var stream = File.OpenRead(path);
        var reader = ParquetReader.CreateAsync(stream).GetAwaiter().GetResult();
        try
        {
            return read(reader);
        }
        finally
        {
            reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    // Rows of the Parquet layouts read here (and written by the bench and the tests); properties are named as the
    // columns, since the serializer maps by property name.
    /// <summary>A text document: column <c>text</c>.</summary>
    public sealed class TextRow
    {
        /// <summary>The document's text.</summary>
        public string? text { get; set; }
    }

    /// <summary>A pre-tokenized document: column <c>input_ids</c>, int32.</summary>
    public sealed class Int32Ids
    {
        /// <summary>The document's token ids.</summary>
        public List<int>? input_ids { get; set; }
    }

    /// <summary>A pre-tokenized document: column <c>input_ids</c>, int64.</summary>
    public sealed class Int64Ids
    {
        /// <summary>The document's token ids.</summary>
        public List<long>? input_ids { get; set; }
    }
}
