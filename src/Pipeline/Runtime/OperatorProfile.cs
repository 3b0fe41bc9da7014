using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Sparsity.Pipeline.Runtime;

/// <summary>One operator type's share of a profiled run: kernel milliseconds per run, share of the kernels' sum, nodes,
/// where they ran.</summary>
public sealed record OperatorTime(string OpType, double MsPerRun, double Share, int Nodes, string Providers);

/// <summary>
/// Where a run's time goes per operator type, from ONNX Runtime's profiler (<c>analyze --profile</c>): the steady-state
/// runs after the warm-up ones, kernel time per op type, the nodes placed off the GPU and the copies between host and
/// device. ONNX Runtime's CUDA build without CUPTI times a kernel by its launch, not its run: when the kernels' sum is
/// far below the wall time of a run, <see cref="LaunchTimed"/> says so (run under CUDA_LAUNCH_BLOCKING=1 to attribute
/// it).
/// </summary>
public sealed record OperatorProfile(
    int Runs,
    double WallMsPerRun,
    double KernelMsPerRun,
    IReadOnlyList<OperatorTime> Operators,
    IReadOnlyList<string> OffDevice,
    IReadOnlyList<string> Copies,
    bool OnGpu,
    bool LaunchBlocking
)
{
    /// <summary>Kernel times that cannot be run times: their sum is under half the wall time on a GPU, and launches did
    /// not block.</summary>
    public bool LaunchTimed => OnGpu && !LaunchBlocking && KernelMsPerRun < 0.5 * WallMsPerRun;

    /// <summary>
    /// Reads ONNX Runtime's profile JSON at <paramref name="path"/>, skipping the first <paramref name="warmUp"/> runs;
    /// <paramref name="onGpu"/>: the session ran on CUDA, so nodes on the CPU provider are off the device.
    /// </summary>
    public static OperatorProfile Read(string path, int warmUp, bool onGpu)
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(path));
        var events = json.RootElement.EnumerateArray().ToList();
        var runs = events
            .Where(e => Str(e, "cat") == "Session" && Str(e, "name") == "model_run")
            .Select(e =>
                (
                    Start: e.GetProperty("ts").GetDouble(),
                    End: e.GetProperty("ts").GetDouble() + e.GetProperty("dur").GetDouble()
                )
            )
            .OrderBy(r => r.Start)
            .Skip(warmUp)
            .ToList();
        if (runs.Count == 0)
            throw new InvalidOperationException($"{path} holds no run after the {warmUp} warm-up runs.");
        var perType = new Dictionary<string, (double Us, HashSet<string> Nodes, HashSet<string> Providers)>();
        var offDevice = new SortedSet<string>(StringComparer.Ordinal);
        var copies = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var e in events)
        {
            string name = Str(e, "name") ?? "";
            if (Str(e, "cat") != "Node" || !name.EndsWith("_kernel_time", StringComparison.Ordinal))
                continue;
            double ts = e.GetProperty("ts").GetDouble();
            if (!runs.Any(r => ts >= r.Start && ts <= r.End))
                continue;
            var args = e.GetProperty("args");
            string op = Str(args, "op_name") ?? "?",
                provider = Str(args, "provider") ?? "?";
            string node = name[..^"_kernel_time".Length];
            if (!perType.TryGetValue(op, out var entry))
                perType[op] = entry = (0, [], []);
            perType[op] = (entry.Us + e.GetProperty("dur").GetDouble(), entry.Nodes, entry.Providers);
            entry.Nodes.Add(node);
            entry.Providers.Add(provider.Replace("ExecutionProvider", "", StringComparison.Ordinal));
            if (onGpu && provider == "CPUExecutionProvider")
                offDevice.Add($"{op} '{node}'");
            if (op.StartsWith("Memcpy", StringComparison.Ordinal))
                copies.Add($"{op} '{node}'");
        }
        double kernelUs = perType.Values.Sum(v => v.Us);
        var operators = perType
            .OrderByDescending(p => p.Value.Us)
            .Select(p => new OperatorTime(
                p.Key,
                p.Value.Us / 1000 / runs.Count,
                kernelUs > 0 ? p.Value.Us / kernelUs : 0,
                p.Value.Nodes.Count,
                string.Join("+", p.Value.Providers.Order())
            ))
            .ToList();
        return new OperatorProfile(
            runs.Count,
            runs.Average(r => r.End - r.Start) / 1000,
            kernelUs / 1000 / runs.Count,
            operators,
            [.. offDevice],
            [.. copies],
            onGpu,
            Environment.GetEnvironmentVariable("CUDA_LAUNCH_BLOCKING") == "1"
        );
    }

    static string? Str(JsonElement e, string property) =>
        e.ValueKind == JsonValueKind.Object
        && e.TryGetProperty(property, out var v)
        && v.ValueKind == JsonValueKind.String
            ? v.GetString()
            : null;

    /// <summary>The table as CSV: op_type, ms_per_run, share, nodes, providers.</summary>
    public string ToCsv()
    {
        var csv = new StringBuilder("op_type,ms_per_run,share,nodes,providers\n");
        foreach (var o in Operators)
            csv.Append(
                CultureInfo.InvariantCulture,
                $"{o.OpType},{o.MsPerRun:0.0000},{o.Share:0.0000},{o.Nodes},{o.Providers}\n"
            );
        return csv.ToString();
    }

    /// <summary>The lines <c>analyze --profile</c> prints.</summary>
    public IEnumerable<string> Describe()
    {
        var inv = CultureInfo.InvariantCulture;
        yield return string.Create(
            inv,
            $"Profile of {Runs} runs after the warm-up: {WallMsPerRun:0.00} ms per run, kernels {KernelMsPerRun:0.00} ms"
        )
            + (
                LaunchBlocking
                    ? " (CUDA_LAUNCH_BLOCKING=1: each launch waited for its kernel; the run is slower than unprofiled)."
                : LaunchTimed
                    ? " — these are launch times, not run times (this ONNX Runtime build times CUDA kernels by their launch): re-run under CUDA_LAUNCH_BLOCKING=1 to attribute the time."
                : "."
            );
        yield return "  op type                         ms/run   share  nodes  provider";
        foreach (var o in Operators.Take(25))
            yield return string.Create(
                inv,
                $"  {o.OpType, -30} {o.MsPerRun, 7:0.000} {100 * o.Share, 6:0.0} % {o.Nodes, 6}  {o.Providers}"
            );
        if (Operators.Count > 25)
            yield return $"  … {Operators.Count - 25} more op types in profile.csv";
        if (OnGpu)
            yield return OffDevice.Count == 0
                ? "  Every node ran on the GPU."
                : $"  Off the GPU ({OffDevice.Count}): {string.Join(", ", OffDevice.Take(12))}{(OffDevice.Count > 12 ? ", …" : "")}";
        yield return Copies.Count == 0
            ? "  No copies between host and device inside the run."
            : $"  Copies ({Copies.Count}): {string.Join(", ", Copies.Take(12))}{(Copies.Count > 12 ? ", …" : "")}";
    }
}
