using Sparsity.Analysis;

namespace Sparsity.Pipeline.Streaming;

/// <summary>Merging as a library call: the exact counts of analysis shards added into one analysis folder.</summary>
public static class Shards
{
    /// <summary>
    /// Loads the shard folders, merges them (<see cref="SparsityCounts.Merge"/> refuses shards of other runs, repeated
    /// shards, and missing ones unless <paramref name="allowPartial"/>), and writes counts.json, stats.json and the CSVs
    /// into <paramref name="outDir"/>. The result equals one run over all their batches.
    /// </summary>
    public static SparsityCounts Merge(IReadOnlyList<string> folders, bool allowPartial, string outDir)
    {
        var merged = SparsityCounts.Merge(folders.Select(SparsityCounts.Load).ToList(), allowPartial, folders);
        OutputFolder.Write(outDir, "merge", merged.Write);
        return merged;
    }
}
