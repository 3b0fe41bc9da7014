using System.Text.Json;
using System.Text.Json.Serialization;

namespace Sparsity.Core;

/// <summary>
/// Output folders that never lose a user's files. A command writes <c>--out DIR</c> only when DIR does not exist, is
/// empty, or holds an earlier output of the same command, recognised by the manifest it wrote there
/// (<see cref="ManifestName"/>: the command and every file it wrote). New output is written into a temporary
/// sibling and swapped in by renames; only then are the old output's own files removed. Files relu-sparsity later
/// writes into such a folder (an export into a checkpoint, a report into an analysis) join its manifest.
/// </summary>
public static class OutputFolder
{
    /// <summary>File name of the manifest inside an output folder.</summary>
    public const string ManifestName = ".relu-sparsity-output.json";

    /// <summary>What an output folder holds: the command that wrote it and its files (relative paths,
    /// '/'-separated).</summary>
    public sealed record Manifest(string Command, string Producer, IReadOnlyList<string> Files);

    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>Refuses (one clear line) a folder <paramref name="command"/> may not write; call before long
    /// work.</summary>
    public static void RequireWritable(string path, string command)
    {
        if (File.Exists(path))
            throw new UserInputException($"--out {path} is a file; give a folder for {command}'s output.");
        if (!Directory.Exists(path) || !Directory.EnumerateFileSystemEntries(path).Any())
            return;
        var manifest = Read(path)
            ?? throw new UserInputException(
                $"--out {path} already holds files relu-sparsity did not write ({Describe(Directory.EnumerateFileSystemEntries(path).ToList(), path)}); choose a new or empty folder"
                    + (
                        File.Exists(Path.Combine(path, "config.json"))
                            ? " (a checkpoint written before relu-sparsity 0.2.0 has no manifest: move or delete it to retrain there)."
                            : "."
                    )
            );
        if (manifest.Command != command)
            throw new UserInputException(
                $"--out {path} holds the output of `{manifest.Command}`, not of `{command}`; choose another folder."
            );
        var foreign = Foreign(path, manifest).ToList();
        if (foreign.Count > 0)
            throw new UserInputException(
                $"--out {path} holds an earlier {command} output and files it did not write ({Describe(foreign, path)}); move them or choose another folder."
            );
    }

    /// <summary>
    /// Writes <paramref name="path"/> through <paramref name="write"/>, which fills a temporary sibling folder; then
    /// swaps it in and removes the files of the output it replaces (never anything else). Nothing is left half-written.
    /// </summary>
    public static void Write(string path, string command, Action<string> write)
    {
        RequireWritable(path, command);
        string full = Path.GetFullPath(path).TrimEnd('/', '\\');
        Temporaries.RemoveStale(full); // leftovers of killed runs into the same --out
        string partial = Temporaries.For(full, "partial");
        try
        {
            if (Directory.Exists(partial))
                Directory.Delete(partial, recursive: true); // this process's own leftover
            Directory.CreateDirectory(partial);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserInputException(
                $"--out {path}: cannot create a folder there ({e.Message.TrimEnd('.')}); check the path, its permissions and free space."
            );
        }
        try
        {
            write(partial);
            var files = Directory
                .EnumerateFiles(partial, "*", SearchOption.AllDirectories)
                .Select(f => Relative(partial, f))
                .Order(StringComparer.Ordinal)
                .ToList();
            WriteManifest(partial, new Manifest(command, Tool.Producer, files));
            if (!Directory.Exists(full))
            {
                Directory.Move(partial, full);
                return;
            }
            string old = Temporaries.For(full, "old");
            Directory.Move(full, old);
            Directory.Move(partial, full);
            RemoveOwned(old);
        }
        catch
        {
            if (Directory.Exists(partial))
                Directory.Delete(partial, recursive: true);
            throw;
        }
    }

    /// <summary>Records a file relu-sparsity just wrote in the manifest of the output folder holding it, if there is
    /// one.</summary>
    public static void Adopt(string file)
    {
        string full = Path.GetFullPath(file);
        if (Path.GetFileName(full) == ManifestName)
            return;
        for (string? dir = Path.GetDirectoryName(full); dir != null; dir = Path.GetDirectoryName(dir))
        {
            if (Path.GetFileName(dir).Contains(".partial-"))
                return; // inside an output being written: its manifest comes last
            if (Read(dir) is not { } manifest)
                continue;
            string relative = Relative(dir, full);
            if (!manifest.Files.Contains(relative))
                WriteManifest(dir, manifest with { Files = [.. manifest.Files, relative] });
            return;
        }
    }

    /// <summary>The manifest of <paramref name="dir"/>, or null when it has none (or an unreadable one).</summary>
    public static Manifest? Read(string dir)
    {
        string path = Path.Combine(dir, ManifestName);
        if (!File.Exists(path))
            return null;
        try
        {
            return JsonSerializer.Deserialize<Manifest>(File.ReadAllText(path), Json);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    // Entries under dir that neither its manifest lists nor an output folder nested in it owns.
    static IEnumerable<string> Foreign(string dir, Manifest manifest)
    {
        var listed = manifest.Files.ToHashSet();
        foreach (string file in Directory.EnumerateFiles(dir))
            if (
                Path.GetFileName(file) is not (ManifestName or OutputFile.LedgerName)
                && !listed.Contains(Relative(dir, file))
            )
                yield return file;
        foreach (string sub in Directory.EnumerateDirectories(dir))
        {
            if (Read(sub) is { } nested)
            {
                foreach (string f in Foreign(sub, nested))
                    yield return f;
                continue;
            }
            foreach (string file in Directory.EnumerateFiles(sub, "*", SearchOption.AllDirectories))
                if (!listed.Contains(Relative(dir, file)))
                    yield return file;
        }
    }

    // Deletes what the manifest of dir (and of output folders nested in it) lists, then the folders left empty.
    static void RemoveOwned(string dir)
    {
        if (Read(dir) is not { } manifest)
        {
            if (!Directory.EnumerateFileSystemEntries(dir).Any())
                Directory.Delete(dir); // the empty folder --out was
            return;
        }
        foreach (string sub in Directory.EnumerateDirectories(dir).Where(s => Read(s) != null).ToList())
            RemoveOwned(sub);
        foreach (string relative in manifest.Files)
        {
            string file = Path.Combine(dir, relative);
            if (File.Exists(file))
                File.Delete(file);
        }
        File.Delete(Path.Combine(dir, ManifestName));
        File.Delete(Path.Combine(dir, OutputFile.LedgerName));
        foreach (
            string sub in Directory
                .EnumerateDirectories(dir, "*", SearchOption.AllDirectories)
                .OrderByDescending(d => d.Length)
        )
            if (!Directory.EnumerateFileSystemEntries(sub).Any())
                Directory.Delete(sub);
        if (!Directory.EnumerateFileSystemEntries(dir).Any())
            Directory.Delete(dir);
    }

    static void WriteManifest(string dir, Manifest manifest) =>
        AtomicFile.WriteAllText(Path.Combine(dir, ManifestName), JsonSerializer.Serialize(manifest, Json));

    static string Relative(string dir, string file) => Path.GetRelativePath(dir, file).Replace('\\', '/');

    static string Describe(IReadOnlyList<string> entries, string dir)
    {
        var names = entries.Take(3).Select(e => Path.GetRelativePath(dir, e) + (Directory.Exists(e) ? "/" : ""));
        return string.Join(", ", names) + (entries.Count > 3 ? $", … {entries.Count} in all" : "");
    }
}
