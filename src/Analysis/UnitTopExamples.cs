namespace Sparsity.Analysis;

/// <summary>
/// One of a unit's top windows: the unit's largest activation in the window (<paramref name="Value"/>), the window's
/// document index in the corpus and first token's offset there (<paramref name="WindowStart"/>), and the offset of the
/// token where that peak happened (<paramref name="Position"/>, the first if several tie).
/// </summary>
public readonly record struct TopExample(float Value, long Document, int WindowStart, int Position)
{
    /// <summary>
    /// The order of top windows: larger peak first, then earlier document, then earlier window. It is total (a window
    /// has one (document, start)), so the top K of a union is unique and equals the top K of the parts' top Ks.
    /// </summary>
    public bool Precedes(TopExample other) =>
        Value > other.Value
        || (
            Value == other.Value
            && (Document < other.Document || (Document == other.Document && WindowStart < other.WindowStart))
        );
}

/// <summary>
/// Each unit's top K windows of one layer over a corpus, as activation dashboards (SAELens, Neuronpedia) define top
/// examples: the K windows whose largest activation of the unit is highest, one example per window, with the peak's
/// value and position. Memory O(d_ff × K), whatever the corpus size; <see cref="Merge"/> is exact, associative and
/// commutative (<see cref="TopExample.Precedes"/>), so shards give the single run's examples bit for bit.
/// </summary>
public sealed class UnitTopExamples
{
    readonly TopExample[] _examples; // unit u's examples at [u·K, u·K + count[u]), best first
    readonly int[] _count;

    /// <summary>An empty accumulator for <paramref name="dFf"/> units keeping <paramref name="k"/> examples
    /// each.</summary>
    public UnitTopExamples(int dFf, int k)
    {
        if (dFf <= 0 || k <= 0)
            throw new ArgumentOutOfRangeException(nameof(k), "d_ff and K must be positive.");
        (DFf, K) = (dFf, k);
        _examples = new TopExample[(long)dFf * k];
        _count = new int[dFf];
    }

    /// <summary>Hidden units.</summary>
    public int DFf { get; }

    /// <summary>Examples kept per unit.</summary>
    public int K { get; }

    /// <summary>Unit <paramref name="unit"/>'s examples, best first (fewer than K when it fired fewer times).</summary>
    public ReadOnlySpan<TopExample> Of(int unit) => _examples.AsSpan(unit * K, _count[unit]);

    /// <summary>Offers one activation of <paramref name="unit"/>; kept if it is among the K best so far.</summary>
    public void Add(int unit, TopExample example)
    {
        int count = _count[unit];
        var kept = _examples.AsSpan(unit * K, K);
        if (count == K && !example.Precedes(kept[K - 1]))
            return;
        int at = count == K ? K - 1 : count;
        while (at > 0 && example.Precedes(kept[at - 1]))
        {
            kept[at] = kept[at - 1];
            at--;
        }
        kept[at] = example;
        if (count < K)
            _count[unit] = count + 1;
    }

    /// <summary>
    /// Adds a layer's activations over one batch of <paramref name="seqLen"/>-token windows, [batch·seq, d_ff]
    /// row-major: per window and unit, the largest activation above <paramref name="threshold"/> on a real token (the
    /// first if several tie); <paramref name="window"/> gives window b's (document, start).
    /// </summary>
    public void AddDense(
        ReadOnlySpan<float> activations,
        ReadOnlySpan<bool> realToken,
        int seqLen,
        Func<int, (long Document, int Start)> window,
        float threshold
    )
    {
        var peak = new float[DFf];
        var at = new int[DFf];
        for (int b = 0; b < realToken.Length / seqLen; b++)
        {
            peak.AsSpan().Fill(threshold);
            at.AsSpan().Fill(-1);
            for (int t = 0; t < seqLen; t++)
            {
                if (!realToken[b * seqLen + t])
                    continue;
                var values = activations.Slice((b * seqLen + t) * DFf, DFf);
                for (int u = 0; u < DFf; u++)
                    if (values[u] > peak[u])
                        (peak[u], at[u]) = (values[u], t);
            }
            var (document, start) = window(b);
            for (int u = 0; u < DFf; u++)
                if (at[u] >= 0)
                    Add(u, new TopExample(peak[u], document, start, start + at[u]));
        }
    }

    /// <summary>
    /// Adds one batch's top windows as the analysis graph returns them ([d_ff, k] row-major: each unit's k best windows
    /// of the batch by peak, best first, with the peaks and their positions in the window); only peaks above
    /// <paramref name="threshold"/> count. A unit's scan stops at the first window that cannot enter its top K, unless
    /// the windows are not <paramref name="sorted"/> (every window of the batch, in batch order).
    /// </summary>
    public void AddWindows(
        ReadOnlySpan<float> peaks,
        ReadOnlySpan<long> windows,
        ReadOnlySpan<long> positions,
        int k,
        Func<int, (long Document, int Start)> window,
        float threshold,
        bool sorted = true
    )
    {
        for (int u = 0; u < DFf; u++)
        for (int j = u * k; j < (u + 1) * k; j++)
        {
            if (!(peaks[j] > threshold) || (_count[u] == K && peaks[j] < _examples[u * K + K - 1].Value))
            {
                if (sorted)
                    break; // the rest are lower still
                continue;
            }
            var (document, start) = window((int)windows[j]);
            Add(u, new TopExample(peaks[j], document, start, start + (int)positions[j]));
        }
    }

    /// <summary>Adds another accumulator of the same layer and K.</summary>
    public void Merge(UnitTopExamples other)
    {
        if (other.DFf != DFf || other.K != K)
            throw new ArgumentException(
                $"Cannot merge top examples of {other.DFf} units × {other.K} into {DFf} × {K}.",
                nameof(other)
            );
        for (int u = 0; u < DFf; u++)
            foreach (var e in other.Of(u))
                Add(u, e);
    }
}
