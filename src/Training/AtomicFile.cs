namespace Sparsity.Training;

/// <summary>Writes files under a temporary name and renames at the end, so no half-written output is ever left.</summary>
public static class AtomicFile
{
    /// <summary>Runs <paramref name="write"/> on a temporary path beside <paramref name="path"/>, then moves it into place.</summary>
    public static void Write(string path, Action<string> write)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string temp = full + ".tmp-" + Environment.ProcessId;
        try
        {
            write(temp);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>
    /// Fills a folder under the temporary name <c>path.partial</c>, then replaces <paramref name="path"/> with it,
    /// so an interrupted run never leaves a folder that looks complete.
    /// </summary>
    public static void WriteDirectory(string path, Action<string> write)
    {
        string partial = Path.GetFullPath(path).TrimEnd('/', '\\') + ".partial";
        if (Directory.Exists(partial)) Directory.Delete(partial, recursive: true);
        Directory.CreateDirectory(partial);
        try
        {
            write(partial);
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            Directory.Move(partial, path);
        }
        catch
        {
            if (Directory.Exists(partial)) Directory.Delete(partial, recursive: true);
            throw;
        }
    }

    /// <summary>Writes text atomically.</summary>
    public static void WriteAllText(string path, string text) => Write(path, t => File.WriteAllText(t, text));

    /// <summary>Writes lines atomically.</summary>
    public static void WriteAllLines(string path, IEnumerable<string> lines) => Write(path, t => File.WriteAllLines(t, lines));
}
