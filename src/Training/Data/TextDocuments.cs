using System.IO.Compression;
using System.Text.Json;

namespace Sparsity.Training.Data;

/// <summary>
/// Streams the documents of a corpus, never holding more than one: a .txt file (one document per
/// line), .jsonl (field "text"), .tsv (last column), a directory of such files (sorted by path), or a
/// gzip of any of them (name ending .gz). Blank documents are skipped.
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
            if (files.Count == 0) throw new UserInputException($"Corpus folder {path} holds no .txt, .jsonl or .tsv files (optionally .gz).");
            return files.SelectMany(ReadFile);
        }
        if (!File.Exists(path)) throw new UserInputException($"Corpus {path} does not exist: pass a .txt, .jsonl or .tsv file or a folder of them.");
        if (FormatOf(path) == null) throw new UserInputException($"Corpus {path} has an unsupported extension: use .txt, .jsonl, .tsv or one of them with .gz.");
        return ReadFile(path);
    }

    /// <summary>The files <see cref="Read"/> reads, in its order.</summary>
    public static IReadOnlyList<string> Files(string path)
    {
        if (Directory.Exists(path))
            return Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Where(f => FormatOf(f) != null).Order(StringComparer.Ordinal).ToList();
        return File.Exists(path) ? [path] : [];
    }

    static string? FormatOf(string path)
    {
        string name = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? path[..^3] : path;
        string ext = Path.GetExtension(name).ToLowerInvariant();
        return ext is ".txt" or ".jsonl" or ".tsv" ? ext : null;
    }

    static IEnumerable<string> ReadFile(string path)
    {
        string format = FormatOf(path)!;
        using var file = File.OpenRead(path);
        using Stream stream = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionMode.Decompress) : file;
        using var reader = new StreamReader(stream);
        long lineNumber = 0;
        while (reader.ReadLine() is { } line)
        {
            lineNumber++;
            string? text = format switch
            {
                ".jsonl" => JsonText(line, path, lineNumber),
                ".tsv" => line[(line.LastIndexOf('\t') + 1)..],
                _ => line,
            };
            if (!string.IsNullOrWhiteSpace(text)) yield return text;
        }
    }

    static string? JsonText(string line, string path, long lineNumber)
    {
        if (string.IsNullOrWhiteSpace(line)) return null;
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
