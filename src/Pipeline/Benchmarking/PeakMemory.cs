using System.Diagnostics;

namespace Sparsity.Pipeline.Benchmarking;

/// <summary>Peak resident memory of a child run of this tool, read from /proc (VmHWM is the kernel's high-water mark).</summary>
public static class PeakMemory
{
    /// <summary>Runs <c>relu-sparsity ARGS</c> as a child process; returns its peak RSS in bytes and its wall time.</summary>
    public static (long PeakBytes, TimeSpan Elapsed) OfCommand(IEnumerable<string> args)
    {
        string self = typeof(PeakMemory).Assembly.Location;
        string host = Environment.ProcessPath!;
        var start = new ProcessStartInfo(host) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(host) == "dotnet") start.ArgumentList.Add(self);
        foreach (string a in args) start.ArgumentList.Add(a);
        var clock = Stopwatch.StartNew();
        using var child = Process.Start(start)!;
        var stdout = child.StandardOutput.ReadToEndAsync();
        var stderr = child.StandardError.ReadToEndAsync();
        long peak = 0;
        // VmHWM only grows, so the last reading before exit is the peak up to a few milliseconds.
        while (!child.WaitForExit(20)) peak = Math.Max(peak, HighWaterMark(child.Id));
        if (child.ExitCode != 0) throw new InvalidOperationException($"relu-sparsity {string.Join(' ', args)} failed: {stderr.Result.Trim()}");
        _ = stdout.Result;
        return (peak, clock.Elapsed);
    }

    static long HighWaterMark(int pid)
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmHWM:")) return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { } // exited between the check and the read
        return 0;
    }
}
