using System.Diagnostics;
using System.Text.Json;

namespace Sparsity.Pipeline.Benchmarking;

/// <summary>The PyTorch forward-hook reference of <c>bench</c>: a separate Python process
/// (bench/pytorch_hooks.py).</summary>
public static class PyTorchReference
{
    /// <summary>
    /// Runs the reference script on the same weights, ids and threads; adds its timings (hooks, bare forward) and its
    /// statistics to the lists. Returns a note when it was skipped or failed, null when it ran.
    /// </summary>
    public static string? Run(
        string python,
        string script,
        string ckpt,
        TokenBatches data,
        string work,
        int threads,
        int repeats,
        List<Timing> timings,
        List<Agreement> agreement,
        TextWriter output
    )
    {
        if (!File.Exists(script))
            return $"PyTorch reference skipped: {script} not found (run bench from the repository root).";
        string ids = Path.Combine(work, "batches.i64"),
            result = Path.Combine(work, "pytorch.json");
        data.Write(ids);
        var start = new ProcessStartInfo(python) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (
            string a in new[]
            {
                script,
                "--checkpoint",
                ckpt,
                "--batches",
                ids,
                "--count",
                $"{data.Batches.Count}",
                "--batch-size",
                $"{data.BatchSize}",
                "--seq-len",
                $"{data.SeqLen}",
                "--threads",
                $"{threads}",
                "--repeats",
                $"{repeats}",
                "--out",
                result,
            }
        )
            start.ArgumentList.Add(a);
        output.WriteLine($"PyTorch reference: {python} {script} …");
        try
        {
            using var p = Process.Start(start)!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
                return $"PyTorch reference failed ({python}): {err.Trim().Split('\n')[^1]}";
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return $"PyTorch reference skipped: cannot start {python} ({e.Message}).";
        }
        using var json = JsonDocument.Parse(File.ReadAllText(result));
        var root = json.RootElement;
        timings.Add(
            new Timing(
                "PyTorch hooks",
                $"Python {root.GetProperty("python").GetString()}, torch {root.GetProperty("torch").GetString()}: forward hooks on the ReLUs, counts in torch; pre-tokenized",
                root.GetProperty("seconds").EnumerateArray().Select(e => e.GetDouble()).ToArray(),
                data.Tokens
            )
        );
        timings.Add(
            new Timing(
                "PyTorch bare forward",
                "the same PyTorch model and weights without hooks (what the hooks cost)",
                root.GetProperty("bare_seconds").EnumerateArray().Select(e => e.GetDouble()).ToArray(),
                data.Tokens
            )
        );
        var layers = root.GetProperty("layers").EnumerateArray().ToList();
        agreement.Add(
            new Agreement(
                "PyTorch hooks",
                root.GetProperty("tokens").GetInt64(),
                layers.Select(l => l.GetProperty("active_pairs").GetInt64()).ToArray(),
                layers.Select(l => l.GetProperty("per_token_mean").GetDouble()).ToArray(),
                layers.Select(l => l.GetProperty("per_batch_mean").GetDouble()).ToArray()
            )
        );
        return null;
    }
}
