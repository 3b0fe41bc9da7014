using Sparsity.Analysis;

namespace Sparsity.Pipeline.Streaming;

/// <summary>Merging as a library call: the exact counts of analysis shards added into one analysis folder.</summary>
public static class Shards
{
    /// <summary>
    /// Loads the shard folders, merges them (<c>SparsityCounts.Merge</c> refuses shards of other runs, repeated
    /// shards, and missing ones unless <paramref name="allowPartial"/>), and writes counts.json, stats.json and the
    /// CSVs into <paramref name="outDir"/>, with the top examples and histograms of runs with <c>--top-examples</c>.
    /// The result equals one run over all their batches, byte for byte in the example files.
    /// </summary>
    public static SparsityCounts Merge(IReadOnlyList<string> folders, bool allowPartial, string outDir)
    {
        UnitExamples? examples = null;
        IEnumerable<(string, SparsityCounts)> Parts()
        {
            foreach (string folder in folders) // one shard in memory at a time
            {
                var part = SparsityCounts.Load(folder);
                yield return (folder, part); // checked against the first before its examples are read
                if (part.Header.TopExamples == 0)
                    continue;
                var read = UnitExamples.Load(folder, part.Header.TopExamples, part.Layers.Select(l => l.DFf).ToList());
                if (examples == null)
                    examples = read;
                else
                    examples.Merge(read);
            }
        }
        var merged = SparsityCounts.Merge(Parts(), allowPartial);
        OutputFolder.Write(outDir, "merge", dir =>
        {
            examples?.Write(dir);
            merged.Write(dir);
        });
        return merged;
    }
}

/// <summary>Which shard i of n this process analyses, and where that came from (an explicit i/n, Slurm or
/// Kubernetes).</summary>
public sealed record ShardChoice(int Index, int Count, string Source)
{
    /// <summary>The environment variable a Kubernetes manifest sets to the number of shards (or pass
    /// --shard-count).</summary>
    public const string CountVariable = "RELU_SPARSITY_SHARD_COUNT";

    /// <summary>
    /// Parses <c>--shard</c>: <c>i/n</c>, or <c>auto</c> to take it from the scheduler: Slurm job arrays
    /// (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT) or Kubernetes Indexed Jobs
    /// (JOB_COMPLETION_INDEX, of <paramref name="count"/> or <see cref="CountVariable"/>).
    /// </summary>
    public static ShardChoice Parse(string spec, int? count, Func<string, string?> environment)
    {
        if (spec != "auto")
        {
            string[] parts = spec.Split('/');
            if (parts.Length != 2 || !int.TryParse(parts[0], out int i) || !int.TryParse(parts[1], out int n))
                throw new UserInputException($"--shard {spec}: use i/n (for example 0/4) or auto.");
            if (count != null)
                throw new UserInputException("--shard-count goes with --shard auto; with --shard i/n the count is n.");
            return new ShardChoice(i, n, "--shard");
        }
        if (environment("SLURM_ARRAY_TASK_ID") is string id)
        {
            int task = Int(id, "SLURM_ARRAY_TASK_ID"),
                min = Int(environment("SLURM_ARRAY_TASK_MIN") ?? "0", "SLURM_ARRAY_TASK_MIN");
            int n = Int(
                environment("SLURM_ARRAY_TASK_COUNT")
                    ?? throw new UserInputException(
                        "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (submit a job array: sbatch --array=0-N)."
                    ),
                "SLURM_ARRAY_TASK_COUNT"
            );
            if (count != null && count != n)
                throw new UserInputException($"--shard-count {count} disagrees with SLURM_ARRAY_TASK_COUNT={n}.");
            return Checked(
                task - min,
                n,
                $"Slurm (SLURM_ARRAY_TASK_ID={task}, SLURM_ARRAY_TASK_MIN={min}, SLURM_ARRAY_TASK_COUNT={n})"
            );
        }
        if (environment("JOB_COMPLETION_INDEX") is string index)
        {
            int n = count
                ?? (
                    environment(CountVariable) is string c
                        ? Int(c, CountVariable)
                        : throw new UserInputException(
                            $"--shard auto on Kubernetes: JOB_COMPLETION_INDEX is set, but not the number of shards: pass --shard-count N or set {CountVariable} (the Job's completions)."
                        )
                );
            return Checked(
                Int(index, "JOB_COMPLETION_INDEX"),
                n,
                $"Kubernetes (JOB_COMPLETION_INDEX={index}, {(count != null ? "--shard-count" : CountVariable)}={n})"
            );
        }
        throw new UserInputException(
            "--shard auto: no scheduler's shard variables are set (Slurm job arrays: SLURM_ARRAY_TASK_ID, _MIN, _COUNT; "
                + $"Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX with --shard-count or {CountVariable}); give --shard i/n."
        );
    }

    static ShardChoice Checked(int i, int n, string source) =>
        n >= 1 && i >= 0 && i < n
            ? new ShardChoice(i, n, source)
            : throw new UserInputException(
                $"--shard auto: shard {i} of {n} from {source} is out of range (0 ≤ i < n)."
            );

    static int Int(string value, string name) =>
        int.TryParse(value, out int v)
            ? v
            : throw new UserInputException($"--shard auto: {name}={value} is not an integer.");
}
