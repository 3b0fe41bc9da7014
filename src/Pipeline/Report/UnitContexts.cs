using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Pipeline.Streaming;

namespace Sparsity.Pipeline.Report;

/// <summary>One top example as text: the tokens the model saw before the firing token (from its window), the token, and
/// a few after.</summary>
public sealed record ExampleContext(
    TopExample Example,
    IReadOnlyList<string> Before,
    string Token,
    IReadOnlyList<string> After
);

/// <summary>What the dashboard and <c>unit</c> show of one unit: its counts, histogram and top contexts.</summary>
public sealed record UnitView(
    int Layer,
    int Unit,
    long ActiveTokens,
    double Frequency,
    long[] Histogram,
    IReadOnlyList<ExampleContext> Contexts
)
{
    /// <summary>The layer as people name it: "Layer 3", or "encoder.3" / "decoder.3" in an encoder-decoder
    /// model.</summary>
    public string LayerLabel { get; init; } = $"Layer {Layer}";
}

/// <summary>
/// An analysis folder written with <c>--top-examples</c>, opened to show units as text: the counts and examples, and
/// the corpus and tokenizer it recorded, checked against its fingerprints (the examples point into that corpus by
/// document index and token offset) and read again for the documents the shown examples need.
/// </summary>
public sealed class UnitContexts
{
    /// <summary>Tokens shown before the firing token (within its window: what the model saw) and after it.</summary>
    public const int Before = 12,
        After = 4;

    UnitContexts(SparsityCounts counts, UnitExamples examples, string corpus, TextTokenizer tokenizer)
    {
        (Counts, Examples, Corpus, Tokenizer) = (counts, examples, corpus, tokenizer);
    }

    /// <summary>The analysis' counts.</summary>
    public SparsityCounts Counts { get; }

    /// <summary>Top examples and histograms.</summary>
    public UnitExamples Examples { get; }

    /// <summary>The corpus read again.</summary>
    public string Corpus { get; }

    /// <summary>The analysis' tokenizer.</summary>
    public TextTokenizer Tokenizer { get; }

    /// <summary>
    /// Opens <paramref name="analysisDir"/>; <paramref name="corpus"/> overrides the corpus path it recorded (moved, or
    /// another machine) and must have the same fingerprint.
    /// </summary>
    public static UnitContexts Open(string analysisDir, string? corpus = null)
    {
        var counts = SparsityCounts.Load(analysisDir);
        var h = counts.Header;
        if (h.TopExamples == 0)
            throw new UserInputException(
                $"{analysisDir} holds no top examples: re-run analyze with --top-examples K (for example 20)."
            );
        var examples = UnitExamples.Load(analysisDir, h.TopExamples, counts.Layers.Select(l => l.DFf).ToList());
        string path = corpus ?? h.Corpus;
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new UserInputException(
                $"The corpus {path} the analysis read is not here: pass --corpus PATH to the same corpus."
            );
        var fingerprint = Provenance.Corpus(path);
        if (
            h.CorpusFingerprint is { } recorded
            && (recorded.Sha256 != fingerprint.Sha256 || recorded.Bytes != fingerprint.Bytes)
        )
            throw new UserInputException(
                $"{path} is not the corpus the analysis read (SHA-256 {fingerprint.Sha256[..12]}… ≠ {recorded.Sha256[..12]}…): the examples point into that corpus; pass --corpus with it."
            );
        var tokenizer = TextTokenizer.FromSpec(h.Tokenizer);
        if (h.TokenizerSha256 is string sha && Provenance.TokenizerSha256(tokenizer) != sha)
            throw new UserInputException(
                $"The tokenizer {h.Tokenizer} has changed since the analysis (its files' SHA-256 differs): the contexts would be decoded wrongly; restore its files."
            );
        return new UnitContexts(counts, examples, path, tokenizer);
    }

    /// <summary>The layer a user named: its index, or encoder.N / decoder.N in an encoder-decoder model.</summary>
    public int LayerIndex(string name)
    {
        if (
            int.TryParse(
                name,
                System.Globalization.NumberStyles.None,
                System.Globalization.CultureInfo.InvariantCulture,
                out int i
            )
        )
            return i;
        int found = Counts.Layers.ToList().FindIndex(l => l.Stack != null && l.Label == name);
        return found >= 0
            ? found
            : throw new UserInputException(
                $"--layer {name}: the analysis has layers {string.Join(", ", Counts.Layers.Select((l, k) => l.Stack == null ? $"{k}" : l.Label))}."
            );
    }

    /// <summary>The views of the given units, reading the corpus once for all of their examples' documents.</summary>
    public IReadOnlyList<UnitView> Views(IReadOnlyList<(int Layer, int Unit)> units)
    {
        foreach (var (layer, unit) in units)
        {
            if (layer < 0 || layer >= Counts.Layers.Count)
                throw new UserInputException($"--layer {layer}: the analysis has layers 0..{Counts.Layers.Count - 1}.");
            if (unit < 0 || unit >= Counts.Layers[layer].DFf)
                throw new UserInputException(
                    $"--unit {unit}: layer {layer} has units 0..{Counts.Layers[layer].DFf - 1}."
                );
        }
        var needed = units
            .SelectMany(u => Examples.Layers[u.Layer].Top.Of(u.Unit).ToArray().Select(e => e.Document))
            .ToHashSet();
        var documents = new Dictionary<long, long[]>();
        var decoderInputs = new Dictionary<long, long[]>(); // pairs: what the decoder read, [start] + target
        long index = 0;
        // The stream the analysis read, so document indices and offsets mean the same here (pairs: a pair's index).
        var pairs = Counts.Header.Pairs;
        var stream =
            pairs == null
                ? CorpusBatches
                    .Tokens(Corpus, Tokenizer, Counts.Header.SeqLen)
                    .Select(doc => (doc, Decoder: Array.Empty<long>()))
                : CorpusBatches
                    .PairTokens(Corpus, Tokenizer, Counts.Header.SeqLen, pairs.Source == "reconstruct")
                    .Select(p => (p.Source, Decoder: (long[])[pairs.DecoderStartId, .. p.Target]));
        foreach (var (doc, decoder) in stream)
        {
            if (needed.Remove(index))
                (documents[index], decoderInputs[index]) = (doc, decoder);
            index++;
            if (needed.Count == 0)
                break;
        }
        if (needed.Count > 0)
            throw new UserInputException(
                $"The corpus {Corpus} has {index} documents; the examples point to document {needed.Min()}: it is not the analysed corpus."
            );
        int seqLen = Counts.Header.SeqLen;
        return units
            .Select(u =>
            {
                var layer = Counts.Layers[u.Layer];
                long tokens = layer.ToUse().Tokens;
                var contexts = Examples
                    .Layers[u.Layer]
                    .Top.Of(u.Unit)
                    .ToArray()
                    .Select(e =>
                    {
                        long[] doc = layer.Stack == "decoder" ? decoderInputs[e.Document] : documents[e.Document];
                        if (e.Position >= doc.Length)
                            throw new UserInputException(
                                $"Document {e.Document} of {Corpus} has {doc.Length} tokens; an example points to token {e.Position}: it is not the analysed corpus."
                            );
                        int windowStart = e.Position - e.Position % seqLen,
                            windowEnd = Math.Min(doc.Length, windowStart + seqLen);
                        int from = Math.Max(windowStart, e.Position - Before),
                            to = Math.Min(windowEnd, e.Position + 1 + After);
                        string Piece(int i) => Tokenizer.Decode([(int)doc[i]]);
                        return new ExampleContext(
                            e,
                            Enumerable.Range(from, e.Position - from).Select(Piece).ToList(),
                            Piece(e.Position),
                            Enumerable.Range(e.Position + 1, Math.Max(0, to - e.Position - 1)).Select(Piece).ToList()
                        );
                    })
                    .ToList();
                return new UnitView(
                    u.Layer,
                    u.Unit,
                    layer.TokensPerUnit[u.Unit],
                    tokens == 0 ? 0 : (double)layer.TokensPerUnit[u.Unit] / tokens,
                    Examples.Layers[u.Layer].Histogram.Of(u.Unit).ToArray(),
                    contexts
                )
                {
                    LayerLabel = layer.Stack == null ? $"Layer {u.Layer}" : layer.Label,
                };
            })
            .ToList();
    }

    /// <summary>
    /// The units a dashboard shows for a layer, each with why: the most and least frequent that fired, those that never
    /// fired (or fired on fewer tokens than K), and a random sample (seeded by the layer index).
    /// </summary>
    public IReadOnlyList<(int Unit, string Why)> Sample(int layer, int each = 4)
    {
        var counts = Counts.Layers[layer].TokensPerUnit;
        var byFrequency = Enumerable.Range(0, counts.Length).OrderByDescending(u => counts[u]).ThenBy(u => u).ToList();
        var chosen = new List<(int, string)>();
        var taken = new HashSet<int>();
        void Take(IEnumerable<int> units, string why)
        {
            foreach (int u in units.Where(taken.Add).Take(each))
                chosen.Add((u, why));
        }
        Take(byFrequency.Where(u => counts[u] > 0), "most frequent");
        Take(Enumerable.Reverse(byFrequency).Where(u => counts[u] > 0), "least frequent");
        Take(
            byFrequency.Where(u => counts[u] < Examples.K).Reverse(),
            counts.Any(c => c == 0) ? "dead or nearly" : "nearly dead"
        );
        var random = new Random(layer); // fixed: the same units on every run
        Take(Enumerable.Range(0, counts.Length).OrderBy(_ => random.Next()).Where(u => counts[u] > 0), "random");
        return chosen;
    }
}
