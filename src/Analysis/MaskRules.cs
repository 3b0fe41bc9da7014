namespace Sparsity.Analysis;

/// <summary>
/// Turns analysis statistics into a <see cref="UnitMask"/>. Every rule keeps at least one unit per
/// layer or refuses: a layer with no unit left would cut the residual stream's MLP path entirely.
/// </summary>
public static class MaskRules
{
    /// <summary>Keeps units active on at least one analysed token.</summary>
    public static UnitMask DeadOnly(SparsityStats stats) =>
        Build(stats, "dead units removed", l => Enumerable.Range(0, l.DFf).Where(u => l.UnitActivationCounts[u] > 0));

    /// <summary>Keeps units whose activation frequency is at least <paramref name="frequency"/>.</summary>
    public static UnitMask MinFrequency(SparsityStats stats, double frequency)
    {
        if (frequency is < 0 or > 1)
            throw new UserInputException($"--min-frequency must be in [0, 1]; got {frequency}.");
        return Build(stats, $"units with activation frequency ≥ {frequency} kept", l =>
            Enumerable.Range(0, l.DFf).Where(u => l.UnitActivationFrequency[u] >= frequency)
        );
    }

    /// <summary>Keeps the ⌈p·d_ff⌉ most active units of each layer (ties: lower index first).</summary>
    public static UnitMask KeepFraction(SparsityStats stats, double fraction)
    {
        if (fraction is <= 0 or > 1)
            throw new UserInputException($"--keep-fraction must be in (0, 1]; got {fraction}.");
        return Build(stats, $"the {fraction:P1} most active units of each layer kept", l =>
            MostActive(l).Take((int)Math.Ceiling(fraction * l.DFf))
        );
    }

    /// <summary>
    /// Removes the least active units across all layers (frequency ascending, then layer, then index)
    /// until a fraction <paramref name="reduction"/> of all MLP units is gone, keeping at least one per
    /// layer: the MLP FLOPs (up and down projections) fall by that fraction, spent where units are rarest.
    /// </summary>
    public static UnitMask FlopReduction(SparsityStats stats, double reduction)
    {
        if (reduction is < 0 or >= 1)
            throw new UserInputException($"--flop-reduction must be in [0, 1); got {reduction}.");
        long total = stats.Layers.Sum(l => (long)l.DFf);
        long toRemove = (long)Math.Round(reduction * total);
        var kept = stats.Layers.Select(l => l.DFf).ToArray();
        var removed = stats.Layers.Select(_ => new HashSet<int>()).ToArray();
        var order = stats
            .Layers.SelectMany(l =>
                Enumerable
                    .Range(0, l.DFf)
                    .Select(u => (Layer: l.Index, Unit: u, Frequency: l.UnitActivationFrequency[u]))
            )
            .OrderBy(x => x.Frequency)
            .ThenBy(x => x.Layer)
            .ThenBy(x => x.Unit);
        foreach (var (layer, unit, _) in order)
        {
            if (toRemove == 0)
                break;
            int position = stats.Layers.ToList().FindIndex(l => l.Index == layer);
            if (kept[position] == 1)
                continue;
            kept[position]--;
            removed[position].Add(unit);
            toRemove--;
        }
        var byLayer = stats.Layers.Select((l, i) => (l.Index, removed[i])).ToDictionary(p => p.Index, p => p.Item2);
        return Build(stats, $"least active units removed for a {reduction:P1} MLP FLOP reduction", l =>
            Enumerable.Range(0, l.DFf).Where(u => !byLayer[l.Index].Contains(u))
        );
    }

    static IEnumerable<int> MostActive(LayerStats l) =>
        Enumerable.Range(0, l.DFf).OrderByDescending(u => l.UnitActivationCounts[u]).ThenBy(u => u);

    static UnitMask Build(SparsityStats stats, string rule, Func<LayerStats, IEnumerable<int>> keep)
    {
        var layers = stats.Layers.Select(l => new LayerKeep(l.Index, l.DFf, keep(l).Order().ToArray())).ToList();
        var empty = layers.FirstOrDefault(l => l.Kept.Length == 0);
        if (empty != null)
            throw new UserInputException(
                $"The rule \"{rule}\" would remove every unit of layer {empty.Layer} (no unit qualifies on this corpus); choose a looser threshold."
            );
        return new UnitMask(
            rule,
            $"{stats.Model} on {stats.Corpus} ({stats.Tokens:N0} tokens, threshold {stats.Threshold})",
            layers
        );
    }
}
