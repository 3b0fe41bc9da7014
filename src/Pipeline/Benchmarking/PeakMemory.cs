using System.Diagnostics;

namespace Sparsity.Pipeline.Benchmarking;

/// <summary>Peak resident memory of a child run of this tool, read from /proc (VmHWM is the kernel's high-water
/// mark).</summary>
public static class PeakMemory
{
    /// <summary>Runs <c>relu-sparsity ARGS</c> as a child process; returns its peak RSS in bytes and its wall
    /// time.</summary>
    public static (long PeakBytes, TimeSpan Elapsed) OfCommand(IEnumerable<string> args)
    {
        // The relu-sparsity beside this library: run as its own executable, or through dotnet (tests, `dotnet
        // relu-sparsity.dll`).
        string host = Environment.ProcessPath!,
            tool = Path.Combine(AppContext.BaseDirectory, "relu-sparsity.dll");
        bool own = Path.GetFileNameWithoutExtension(host) == "relu-sparsity";
        if (!own && !File.Exists(tool))
            throw new InvalidOperationException(
                $"relu-sparsity.dll is not in {AppContext.BaseDirectory}: the memory runs start the command line as a child process."
            );
        var start = new ProcessStartInfo(own || Path.GetFileNameWithoutExtension(host) == "dotnet" ? host : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (!own)
            start.ArgumentList.Add(tool);
        foreach (string a in args)
            start.ArgumentList.Add(a);
        var clock = Stopwatch.StartNew();
        using var child = Process.Start(start)!;
        var stdout = child.StandardOutput.ReadToEndAsync();
        var stderr = child.StandardError.ReadToEndAsync();
        long peak = 0;
        // VmHWM only grows, so the last reading before exit is the peak up to a few milliseconds.
        while (!child.WaitForExit(20))
            peak = Math.Max(peak, HighWaterMark(child.Id));
        if (child.ExitCode != 0)
            throw new InvalidOperationException(
                $"relu-sparsity {string.Join(' ', args)} failed: {stderr.Result.Trim()}"
            );
        _ = stdout.Result;
        return (peak, clock.Elapsed);
    }

    static long HighWaterMark(int pid)
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmHWM:"))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { } // exited between the check and the read
        return 0;
    }
}
