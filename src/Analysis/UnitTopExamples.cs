namespace Sparsity.Analysis;

/// <summary>One stored activation of a unit: its value and where it happened (document index in the corpus, token offset in the document).</summary>
public readonly record struct TopExample(float Value, long Document, int Position)
{
    /// <summary>
    /// The order of top examples: larger value first, then earlier document, then earlier position. It is total (a corpus
    /// token has one (document, position)), so the top K of a union is unique and equals the top K of the parts' top Ks.
    /// </summary>
    public bool Precedes(TopExample other) =>
        Value > other.Value || (Value == other.Value && (Document < other.Document || (Document == other.Document && Position < other.Position)));
}

/// <summary>
/// The K largest activations of each unit of one layer over a corpus, with where they happened (Neuroscope's "top
/// activating examples"). Memory O(d_ff × K), whatever the corpus size; <see cref="Merge"/> is exact, associative and
/// commutative (<see cref="TopExample.Precedes"/>), so shards give the single run's examples bit for bit.
/// </summary>
public sealed class UnitTopExamples
{
    readonly TopExample[] _examples; // unit u's examples at [u·K, u·K + count[u]), best first
    readonly int[] _count;

    /// <summary>An empty accumulator for <paramref name="dFf"/> units keeping <paramref name="k"/> examples each.</summary>
    public UnitTopExamples(int dFf, int k)
    {
        if (dFf <= 0 || k <= 0) throw new ArgumentOutOfRangeException(nameof(k), "d_ff and K must be positive.");
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
        if (count == K && !example.Precedes(kept[K - 1])) return;
        int at = count == K ? K - 1 : count;
        while (at > 0 && example.Precedes(kept[at - 1])) { kept[at] = kept[at - 1]; at--; }
        kept[at] = example;
        if (count < K) _count[unit] = count + 1;
    }

    /// <summary>
    /// Adds a layer's activations over one batch, [batch·seq, d_ff] row-major: each real token's activations above
    /// <paramref name="threshold"/>; <paramref name="where"/> gives a row's (document, position).
    /// </summary>
    public void AddDense(ReadOnlySpan<float> activations, ReadOnlySpan<bool> realToken, Func<int, (long Document, int Position)> where, float threshold)
    {
        for (int row = 0; row < realToken.Length; row++)
        {
            if (!realToken[row]) continue;
            var values = activations.Slice(row * DFf, DFf);
            (long document, int position) = (-1, -1);
            for (int u = 0; u < DFf; u++)
            {
                if (!(values[u] > threshold)) continue;
                if (document < 0) (document, position) = where(row);
                Add(u, new TopExample(values[u], document, position));
            }
        }
    }

    /// <summary>
    /// Writes each unit's floor into <paramref name="floors"/>: only an activation above it can still enter the unit's top K
    /// (the threshold while fewer than K are kept, then the largest float below the K-th best, since an equal value of
    /// another token may precede it). The K-th best only rises, so an older floor is lower and admits a superset.
    /// </summary>
    public void WriteFloors(Span<float> floors, float threshold)
    {
        for (int u = 0; u < DFf; u++)
            floors[u] = _count[u] < K ? threshold : MathF.BitDecrement(_examples[u * K + K - 1].Value);
    }

    /// <summary>Adds another accumulator of the same layer and K.</summary>
    public void Merge(UnitTopExamples other)
    {
        if (other.DFf != DFf || other.K != K) throw new ArgumentException($"Cannot merge top examples of {other.DFf} units × {other.K} into {DFf} × {K}.", nameof(other));
        for (int u = 0; u < DFf; u++)
            foreach (var e in other.Of(u)) Add(u, e);
    }
}
