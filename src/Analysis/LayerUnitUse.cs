namespace Sparsity.Analysis;

/// <summary>
/// How one MLP layer uses its hidden units, as exact integer counts (definitions in README):
/// per-token, per-sequence and per-batch unit use as histograms, and per-unit active-token counts.
/// Counts add, so <see cref="Merge"/> is associative and commutative: one batch, one shard and many
/// machines give the same statistics. A unit is active on a token when its activation is strictly
/// above the threshold (0 for ReLU).
/// </summary>
public sealed class LayerUnitUse
{
    readonly long[] _tokensPerUnit;
    readonly long[] _unitsPerTokenHistogram;
    readonly long[] _unitsPerSequenceHistogram;
    readonly long[] _unitsPerBatchHistogram;

    /// <summary>Creates an empty accumulator for a layer of <paramref name="dFf"/> hidden units.</summary>
    public LayerUnitUse(int dFf)
    {
        if (dFf <= 0)
            throw new ArgumentOutOfRangeException(nameof(dFf), "A layer needs at least one hidden unit.");
        DFf = dFf;
        _tokensPerUnit = new long[dFf];
        _unitsPerTokenHistogram = new long[dFf + 1];
        _unitsPerSequenceHistogram = new long[dFf + 1];
        _unitsPerBatchHistogram = new long[dFf + 1];
    }

    /// <summary>Hidden units in the layer (d_ff).</summary>
    public int DFf { get; }

    /// <summary>Tokens counted (padding excluded).</summary>
    public long Tokens => Sum(_unitsPerTokenHistogram);

    /// <summary>Sequences counted (sequences with no real token excluded).</summary>
    public long Sequences => Sum(_unitsPerSequenceHistogram);

    /// <summary>Batches counted.</summary>
    public long Batches => Sum(_unitsPerBatchHistogram);

    /// <summary>Per unit: tokens on which it was active.</summary>
    public ReadOnlySpan<long> TokensPerUnit => _tokensPerUnit;

    /// <summary>Bin c: tokens on which exactly c units were active.</summary>
    public ReadOnlySpan<long> UnitsPerTokenHistogram => _unitsPerTokenHistogram;

    /// <summary>Bin c: sequences in which exactly c units were active on at least one token.</summary>
    public ReadOnlySpan<long> UnitsPerSequenceHistogram => _unitsPerSequenceHistogram;

    /// <summary>Bin c: batches in which exactly c units were active on at least one token.</summary>
    public ReadOnlySpan<long> UnitsPerBatchHistogram => _unitsPerBatchHistogram;

    /// <summary>
    /// Adds one batch already reduced to counts (by TorchSharp or an ONNX statistics graph):
    /// active units on each real token, distinct active units of each sequence, and the tokens of
    /// the batch each unit was active on. The batch's distinct units are those with a nonzero count.
    /// </summary>
    public void AddBatch(
        ReadOnlySpan<int> unitsPerToken,
        ReadOnlySpan<int> unitsPerSequence,
        ReadOnlySpan<long> tokensPerUnit
    )
    {
        if (tokensPerUnit.Length != DFf)
            throw new ArgumentException(
                $"Expected {DFf} per-unit counts, got {tokensPerUnit.Length}.",
                nameof(tokensPerUnit)
            );
        foreach (int c in unitsPerToken)
            _unitsPerTokenHistogram[CheckUnits(c)]++;
        foreach (int c in unitsPerSequence)
            _unitsPerSequenceHistogram[CheckUnits(c)]++;
        int batchUnits = 0;
        for (int i = 0; i < DFf; i++)
        {
            _tokensPerUnit[i] += tokensPerUnit[i];
            if (tokensPerUnit[i] > 0)
                batchUnits++;
        }
        _unitsPerBatchHistogram[batchUnits]++;
    }

    /// <summary>
    /// Adds one batch of in-graph counts over [batch, seqLen] positions, padding included, as an ONNX statistics graph
    /// returns them: active units per position, distinct active units per window, tokens per unit (real tokens only).
    /// Padded positions and windows without a real token count in no statistic. <paramref name="scratch"/> is reused.
    /// </summary>
    public void AddCounted(
        ReadOnlySpan<bool> realToken,
        int batch,
        int seqLen,
        ReadOnlySpan<long> unitsPerPosition,
        ReadOnlySpan<long> unitsPerWindow,
        ReadOnlySpan<long> tokensPerUnit,
        CountedScratch scratch
    )
    {
        scratch.UnitsPerToken.Clear();
        scratch.UnitsPerSequence.Clear();
        for (int s = 0; s < batch; s++)
        {
            bool anyReal = false;
            for (int p = s * seqLen; p < (s + 1) * seqLen; p++)
                if (realToken[p])
                {
                    scratch.UnitsPerToken.Add((int)unitsPerPosition[p]);
                    anyReal = true;
                }
            if (anyReal)
                scratch.UnitsPerSequence.Add((int)unitsPerWindow[s]);
        }
        AddBatch(
            System.Runtime.InteropServices.CollectionsMarshal.AsSpan(scratch.UnitsPerToken),
            System.Runtime.InteropServices.CollectionsMarshal.AsSpan(scratch.UnitsPerSequence),
            tokensPerUnit
        );
    }

    /// <summary>
    /// Adds one batch of dense activations laid out [batch, seqLen, d_ff] (a flattened
    /// [batch·seqLen, d_ff] tensor has the same memory). <paramref name="realToken"/> is
    /// [batch, seqLen], true for real tokens; empty means every position is real. Padded positions
    /// count in no statistic; a sequence without real tokens is not a sequence.
    /// </summary>
    public void AddDense(
        ReadOnlySpan<float> activations,
        int batch,
        int seqLen,
        ReadOnlySpan<bool> realToken,
        float threshold = 0f
    )
    {
        if (activations.Length != (long)batch * seqLen * DFf)
            throw new ArgumentException(
                $"Activations hold {activations.Length} values; [{batch}, {seqLen}, {DFf}] needs {(long)batch * seqLen * DFf}."
            );
        if (!realToken.IsEmpty && realToken.Length != batch * seqLen)
            throw new ArgumentException(
                $"The token mask holds {realToken.Length} values; [{batch}, {seqLen}] needs {batch * seqLen}."
            );

        var batchTokensPerUnit = new int[DFf]; // this batch's counts; added to the long totals once per batch
        var activeInSequence = new int[DFf]; // 0, or −1 (all bits) once the unit fired in the current sequence
        var unitsPerToken = new List<int>(batch * seqLen);
        var unitsPerSequence = new List<int>(batch);
        for (int b = 0; b < batch; b++)
        {
            Array.Clear(activeInSequence);
            int realTokens = 0;
            for (int t = 0; t < seqLen; t++)
            {
                int position = b * seqLen + t;
                if (!realToken.IsEmpty && !realToken[position])
                    continue;
                realTokens++;
                unitsPerToken.Add(
                    CountActive(activations.Slice(position * DFf, DFf), threshold, batchTokensPerUnit, activeInSequence)
                );
            }
            if (realTokens > 0)
                unitsPerSequence.Add(CountNonZero(activeInSequence));
        }
        var tokensPerUnit = new long[DFf];
        for (int i = 0; i < DFf; i++)
            tokensPerUnit[i] = batchTokensPerUnit[i];
        AddBatch(
            System.Runtime.InteropServices.CollectionsMarshal.AsSpan(unitsPerToken),
            System.Runtime.InteropServices.CollectionsMarshal.AsSpan(unitsPerSequence),
            tokensPerUnit
        );
    }

    // One token: SIMD compare against the threshold; a true lane is −1, so subtracting it counts and OR-ing it flags.
    static int CountActive(
        ReadOnlySpan<float> row,
        float threshold,
        Span<int> tokensPerUnit,
        Span<int> activeInSequence
    )
    {
        int width = System.Numerics.Vector<float>.Count,
            i = 0;
        var limit = new System.Numerics.Vector<float>(threshold);
        var active = System.Numerics.Vector<int>.Zero;
        for (; i <= row.Length - width; i += width)
        {
            var fired = System.Numerics.Vector.GreaterThan(
                new System.Numerics.Vector<float>(row.Slice(i, width)),
                limit
            );
            active -= fired;
            (new System.Numerics.Vector<int>(tokensPerUnit.Slice(i, width)) - fired).CopyTo(
                tokensPerUnit.Slice(i, width)
            );
            (new System.Numerics.Vector<int>(activeInSequence.Slice(i, width)) | fired).CopyTo(
                activeInSequence.Slice(i, width)
            );
        }
        int count = System.Numerics.Vector.Sum(active);
        for (; i < row.Length; i++)
        {
            if (!(row[i] > threshold))
                continue;
            count++;
            tokensPerUnit[i]++;
            activeInSequence[i] = -1;
        }
        return count;
    }

    static int CountNonZero(ReadOnlySpan<int> flags)
    {
        int n = 0;
        foreach (int f in flags)
            if (f != 0)
                n++;
        return n;
    }

    /// <summary>Adds another accumulator's counts to this one (same d_ff).</summary>
    public void Merge(LayerUnitUse other)
    {
        if (other.DFf != DFf)
            throw new ArgumentException($"Cannot merge a layer of {other.DFf} units into one of {DFf}.");
        AddInto(_tokensPerUnit, other._tokensPerUnit);
        AddInto(_unitsPerTokenHistogram, other._unitsPerTokenHistogram);
        AddInto(_unitsPerSequenceHistogram, other._unitsPerSequenceHistogram);
        AddInto(_unitsPerBatchHistogram, other._unitsPerBatchHistogram);
    }

    /// <summary>Per-token hidden unit use: active units per real token.</summary>
    public UseSummary PerTokenUnitUse => UseSummary.FromHistogram(_unitsPerTokenHistogram);

    /// <summary>Per-sequence hidden unit use: units active on at least one token of a sequence.</summary>
    public UseSummary PerSequenceUnitUse => UseSummary.FromHistogram(_unitsPerSequenceHistogram);

    /// <summary>Per-batch hidden unit use: units active anywhere in a batch (depends on batch size).</summary>
    public UseSummary PerBatchUnitUse => UseSummary.FromHistogram(_unitsPerBatchHistogram);

    /// <summary>Mean fraction of units active per token (Li et al.'s nonzero fraction); NaN before any token.</summary>
    public double NonzeroFraction => PerTokenUnitUse.Mean / DFf;

    /// <summary>Down-projection FLOPs saved by skipping inactive units: 1 − s/d_ff.</summary>
    public double DownProjectionFlopReduction => 1 - NonzeroFraction;

    /// <summary>Units active on at least one counted token.</summary>
    public int UnitsEverActive
    {
        get
        {
            int n = 0;
            foreach (long c in _tokensPerUnit)
                if (c > 0)
                    n++;
            return n;
        }
    }

    /// <summary>Units never active on the counted tokens (dead on this corpus).</summary>
    public int DeadUnits => DFf - UnitsEverActive;

    /// <summary>Per unit: fraction of counted tokens on which it was active (all NaN before any token).</summary>
    public double[] UnitActivationFrequency()
    {
        long tokens = Tokens;
        var frequency = new double[DFf];
        for (int i = 0; i < DFf; i++)
            frequency[i] = tokens == 0 ? double.NaN : (double)_tokensPerUnit[i] / tokens;
        return frequency;
    }

    /// <summary>Rebuilds an accumulator from saved counts (the inverse of the four span properties).</summary>
    public static LayerUnitUse FromCounts(
        ReadOnlySpan<long> tokensPerUnit,
        ReadOnlySpan<long> unitsPerTokenHistogram,
        ReadOnlySpan<long> unitsPerSequenceHistogram,
        ReadOnlySpan<long> unitsPerBatchHistogram
    )
    {
        var use = new LayerUnitUse(tokensPerUnit.Length);
        if (
            unitsPerTokenHistogram.Length != use.DFf + 1
            || unitsPerSequenceHistogram.Length != use.DFf + 1
            || unitsPerBatchHistogram.Length != use.DFf + 1
        )
            throw new ArgumentException($"Histograms of a {use.DFf}-unit layer need {use.DFf + 1} bins.");
        tokensPerUnit.CopyTo(use._tokensPerUnit);
        unitsPerTokenHistogram.CopyTo(use._unitsPerTokenHistogram);
        unitsPerSequenceHistogram.CopyTo(use._unitsPerSequenceHistogram);
        unitsPerBatchHistogram.CopyTo(use._unitsPerBatchHistogram);
        return use;
    }

    int CheckUnits(int units) =>
        (uint)units <= (uint)DFf
            ? units
            : throw new ArgumentOutOfRangeException(nameof(units), $"{units} active units in a layer of {DFf}.");

    static long Sum(ReadOnlySpan<long> values)
    {
        long s = 0;
        foreach (long v in values)
            s += v;
        return s;
    }

    static void AddInto(long[] target, long[] source)
    {
        for (int i = 0; i < target.Length; i++)
            target[i] += source[i];
    }
}

/// <summary>Reused lists for <see cref="LayerUnitUse.AddCounted"/> (no allocation per batch); one per counting
/// thread.</summary>
public sealed class CountedScratch
{
    internal readonly List<int> UnitsPerToken = [];
    internal readonly List<int> UnitsPerSequence = [];
}
