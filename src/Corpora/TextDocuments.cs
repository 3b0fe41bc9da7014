using System.Text.Json;

namespace Sparsity.Corpora;

/// <summary>
/// Streams the documents of a corpus, never holding more than one (or one Parquet row group): a .txt file (one
/// document per line), .jsonl (field "text"), .tsv (last column), .parquet (column "text"), a directory of such files
/// (sorted by path), or a gzip or zstd of a text file (name ending .gz or .zst, e.g. the Pile's .jsonl.zst). Blank
/// documents are skipped. Pre-tokenized corpora are <see cref="TokenDocuments"/>.
/// </summary>
public static class TextDocuments
{
    /// <summary>Documents of <paramref name="path"/> in a fixed order.</summary>
    /// <exception cref="UserInputException">The path is missing or has an unsupported extension.</exception>
    public static IEnumerable<string> Read(string path)
    {
        if (Directory.Exists(path))
        {
            var files = Files(path);
            if (files.Count == 0)
                throw new UserInputException(
                    $"Corpus folder {path} holds no .txt, .jsonl, .tsv or .parquet files (optionally .gz or .zst)."
                );
            return files.SelectMany(ReadFile);
        }
        if (!File.Exists(path))
            throw new UserInputException(
                $"Corpus {path} does not exist: pass a .txt, .jsonl, .tsv or .parquet file or a folder of them."
            );
        if (TokenDocuments.Handles(path))
            throw new UserInputException(
                $"Corpus {path} holds token ids, not text: analyze it with --tokenizer ids (the model's own token ids)."
            );
        if (FormatOf(path) == null)
            throw new UserInputException(
                $"Corpus {path} has an unsupported extension: use .txt, .jsonl, .tsv, .parquet, one of the first three with .gz or .zst, or token ids (.bin, .u32.bin, .parquet with input_ids)."
            );
        return ReadFile(path);
    }

    /// <summary>The files <see cref="Read"/> reads, in its order.</summary>
    public static IReadOnlyList<string> Files(string path)
    {
        if (Directory.Exists(path))
            return Directory
                .EnumerateFiles(path, "*", SearchOption.AllDirectories)
                .Where(f => FormatOf(f) != null)
                .Order(StringComparer.Ordinal)
                .ToList();
        return File.Exists(path) ? [path] : [];
    }

    static string? FormatOf(string path)
    {
        if (path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase))
            return TokenDocuments.Handles(path) ? null : ".parquet";
        string name = Compression(path) is { } suffix ? path[..^suffix.Length] : path;
        string ext = Path.GetExtension(name).ToLowerInvariant();
        return ext is ".txt" or ".jsonl" or ".tsv" ? ext : null;
    }

    static string? Compression(string path) =>
        new[] { ".gz", ".zst" }.FirstOrDefault(s => path.EndsWith(s, StringComparison.OrdinalIgnoreCase));

    static IEnumerable<string> ReadFile(string path)
    {
        string format = FormatOf(path)!;
        if (format == ".parquet")
        {
            foreach (string text in TokenDocuments.ParquetTexts(path))
                if (!string.IsNullOrWhiteSpace(text))
                    yield return text;
            yield break;
        }
        long lineNumber = 0;
        foreach (string line in Lines(path))
        {
            lineNumber++;
            string? text = format switch
            {
                ".jsonl" => JsonText(line, path, lineNumber),
                ".tsv" => line[(line.LastIndexOf('\t') + 1)..],
                _ => line,
            };
            if (!string.IsNullOrWhiteSpace(text))
                yield return text;
        }
    }

    /// <summary>
    /// The (source, target) pairs of an encoder-decoder corpus: lines <c>source&lt;TAB&gt;target</c> of a .tsv file (or
    /// .tsv.gz / .tsv.zst, or a folder of them), blank lines skipped; a line without exactly one tab is refused by
    /// number.
    /// </summary>
    public static IEnumerable<(string Source, string Target)> ReadPairs(string path)
    {
        var files = Files(path).Where(f => FormatOf(f) == ".tsv").ToList();
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new UserInputException($"Corpus {path} does not exist.");
        if (files.Count == 0 || Directory.Exists(path) && files.Count != Files(path).Count)
            throw new UserInputException(
                $"An encoder-decoder model reads pairs, and {path} is not a .tsv corpus of source<TAB>target lines (or a folder of only such files): "
                    + "give one, or pass --pairs reconstruct to make each window of a text corpus its own target."
            );
        return files.SelectMany(PairsOf);
    }

    static IEnumerable<(string Source, string Target)> PairsOf(string path)
    {
        long lineNumber = 0;
        foreach (string line in Lines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
                continue;
            int tab = line.IndexOf('\t');
            if (tab < 0 || line.IndexOf('\t', tab + 1) >= 0)
                throw new UserInputException(
                    $"{path}:{lineNumber} has {line.Count(c => c == '\t')} tabs: a pair is one line source<TAB>target, with exactly one tab."
                );
            yield return (line[..tab], line[(tab + 1)..]);
        }
    }

    static IEnumerable<string> Lines(string path)
    {
        using var file = File.OpenRead(path);
        using Stream stream = Compression(path) switch
        {
            ".gz" => new WholeStream(new ICSharpCode.SharpZipLib.GZip.GZipInputStream(file), file, path, "gzip"),
            ".zst" => new WholeStream(new ZstdSharp.DecompressionStream(file), file, path, "zstd"),
            _ => file,
        };
        using var reader = new StreamReader(stream);
        while (reader.ReadLine() is { } line)
            yield return line;
    }

    static string? JsonText(string line, string path, long lineNumber)
    {
        if (string.IsNullOrWhiteSpace(line))
            return null;
        try
        {
            using var doc = JsonDocument.Parse(line);
            return doc.RootElement.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String
                ? text.GetString()
                : throw new UserInputException($"{path}:{lineNumber} has no string field \"text\".");
        }
        catch (JsonException e)
        {
            throw new UserInputException($"{path}:{lineNumber} is not valid JSON ({e.Message.Split('.')[0]}).");
        }
    }
}
