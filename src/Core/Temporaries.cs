using System.Diagnostics;
using System.Globalization;

namespace Sparsity.Core;

/// <summary>
/// Names of the temporary siblings outputs are written into (<c>OUT.partial-TAG</c>, <c>OUT.old-TAG</c>,
/// <c>OUT.tmp-TAG</c>), tagged with this host, process id and process start time, so a later run can tell a
/// leftover of a killed process from a live run's file. Only this host's leftovers are ever removed: on a shared
/// filesystem (Slurm) other nodes' tags belong to processes this host cannot see.
/// </summary>
public static class Temporaries
{
    static readonly string[] Kinds = ["partial", "old", "tmp"];

    /// <summary>This process's tag: host, process id and start time (clock ticks since boot on Linux).</summary>
    public static string Tag { get; } = $"{Host}~{Environment.ProcessId}~{StartOf(Environment.ProcessId)}";

    static string Host =>
        new(Environment.MachineName.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' ? c : '_').ToArray());

    /// <summary>The temporary sibling of <paramref name="fullPath"/> of kind partial, old or tmp for this
    /// process.</summary>
    public static string For(string fullPath, string kind) => $"{fullPath}.{kind}-{Tag}";

    /// <summary>
    /// Removes temporary siblings of <paramref name="fullPath"/> left by processes of this host that no longer run
    /// (killed with SIGKILL, power loss); live runs' and other hosts' are left alone.
    /// </summary>
    public static void RemoveStale(string fullPath)
    {
        string? dir = Path.GetDirectoryName(fullPath);
        if (dir == null || !Directory.Exists(dir))
            return;
        string name = Path.GetFileName(fullPath);
        foreach (string entry in Directory.EnumerateFileSystemEntries(dir, name + ".*-*"))
        {
            string suffix = Path.GetFileName(entry)[(name.Length + 1)..];
            int dash = suffix.IndexOf('-');
            if (dash < 0 || !Kinds.Contains(suffix[..dash]))
                continue;
            string[] tag = suffix[(dash + 1)..].Split('~');
            if (tag.Length != 3 || tag[0] != Host || !int.TryParse(tag[1], CultureInfo.InvariantCulture, out int pid))
                continue;
            if (StartOf(pid) == tag[2])
                continue; // that process still runs
            try
            {
                if (Directory.Exists(entry))
                    Directory.Delete(entry, recursive: true);
                else
                    File.Delete(entry);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // not ours to force; it stays
        }
    }

    // The start time of a process, or "" when it does not run: /proc/PID/stat field 22 on Linux, else the runtime's
    // view.
    static string StartOf(int pid)
    {
        if (OperatingSystem.IsLinux())
        {
            try
            {
                string stat = File.ReadAllText($"/proc/{pid}/stat");
                // The command name (field 2) may hold spaces and parentheses: fields after it follow the last ')'.
                string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                return fields[19];
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or IndexOutOfRangeException)
            {
                return "";
            }
        }
        try
        {
            using var process = Process.GetProcessById(pid);
            return process.StartTime.ToUniversalTime().Ticks.ToString(CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            return "";
        }
    }
}
