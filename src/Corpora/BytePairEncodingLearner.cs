using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Sparsity.Corpora;

/// <summary>
/// Learns a GPT-2-style byte-level BPE vocabulary (vocab.json + merges.txt, the format
/// Microsoft.ML.Tokenizers loads) from a corpus. Why: the default model needs a vocabulary of a few
/// thousand tokens so training on 2 CPU cores is fast, yet every byte must stay encodable; learning
/// merges from the training split gives ~4 characters per token on English, against 1 for raw
/// bytes, and needs no vocabulary file from the internet. Ids 0–255 are the bytes, then the
/// merges in order, then &lt;|endoftext|&gt; (the document separator).
/// </summary>
public static partial class BytePairEncodingLearner
{
    /// <summary>The end-of-document token appended as the last id.</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>What was learned.</summary>
    public sealed record Result(int VocabSize, int Merges, long Words, int DistinctWords);

    /// <summary>Learns merges until the vocabulary holds <paramref name="vocabSize"/> ids (or no pair repeats) and
    /// writes both files.</summary>
    public static Result Learn(IEnumerable<string> documents, int vocabSize, string outDir)
    {
        if (vocabSize < 258 || vocabSize > 65535)
            throw new UserInputException(
                $"--vocab-size must be in 258..65535 (256 bytes + merges + <|endoftext|>); got {vocabSize}."
            );
        string[] byteSymbol = ByteSymbols();

        var wordCounts = new Dictionary<string, long>(StringComparer.Ordinal);
        long totalWords = 0;
        foreach (string doc in documents)
        foreach (Match m in Gpt2PreTokenizer().Matches(doc))
        {
            wordCounts[m.Value] = wordCounts.GetValueOrDefault(m.Value) + 1;
            totalWords++;
        }

        // Sorted so the learned merges never depend on hash order.
        var words = wordCounts.OrderBy(w => w.Key, StringComparer.Ordinal).ToList();
        var symbols = words.Select(w => Encoding.UTF8.GetBytes(w.Key).Select(b => (int)b).ToArray()).ToArray();
        var frequency = words.Select(w => w.Value).ToArray();
        var tokens = new List<string>(byteSymbol);
        var merges = new List<string>();

        var pairCount = new Dictionary<long, long>();
        var pairWords = new Dictionary<long, HashSet<int>>();
        for (int w = 0; w < symbols.Length; w++)
            CountPairs(symbols[w], w, frequency[w], +1, pairCount, pairWords);

        while (tokens.Count < vocabSize - 1)
        {
            long best = -1,
                bestCount = 1;
            foreach (var (pair, count) in pairCount)
                if (count > bestCount || (count == bestCount && best >= 0 && pair < best))
                    (best, bestCount) = (pair, count);
            if (best < 0)
                break; // no pair occurs twice: more merges would only memorise
            int a = (int)(best >> 32),
                b = (int)(best & 0xffffffff),
                merged = tokens.Count;
            tokens.Add(tokens[a] + tokens[b]);
            merges.Add(tokens[a] + " " + tokens[b]);
            foreach (int w in pairWords[best].ToArray())
            {
                CountPairs(symbols[w], w, frequency[w], -1, pairCount, pairWords);
                symbols[w] = Merge(symbols[w], a, b, merged);
                CountPairs(symbols[w], w, frequency[w], +1, pairCount, pairWords);
            }
            pairCount.Remove(best);
            pairWords.Remove(best);
        }
        tokens.Add(EndOfText);

        var vocab = new Dictionary<string, int>();
        for (int id = 0; id < tokens.Count; id++)
            vocab[tokens[id]] = id;
        AtomicFile.WriteAllText(Path.Combine(outDir, "vocab.json"), JsonSerializer.Serialize(vocab));
        AtomicFile.WriteAllLines(Path.Combine(outDir, "merges.txt"), merges.Prepend("#version: 0.2"));
        return new Result(tokens.Count, merges.Count, totalWords, words.Count);
    }

    static void CountPairs(
        int[] word,
        int w,
        long frequency,
        int sign,
        Dictionary<long, long> pairCount,
        Dictionary<long, HashSet<int>> pairWords
    )
    {
        for (int i = 0; i + 1 < word.Length; i++)
        {
            long pair = ((long)word[i] << 32) | (uint)word[i + 1];
            long count = pairCount.GetValueOrDefault(pair) + sign * frequency;
            if (count <= 0)
                pairCount.Remove(pair);
            else
                pairCount[pair] = count;
            if (sign > 0)
            {
                if (!pairWords.TryGetValue(pair, out var set))
                    pairWords[pair] = set = new HashSet<int>();
                set.Add(w);
            }
        }
    }

    static int[] Merge(int[] word, int a, int b, int merged)
    {
        var result = new List<int>(word.Length);
        for (int i = 0; i < word.Length; i++)
        {
            if (i + 1 < word.Length && word[i] == a && word[i + 1] == b)
            {
                result.Add(merged);
                i++;
            }
            else
                result.Add(word[i]);
        }
        return result.ToArray();
    }

    /// <summary>GPT-2's reversible byte → printable character map, so every token is a JSON string without
    /// spaces.</summary>
    public static string[] ByteSymbols()
    {
        var symbols = new string[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            symbols[b] = ((char)(printable ? b : next++)).ToString();
        }
        return symbols;
    }

    /// <summary>GPT-2's pre-tokenizer: contractions, letters, digits, other symbols, each with one leading space.
    /// Learning and encoding both split words with it.</summary>
    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    public static partial Regex Gpt2PreTokenizer();
}
