using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Sparsity.Analysis;

/// <summary>What was analysed, recorded in counts.json and stats.json.</summary>
/// <param name="Model">Model file name.</param>
/// <param name="Corpus">Corpus path as given.</param>
/// <param name="Tokenizer">Tokenizer spec.</param>
/// <param name="SeqLen">Window length T.</param>
/// <param name="BatchSize">Windows per batch B (per-batch use depends on it).</param>
/// <param name="Threshold">A unit is active when its activation exceeds this.</param>
/// <param name="MaxTokens">Token cap, or null for the whole corpus.</param>
/// <param name="Shards">Shards included, as "i/n" (one for a single run, several after merge).</param>
/// <param name="Producer">Tool and version.</param>
/// <param name="ModelSha256">SHA-256 of the model file followed by its external data files; null in files written
/// before 0.2.0.</param>
/// <param name="CorpusFingerprint">The corpus as read: path, bytes and SHA-256 of its files.</param>
/// <param name="TokenizerSha256">SHA-256 of the tokenizer spec's kind and the bytes of the files it names (the spec
/// itself for built-in ones).</param>
/// <param name="Precision">The model's compute precision: fp32, fp16 or bf16 (units within half-precision rounding of
/// zero may flip).</param>
/// <param name="TopExamples">K of <c>--top-examples</c>: the folder holds each unit's K top windows
/// (<see cref="UnitExamples"/>); 0 for none.</param>
/// <param name="TopExamplesFormat">The definition of those examples (<see cref="UnitExamples.Format"/>); null without
/// them, or in folders written before top windows.</param>
/// <param name="Pairs">An encoder-decoder model's corpus of pairs, and how its decoder was fed; null for other
/// models.</param>
public sealed record AnalysisHeader(
    string Model,
    string Corpus,
    string Tokenizer,
    int SeqLen,
    int BatchSize,
    float Threshold,
    long? MaxTokens,
    IReadOnlyList<string> Shards,
    string Producer,
    string? ModelSha256 = null,
    CorpusFingerprint? CorpusFingerprint = null,
    string? TokenizerSha256 = null,
    string Precision = "fp32",
    int TopExamples = 0,
    string? TopExamplesFormat = null,
    PairSettings? Pairs = null
)
{
    /// <summary>The shard count n of the runs merged here (all equal, <c>SparsityCounts.Merge</c> checks).</summary>
    public int ShardCount => ParseShard(Shards[0]).Count;

    /// <summary>Shard indices 0..n−1 not included here.</summary>
    public IReadOnlyList<int> MissingShards()
    {
        var present = Shards.Select(s => ParseShard(s).Index).ToHashSet();
        return Enumerable.Range(0, ShardCount).Where(i => !present.Contains(i)).ToList();
    }

    /// <summary>"i/n" → (i, n).</summary>
    public static (int Index, int Count) ParseShard(string shard)
    {
        string[] parts = shard.Split('/');
        return
            parts.Length == 2
            && int.TryParse(parts[0], CultureInfo.InvariantCulture, out int i)
            && int.TryParse(parts[1], CultureInfo.InvariantCulture, out int n)
            && n > 0
            && i >= 0
            && i < n
            ? (i, n)
            : throw new UserInputException($"Shard '{shard}' is not i/n with 0 ≤ i < n.");
    }
}

/// <summary>
/// How an encoder-decoder model read its corpus: <paramref name="Source"/> "tsv" (lines source&lt;TAB&gt;target) or
/// "reconstruct" (each window of a text corpus is its own target); the decoder is teacher-forced with the target
/// shifted right after <paramref name="DecoderStartId"/>, padded with <paramref name="PadId"/>.
/// </summary>
public sealed record PairSettings(string Source, long DecoderStartId, long PadId);

/// <summary>An encoder-decoder run's pairs, and how many of their sources and targets were cut to the window length
/// (summed by merge).</summary>
public sealed record PairCounts(long Pairs, long TruncatedSources, long TruncatedTargets)
{
    /// <summary>Both runs' pairs.</summary>
    public PairCounts Add(PairCounts other) =>
        new(Pairs + other.Pairs, TruncatedSources + other.TruncatedSources, TruncatedTargets + other.TruncatedTargets);
}

/// <summary>A corpus as it was read: its path as given, total bytes and SHA-256 over its files in reading
/// order.</summary>
public sealed record CorpusFingerprint(string Path, long Bytes, string Sha256);

/// <summary>
/// Exact integer counts of one layer (the state of a <see cref="LayerUnitUse"/>). <paramref name="Stack"/>: "encoder"
/// or "decoder" in an encoder-decoder model, with <paramref name="StackIndex"/> the layer's index in it; null
/// otherwise.
/// </summary>
public sealed record LayerCounts(
    string Name,
    int Index,
    int DFf,
    long[] TokensPerUnit,
    long[] UnitsPerTokenHistogram,
    long[] UnitsPerSequenceHistogram,
    long[] UnitsPerBatchHistogram,
    string? Stack = null,
    int? StackIndex = null
)
{
    /// <summary>Captures an accumulator.</summary>
    public static LayerCounts From(
        string name,
        int index,
        LayerUnitUse use,
        string? stack = null,
        int? stackIndex = null
    ) =>
        new(
            name,
            index,
            use.DFf,
            use.TokensPerUnit.ToArray(),
            use.UnitsPerTokenHistogram.ToArray(),
            use.UnitsPerSequenceHistogram.ToArray(),
            use.UnitsPerBatchHistogram.ToArray(),
            stack,
            stackIndex
        );

    /// <summary>How people name the layer: "layer 3", or "encoder.3" / "decoder.3" in an encoder-decoder
    /// model.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string Label => LabelOf(Stack, StackIndex, Index);

    /// <summary>A layer's name from its stack and index in it (encoder-decoder models), else "layer" and its
    /// index.</summary>
    public static string LabelOf(string? stack, int? stackIndex, int index) =>
        stack == null ? $"layer {index}" : $"{stack}.{stackIndex}";

    /// <summary>Restores the accumulator.</summary>
    public LayerUnitUse ToUse() =>
        LayerUnitUse.FromCounts(
            TokensPerUnit,
            UnitsPerTokenHistogram,
            UnitsPerSequenceHistogram,
            UnitsPerBatchHistogram
        );
}

/// <summary>
/// counts.json: the exact partial counts of one analysis run or shard. <c>Merge</c> adds them,
/// so shards run anywhere combine into exactly the statistics of one run over the whole corpus.
/// </summary>
/// <param name="Header">What was analysed.</param>
/// <param name="Layers">Each layer's counts (an encoder-decoder's encoder layers first).</param>
/// <param name="PairCounts">An encoder-decoder run's pairs and truncations; null for other models.</param>
public sealed record SparsityCounts(
    AnalysisHeader Header,
    IReadOnlyList<LayerCounts> Layers,
    PairCounts? PairCounts = null
)
{
    /// <summary>File name inside an analysis folder.</summary>
    public const string FileName = "counts.json";

    /// <summary>Reads counts.json from an analysis folder.</summary>
    public static SparsityCounts Load(string dir)
    {
        string path = Path.Combine(dir, FileName);
        if (!File.Exists(path))
            throw new UserInputException($"{dir} is not an analysis folder: {FileName} is missing (run `analyze`).");
        SparsityCounts? counts;
        try
        {
            counts = JsonSerializer.Deserialize<SparsityCounts>(File.ReadAllText(path), ProjectJson.Options);
        }
        catch (JsonException e)
        {
            throw new UserInputException($"{path} is not a valid counts file: {e.Message}");
        }
        if (counts is null)
            throw new UserInputException($"{path} is not a valid counts file: it holds null.");
        CountsValidation.Require(counts, path);
        return counts;
    }

    /// <summary>
    /// Adds runs of the same model, corpus, tokenizer and settings. Refuses (naming the field and both values) inputs
    /// that differ in any of them, in tool version or in shard count n; repeated or overlapping shards; inputs without
    /// provenance; and missing shards unless <paramref name="allowPartial"/> (the merged header then lists the shards
    /// present). A merge of merges equals the flat merge. <paramref name="names"/> name the inputs in messages.
    /// </summary>
    public static SparsityCounts Merge(
        IReadOnlyList<SparsityCounts> parts,
        bool allowPartial = false,
        IReadOnlyList<string>? names = null
    ) => Merge(parts.Select((p, i) => (names?[i] ?? $"input {i + 1}", p)), allowPartial);

    /// <summary>
    /// The same merge over parts read one at a time (each is dropped once added), so merging a thousand shard folders
    /// holds one shard and the running sums: memory O(layers × d_ff), whatever the number of shards.
    /// </summary>
    public static SparsityCounts Merge(IEnumerable<(string Name, SparsityCounts Part)> parts, bool allowPartial = false)
    {
        AnalysisHeader? first = null;
        string firstName = "";
        LayerUnitUse[] uses = [];
        IReadOnlyList<LayerCounts> firstLayers = [];
        var shards = new HashSet<string>();
        PairCounts? pairs = null;
        foreach (var (name, part) in parts)
        {
            var h = part.Header;
            if (h.ModelSha256 == null || h.CorpusFingerprint == null || h.TokenizerSha256 == null)
                throw new UserInputException(
                    $"{name} records no provenance (model, corpus and tokenizer hashes; written before relu-sparsity 0.2.0): re-run analyze to merge it."
                );
            if (first == null)
            {
                (first, firstName, firstLayers) = (h, name, part.Layers);
                uses = part.Layers.Select(l => l.ToUse()).ToArray();
            }
            else
            {
                RequireSameRun(first, firstName, h, name);
                if (
                    part.Layers.Count != firstLayers.Count
                    || part.Layers.Zip(firstLayers).Any(l => l.First.DFf != l.Second.DFf)
                )
                    throw new UserInputException(
                        $"Cannot merge: the layers of {name} differ from those of {firstName}."
                    );
                for (int i = 0; i < uses.Length; i++)
                    uses[i].Merge(part.Layers[i].ToUse());
            }
            if (part.PairCounts is { } p)
                pairs = pairs?.Add(p) ?? p;
            foreach (string shard in h.Shards)
                if (!shards.Add(shard))
                    throw new UserInputException(
                        $"Shard {shard} appears twice: merging it twice would count its tokens twice."
                    );
        }
        if (first == null)
            throw new UserInputException("Nothing to merge.");
        var layers = firstLayers
            .Select((l, i) => LayerCounts.From(l.Name, l.Index, uses[i], l.Stack, l.StackIndex))
            .ToList();
        var header = first with { Shards = shards.OrderBy(s => AnalysisHeader.ParseShard(s).Index).ToList() };
        var missing = header.MissingShards();
        if (missing.Count > 0 && !allowPartial)
            throw new UserInputException(
                $"Shards {string.Join(", ", missing.Select(m => $"{m}/{header.ShardCount}"))} are missing: the merge would not cover the corpus. "
                    + "Add them, or pass --partial to merge what is here."
            );
        return new SparsityCounts(header, layers, pairs);
    }

    // Shards of one run share the model, corpus, tokenizer, settings, tool version and shard count.
    static void RequireSameRun(AnalysisHeader first, string firstName, AnalysisHeader h, string name)
    {
        foreach (
            var (field, a, b) in new (string, object?, object?)[]
            {
                ("model (SHA-256)", first.ModelSha256, h.ModelSha256),
                ("corpus (SHA-256)", first.CorpusFingerprint!.Sha256, h.CorpusFingerprint!.Sha256),
                ("corpus size (bytes)", first.CorpusFingerprint.Bytes, h.CorpusFingerprint.Bytes),
                ("tokenizer", first.Tokenizer, h.Tokenizer),
                ("tokenizer files (SHA-256)", first.TokenizerSha256, h.TokenizerSha256),
                ("seq_len", first.SeqLen, h.SeqLen),
                ("batch_size", first.BatchSize, h.BatchSize),
                ("threshold", first.Threshold, h.Threshold),
                ("max_tokens", first.MaxTokens, h.MaxTokens),
                ("tool version", first.Producer, h.Producer),
                ("precision", first.Precision, h.Precision),
                ("top examples K", first.TopExamples, h.TopExamples),
                ("top examples format", first.TopExamplesFormat, h.TopExamplesFormat),
                ("shard count n", first.ShardCount, h.ShardCount),
                ("pairs", first.Pairs, h.Pairs),
            }
        )
            if (!Equals(a, b))
                throw new UserInputException(
                    $"Cannot merge: {field} differs between {firstName} ({a ?? "none"}) and {name} ({b ?? "none"}); only shards of one run belong together."
                );
    }

    /// <summary>
    /// Writes counts.json, stats.json and one layer_{i}.csv per layer into <paramref name="dir"/>;
    /// stats.json last, each under a temporary name first.
    /// </summary>
    public void Write(string dir)
    {
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(Path.Combine(dir, FileName), JsonSerializer.Serialize(this, ProjectJson.Options));
        foreach (var layer in Layers)
        {
            var csv = new StringBuilder("unit,active_tokens,frequency\n");
            double[] frequency = layer.ToUse().UnitActivationFrequency();
            for (int u = 0; u < layer.DFf; u++)
                csv.Append(CultureInfo.InvariantCulture, $"{u},{layer.TokensPerUnit[u]},{frequency[u]:R}\n");
            AtomicFile.WriteAllText(Path.Combine(dir, $"layer_{layer.Index}.csv"), csv.ToString());
        }
        AtomicFile.WriteAllText(
            Path.Combine(dir, SparsityStats.FileName),
            JsonSerializer.Serialize(SparsityStats.From(this), ProjectJson.Options)
        );
    }
}

/// <summary>One bin of the unit-frequency histogram: units whose activation frequency f is in (From, To] (f = 0 for the
/// first bin).</summary>
public sealed record FrequencyBin(double From, double To, int Units);

/// <summary>
/// The per-layer statistics of stats.json. <paramref name="Stack"/> and <paramref name="StackIndex"/>: an
/// encoder-decoder layer's stack and index in it, with <paramref name="Tokens"/> the positions it counted (its side of
/// the pairs); all three null for other models.
/// </summary>
public sealed record LayerStats(
    string Name,
    int Index,
    int DFf,
    double NonzeroFraction,
    double PerTokenUnitsMean,
    double PerSequenceUnitsMean,
    double PerBatchUnitsMean,
    UseSummary PerTokenUnits,
    UseSummary PerSequenceUnits,
    UseSummary PerBatchUnits,
    int UnitsEverActive,
    int DeadUnits,
    double DownProjectionFlopReduction,
    IReadOnlyList<FrequencyBin> UnitFrequencyHistogram,
    long[] UnitActivationCounts,
    double[] UnitActivationFrequency,
    string? Stack = null,
    int? StackIndex = null,
    long? Tokens = null
)
{
    /// <summary>How people name the layer: "layer 3", or "encoder.3" / "decoder.3" in an encoder-decoder
    /// model.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string Label => LayerCounts.LabelOf(Stack, StackIndex, Index);
}

/// <summary>
/// stats.json: what people and plots read. Derived from <see cref="SparsityCounts"/>, never merged itself. For an
/// encoder-decoder model, <c>Tokens</c> and <c>Sequences</c> are the sources' (each layer gives its own tokens), with
/// <c>Pairs</c> and <c>PairCounts</c> saying how the pairs were read and cut.
/// </summary>
public sealed record SparsityStats(
    string Model,
    string Corpus,
    string Tokenizer,
    long Tokens,
    long Sequences,
    long Batches,
    int SeqLen,
    int BatchSize,
    float Threshold,
    long? MaxTokens,
    IReadOnlyList<string> Shards,
    string Producer,
    IReadOnlyList<LayerStats> Layers,
    string? ModelSha256 = null,
    CorpusFingerprint? CorpusFingerprint = null,
    string? TokenizerSha256 = null,
    string Precision = "fp32",
    PairSettings? Pairs = null,
    PairCounts? PairCounts = null
)
{
    /// <summary>File name inside an analysis folder.</summary>
    public const string FileName = "stats.json";

    /// <summary>Reads a stats.json; a missing or malformed file is an <see cref="UserInputException"/> naming
    /// it.</summary>
    public static SparsityStats Load(string path)
    {
        if (!File.Exists(path))
            throw new UserInputException($"{path} does not exist (run `analyze` first).");
        SparsityStats stats;
        try
        {
            stats = JsonSerializer.Deserialize<SparsityStats>(File.ReadAllText(path), ProjectJson.Options)
                ?? throw new UserInputException($"{path} is empty.");
        }
        catch (JsonException e)
        {
            throw new UserInputException($"{path} is not a stats.json: {e.Message}");
        }
        CountsValidation.Require(stats, path);
        return stats;
    }

    // Decades: dead, then (0, 1e-4], …, (0.1, 0.5], (0.5, 1]: the long tail of Li et al. Fig. 3 stays readable.
    static readonly double[] Edges = [0, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1];

    /// <summary>Computes the statistics of merged or single-run counts.</summary>
    public static SparsityStats From(SparsityCounts counts)
    {
        var layers = counts
            .Layers.Select(l =>
            {
                var use = l.ToUse();
                double[] frequency = use.UnitActivationFrequency();
                var bins = new List<FrequencyBin> { new(0, 0, frequency.Count(f => f == 0)) };
                for (int b = 1; b < Edges.Length; b++)
                    bins.Add(
                        new FrequencyBin(
                            Edges[b - 1],
                            Edges[b],
                            frequency.Count(f => f > Edges[b - 1] && f <= Edges[b])
                        )
                    );
                return new LayerStats(
                    l.Name,
                    l.Index,
                    l.DFf,
                    use.NonzeroFraction,
                    use.PerTokenUnitUse.Mean,
                    use.PerSequenceUnitUse.Mean,
                    use.PerBatchUnitUse.Mean,
                    use.PerTokenUnitUse,
                    use.PerSequenceUnitUse,
                    use.PerBatchUnitUse,
                    use.UnitsEverActive,
                    use.DeadUnits,
                    use.DownProjectionFlopReduction,
                    bins,
                    l.TokensPerUnit,
                    frequency,
                    l.Stack,
                    l.StackIndex,
                    l.Stack == null ? null : use.Tokens
                );
            })
            .ToList();
        var any = counts.Layers.Count > 0 ? counts.Layers[0].ToUse() : null;
        var h = counts.Header;
        return new SparsityStats(
            h.Model,
            h.Corpus,
            h.Tokenizer,
            any?.Tokens ?? 0,
            any?.Sequences ?? 0,
            any?.Batches ?? 0,
            h.SeqLen,
            h.BatchSize,
            h.Threshold,
            h.MaxTokens,
            h.Shards,
            h.Producer,
            layers,
            h.ModelSha256,
            h.CorpusFingerprint,
            h.TokenizerSha256,
            h.Precision,
            h.Pairs,
            counts.PairCounts
        );
    }
}
