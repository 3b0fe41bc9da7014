namespace Sparsity.Analysis;

/// <summary>
/// Per unit of one layer, how many of its activations above the threshold fell in each power-of-two bin, over a fixed
/// sample of the corpus: the first window of every batch (binning every activation cost more than the model itself):
/// bin 0 holds (threshold, 2⁻¹⁰), bin j (1 ≤ j ≤ 20) holds [2^(j−11), 2^(j−10)), bin 21 holds [2¹⁰, ∞). Integer counts
/// that add, so shards merge exactly. The bin of a value is its binary exponent (<see cref="Bin"/>), the same on every
/// device.
/// </summary>
public sealed class ActivationHistogram
{
    /// <summary>Bins per unit.</summary>
    public const int Bins = 22;

    /// <summary>Binary exponent of bin 1's lower edge.</summary>
    public const int LowestExponent = -10;

    readonly long[] _counts; // [unit · Bins + bin]

    /// <summary>An empty histogram for <paramref name="dFf"/> units.</summary>
    public ActivationHistogram(int dFf)
    {
        if (dFf <= 0)
            throw new ArgumentOutOfRangeException(nameof(dFf), "A layer needs at least one hidden unit.");
        DFf = dFf;
        _counts = new long[(long)dFf * Bins];
    }

    /// <summary>Hidden units.</summary>
    public int DFf { get; }

    /// <summary>Unit <paramref name="unit"/>'s counts per bin.</summary>
    public ReadOnlySpan<long> Of(int unit) => _counts.AsSpan(unit * Bins, Bins);

    /// <summary>The bin of a positive value: floor(log₂ v) + 11, clamped to [0, 21], from the float's exponent
    /// (exact).</summary>
    public static int Bin(float value) => Math.Clamp(MathF.ILogB(value) - LowestExponent + 1, 0, Bins - 1);

    /// <summary>Lower edge of bin <paramref name="bin"/> (0 for bin 0: the threshold).</summary>
    public static double LowerEdge(int bin) => bin == 0 ? 0 : Math.Pow(2, bin - 1 + LowestExponent);

    /// <summary>Counts one activation of <paramref name="unit"/>.</summary>
    public void Add(int unit, float value) => _counts[unit * Bins + Bin(value)]++;

    /// <summary>Adds one batch's counts as a graph reduces them, [Bins, d_ff] row-major (bin-major).</summary>
    public void AddBinMajor(ReadOnlySpan<long> counts)
    {
        if (counts.Length != _counts.Length)
            throw new ArgumentException($"Expected {Bins} × {DFf} counts, got {counts.Length}.", nameof(counts));
        for (int b = 0; b < Bins; b++)
        for (int u = 0; u < DFf; u++)
            _counts[u * Bins + b] += counts[b * DFf + u];
    }

    /// <summary>
    /// Adds a layer's activations over one batch, [batch·seq, d_ff] row-major: those above <paramref name="threshold"/>
    /// of each real token of the batch's first window (its first <paramref name="seqLen"/> rows), the sample the graphs
    /// bin.
    /// </summary>
    public void AddDense(ReadOnlySpan<float> activations, ReadOnlySpan<bool> realToken, int seqLen, float threshold)
    {
        for (int row = 0; row < seqLen; row++)
        {
            if (!realToken[row])
                continue;
            var values = activations.Slice(row * DFf, DFf);
            for (int u = 0; u < DFf; u++)
                if (values[u] > threshold)
                    Add(u, values[u]);
        }
    }

    /// <summary>Sets unit <paramref name="unit"/>'s counts (reading a file).</summary>
    public void Set(int unit, ReadOnlySpan<long> counts) => counts.CopyTo(_counts.AsSpan(unit * Bins, Bins));

    /// <summary>Adds another histogram of the same layer.</summary>
    public void Merge(ActivationHistogram other)
    {
        if (other.DFf != DFf)
            throw new ArgumentException(
                $"Cannot merge a histogram of {other.DFf} units into one of {DFf}.",
                nameof(other)
            );
        for (int i = 0; i < _counts.Length; i++)
            _counts[i] += other._counts[i];
    }
}
