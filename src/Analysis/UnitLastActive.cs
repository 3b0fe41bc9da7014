namespace Sparsity.Analysis;

/// <summary>
/// For each hidden unit of a layer, the last training step on which it was active on any training
/// token (−1: never seen active). A unit is dead from step s when it is inactive on every tracked
/// token from s to the end of the run (Wild &amp; Anderson §4.2), so its death step is last + 1.
/// Merging takes the later step per unit: associative, like the counts.
/// </summary>
public sealed class UnitLastActive
{
    readonly long[] _lastActiveStep;

    /// <summary>Creates a tracker for <paramref name="dFf"/> units, none seen active yet.</summary>
    public UnitLastActive(int dFf)
    {
        _lastActiveStep = new long[dFf];
        Array.Fill(_lastActiveStep, -1L);
    }

    /// <summary>Units tracked.</summary>
    public int DFf => _lastActiveStep.Length;

    /// <summary>Last step each unit was active (−1: never).</summary>
    public ReadOnlySpan<long> LastActiveStep => _lastActiveStep;

    /// <summary>Records a step: <paramref name="tokensPerUnit"/> holds each unit's active-token count on it.</summary>
    public void Observe(long step, ReadOnlySpan<long> tokensPerUnit)
    {
        if (tokensPerUnit.Length != DFf)
            throw new ArgumentException($"Expected {DFf} per-unit counts, got {tokensPerUnit.Length}.");
        for (int i = 0; i < DFf; i++)
            if (tokensPerUnit[i] > 0 && step > _lastActiveStep[i])
                _lastActiveStep[i] = step;
    }

    /// <summary>Keeps the later step per unit.</summary>
    public void Merge(UnitLastActive other)
    {
        if (other.DFf != DFf)
            throw new ArgumentException($"Cannot merge {other.DFf} units into {DFf}.");
        for (int i = 0; i < DFf; i++)
            _lastActiveStep[i] = Math.Max(_lastActiveStep[i], other._lastActiveStep[i]);
    }

    /// <summary>
    /// Death step of each unit for a run whose last tracked step is <paramref name="lastStep"/>:
    /// the first step from which it never fired again, or null when it fired on the last step.
    /// A unit never seen active has death step 0.
    /// </summary>
    public long?[] DeathSteps(long lastStep)
    {
        var death = new long?[DFf];
        for (int i = 0; i < DFf; i++)
            death[i] = _lastActiveStep[i] >= lastStep ? null : _lastActiveStep[i] + 1;
        return death;
    }

    /// <summary>Units not active on any step after <paramref name="step"/> − 1, i.e. unused since
    /// <paramref name="step"/>.</summary>
    public bool[] UnusedSince(long step)
    {
        var unused = new bool[DFf];
        for (int i = 0; i < DFf; i++)
            unused[i] = _lastActiveStep[i] < step;
        return unused;
    }

    /// <summary>Restores a tracker from saved last-active steps.</summary>
    public static UnitLastActive FromSteps(ReadOnlySpan<long> lastActiveStep)
    {
        var tracker = new UnitLastActive(lastActiveStep.Length);
        lastActiveStep.CopyTo(tracker._lastActiveStep);
        return tracker;
    }
}
