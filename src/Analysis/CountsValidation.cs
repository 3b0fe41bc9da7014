namespace Sparsity.Analysis;

/// <summary>
/// The one check every count read back from disk passes before <c>merge</c>, <c>report</c>, <c>check</c>, <c>prune</c>,
/// <c>sparse-decode</c> or <c>unit</c> trusts it (counts.json and stats.json): the header's sizes are positive, every
/// array has its layer's length, counts are non-negative integers, histograms sum to the same token, sequence and batch
/// totals in every layer, per-unit counts never exceed the tokens, the active entries add up both ways, and the
/// frequencies derived from them lie in [0, 1]. A file edited by hand or cut short is refused naming what is wrong.
/// </summary>
public static class CountsValidation
{
    /// <summary>Refuses counts.json contents that no analysis could have written.</summary>
    public static void Require(SparsityCounts counts, string path)
    {
        if (counts.Header is not { } h || counts.Layers is null)
            throw Bad(path, "it has no header or no layers");
        RequireHeader(path, h.SeqLen, h.BatchSize, h.Threshold, h.MaxTokens, h.Shards);
        if (h.TopExamples < 0)
            throw Bad(path, $"top_examples is {h.TopExamples}");
        if (h.TopExamplesFormat is string format && format != UnitExamples.Format)
            throw Bad(
                path,
                $"top_examples_format is {format}, which this relu-sparsity does not read (it writes {UnitExamples.Format})"
            );
        if (counts.Layers.Count == 0)
            throw Bad(path, "it lists no layers");
        // Per stack: an encoder-decoder's encoder layers count the sources' positions, its decoder layers the targets'.
        var totals = new Dictionary<string, (Int128 Tokens, Int128 Sequences, Int128 Batches, int Layer)>();
        foreach (var l in counts.Layers)
        {
            if (l is null)
                throw Bad(path, "a layer is null");
            string where = $"layer {l.Index}";
            if (
                l.Stack is not (null or "encoder" or "decoder")
                || (l.Stack == null) != (l.StackIndex == null)
                || l.StackIndex < 0
            )
                throw Bad(
                    path,
                    $"{where} has stack {l.Stack ?? "none"} and stack index {l.StackIndex?.ToString() ?? "none"}"
                );
            if (l.DFf < 1)
                throw Bad(path, $"{where} has d_ff {l.DFf}");
            RequireLength(path, where, "tokens_per_unit", l.TokensPerUnit, l.DFf);
            RequireLength(path, where, "units_per_token_histogram", l.UnitsPerTokenHistogram, l.DFf + 1);
            RequireLength(path, where, "units_per_sequence_histogram", l.UnitsPerSequenceHistogram, l.DFf + 1);
            RequireLength(path, where, "units_per_batch_histogram", l.UnitsPerBatchHistogram, l.DFf + 1);
            Int128 tokens = Sum(path, where, "units_per_token_histogram", l.UnitsPerTokenHistogram);
            Int128 sequences = Sum(path, where, "units_per_sequence_histogram", l.UnitsPerSequenceHistogram);
            Int128 batches = Sum(path, where, "units_per_batch_histogram", l.UnitsPerBatchHistogram);
            Int128 active = Sum(path, where, "tokens_per_unit", l.TokensPerUnit);
            if (l.TokensPerUnit.Any(c => c > tokens))
                throw Bad(path, $"{where}: a unit is active on more tokens than the {tokens} counted");
            Int128 activeFromHistogram = 0;
            for (int c = 0; c <= l.DFf; c++)
                activeFromHistogram += (Int128)c * l.UnitsPerTokenHistogram[c];
            if (activeFromHistogram != active)
                throw Bad(
                    path,
                    $"{where}: the per-unit counts add up to {active} active entries, the per-token histogram to {activeFromHistogram}"
                );
            if (sequences > tokens || tokens > sequences * h.SeqLen || sequences > batches * h.BatchSize)
                throw Bad(
                    path,
                    $"{where}: {tokens} tokens, {sequences} sequences and {batches} batches do not fit windows of {h.SeqLen} in batches of {h.BatchSize}"
                );
            if (
                totals.TryGetValue(l.Stack ?? "", out var t)
                && (t.Tokens, t.Sequences, t.Batches) != (tokens, sequences, batches)
            )
                throw Bad(
                    path,
                    $"{where} counts {tokens} tokens, {sequences} sequences and {batches} batches; layer {t.Layer} counts {t.Tokens}, {t.Sequences} and {t.Batches}"
                );
            totals.TryAdd(l.Stack ?? "", (tokens, sequences, batches, l.Index));
        }
    }

    /// <summary>Refuses stats.json contents that no analysis could have written.</summary>
    public static void Require(SparsityStats stats, string path)
    {
        if (stats.Layers is null || stats.Layers.Count == 0)
            throw Bad(path, "it lists no layers");
        RequireHeader(path, stats.SeqLen, stats.BatchSize, stats.Threshold, stats.MaxTokens, stats.Shards);
        if (stats.Tokens < 0 || stats.Sequences < 0 || stats.Batches < 0 || stats.Sequences > stats.Tokens)
            throw Bad(
                path,
                $"it counts {stats.Tokens} tokens, {stats.Sequences} sequences and {stats.Batches} batches"
            );
        foreach (var l in stats.Layers)
        {
            if (l is null)
                throw Bad(path, "a layer is null");
            string where = $"layer {l.Index}";
            if (l.DFf < 1)
                throw Bad(path, $"{where} has d_ff {l.DFf}");
            RequireLength(path, where, "unit_activation_counts", l.UnitActivationCounts, l.DFf);
            if (l.UnitActivationFrequency is null || l.UnitActivationFrequency.Length != l.DFf)
                throw Bad(path, $"{where}: unit_activation_frequency does not hold {l.DFf} values");
            Sum(path, where, "unit_activation_counts", l.UnitActivationCounts);
            long counted = l.Tokens ?? stats.Tokens; // an encoder-decoder layer counts its own side of the pairs
            if (l.UnitActivationCounts.Any(c => c > counted))
                throw Bad(path, $"{where}: a unit is active on more tokens than the {counted} counted");
            if (
                l.UnitActivationFrequency.Any(f => !(f >= 0 && f <= 1))
                || !(l.NonzeroFraction >= 0 && l.NonzeroFraction <= 1)
            )
                throw Bad(path, $"{where}: a frequency lies outside [0, 1]");
            if (
                !(l.PerTokenUnitsMean >= 0 && l.PerTokenUnitsMean <= l.DFf)
                || l.UnitsEverActive < 0
                || l.UnitsEverActive > l.DFf
                || l.DeadUnits < 0
                || l.DeadUnits > l.DFf
            )
                throw Bad(path, $"{where}: a unit count lies outside 0..{l.DFf}");
        }
    }

    static void RequireHeader(
        string path,
        int seqLen,
        int batchSize,
        float threshold,
        long? maxTokens,
        IReadOnlyList<string>? shards
    )
    {
        if (seqLen < 1 || batchSize < 1)
            throw Bad(path, $"its windows are {batchSize} × {seqLen}");
        if (!float.IsFinite(threshold))
            throw Bad(path, $"its threshold is {threshold}");
        if (maxTokens is < 1)
            throw Bad(path, $"max_tokens is {maxTokens}");
        if (shards is null || shards.Count == 0)
            throw Bad(path, "it names no shard");
        try
        {
            foreach (string s in shards)
                AnalysisHeader.ParseShard(s);
        }
        catch (UserInputException e)
        {
            throw Bad(path, e.Message.TrimEnd('.'));
        }
    }

    static void RequireLength(string path, string where, string field, long[]? values, int length)
    {
        if (values is null || values.Length != length)
            throw Bad(path, $"{where}: {field} holds {values?.Length ?? 0} values, not {length}");
    }

    static Int128 Sum(string path, string where, string field, long[] values)
    {
        Int128 sum = 0;
        foreach (long v in values)
        {
            if (v < 0)
                throw Bad(path, $"{where}: {field} holds a negative count ({v})");
            sum += v;
        }
        return sum;
    }

    static UserInputException Bad(string path, string what) =>
        new(
            $"{path} is not what an analysis writes ({what}); it was edited or corrupted: re-run analyze (or merge) to write it again."
        );
}
