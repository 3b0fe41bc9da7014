namespace Sparsity.Core;

/// <summary>
/// Writes files under a temporary name and renames at the end, so no half-written output is ever left; a file written
/// into an output folder joins its manifest (<see cref="OutputFolder.Adopt"/>).
/// </summary>
public static class AtomicFile
{
    /// <summary>Runs <paramref name="write"/> on a temporary path beside <paramref name="path"/>, then moves it into
    /// place.</summary>
    public static void Write(string path, Action<string> write)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        Temporaries.RemoveStale(full);
        string temp = Temporaries.For(full, "tmp");
        try
        {
            write(temp);
            File.Move(temp, full, overwrite: true);
            OutputFolder.Adopt(full);
        }
        finally
        {
            if (File.Exists(temp))
                File.Delete(temp);
        }
    }

    /// <summary>Writes text atomically.</summary>
    public static void WriteAllText(string path, string text) => Write(path, t => File.WriteAllText(t, text));

    /// <summary>Writes lines atomically.</summary>
    public static void WriteAllLines(string path, IEnumerable<string> lines) =>
        Write(path, t => File.WriteAllLines(t, lines));
}
