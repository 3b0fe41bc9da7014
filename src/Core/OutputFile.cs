using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;

namespace Sparsity.Core;

/// <summary>
/// Single-file outputs (an ONNX model and its sidecars, a report) follow the rules of <see cref="OutputFolder"/>: a
/// file is written only where nothing exists yet, or where relu-sparsity's own earlier output of the same command lies
/// unchanged. What a command wrote is recorded with its SHA-256 in the folder's ledger (<see cref="LedgerName"/>); a
/// file that is one of the command's inputs (same path, symbolic link or hard link), a user's file, or our file the
/// user has since edited, is refused before any work starts.
/// </summary>
public static class OutputFile
{
    /// <summary>File name of the ledger of files relu-sparsity wrote into a folder (name → command and
    /// SHA-256).</summary>
    public const string LedgerName = ".relu-sparsity-files.json";

    /// <summary>One ledger entry: the command that wrote the file and the SHA-256 of what it wrote.</summary>
    public sealed record Entry(string Command, string Sha256);

    /// <summary>
    /// Refuses, in one line, writing <paramref name="files"/> (an output and the sidecars that go with it) for
    /// <paramref name="command"/>: an empty path, a folder, one of <paramref name="inputs"/>, or an existing file that
    /// is not this command's unchanged earlier output. Call before long work.
    /// </summary>
    public static void Require(
        string command,
        IReadOnlyList<string> files,
        IEnumerable<string> inputs,
        string option = "--out"
    )
    {
        var inputList = inputs.Where(i => !string.IsNullOrEmpty(i)).ToList();
        foreach (string file in files)
        {
            if (string.IsNullOrWhiteSpace(file))
                throw new UserInputException($"{option} is empty: give the file to write.");
            if (Directory.Exists(file))
                throw new UserInputException($"{option} {file} is a folder; give the file to write.");
            foreach (string input in inputList)
                if (SameFile(file, input))
                    throw new UserInputException(
                        $"{option} {file} is the input {input}: {command} never overwrites what it reads; write to another file."
                    );
            if (!File.Exists(file) && !IsLink(file))
                continue;
            if (!IsOurs(file, command))
                throw new UserInputException(
                    $"{file} exists and is not an unchanged output of an earlier `{command}` (a file of yours, or one edited since): "
                        + "move or delete it, or choose another --out; relu-sparsity never replaces files it did not write."
                );
        }
    }

    /// <summary>Records <paramref name="files"/> (just written by <paramref name="command"/>) in their folders'
    /// ledgers.</summary>
    public static void Record(string command, IEnumerable<string> files)
    {
        foreach (var group in files.Where(File.Exists).Select(Path.GetFullPath).GroupBy(f => Path.GetDirectoryName(f)!))
        {
            var ledger = ReadLedger(group.Key);
            foreach (string file in group)
                ledger[Path.GetFileName(file)] = new Entry(command, Sha256(file));
            // Entries of files that are gone are dropped, so the ledger stays as small as the folder.
            foreach (string name in ledger.Keys.Where(n => !File.Exists(Path.Combine(group.Key, n))).ToList())
                ledger.Remove(name);
            AtomicFile.Write(Path.Combine(group.Key, LedgerName), temp =>
                File.WriteAllText(temp, JsonSerializer.Serialize(ledger, ProjectJson.Options))
            );
        }
    }

    /// <summary>True when <paramref name="file"/> is what <paramref name="command"/> recorded writing and is unchanged
    /// since.</summary>
    public static bool IsOurs(string file, string command)
    {
        if (IsLink(file))
            return false; // we never write links: a link where our output was is the user's
        string full = Path.GetFullPath(file);
        return ReadLedger(Path.GetDirectoryName(full)!).TryGetValue(Path.GetFileName(full), out var entry)
            && entry.Command == command
            && entry.Sha256 == Sha256(full);
    }

    /// <summary>
    /// True when both paths name one existing file: the same path, a symbolic link to it, or a hard link (same device
    /// and inode on Linux).
    /// </summary>
    public static bool SameFile(string a, string b)
    {
        if (!File.Exists(a) || !File.Exists(b))
            return false;
        if (Identity(a) is { } ia && Identity(b) is { } ib)
            return ia == ib;
        return string.Equals(Resolved(a), Resolved(b), StringComparison.Ordinal);
    }

    static string Resolved(string path) =>
        new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? Path.GetFullPath(path);

    static bool IsLink(string path) => new FileInfo(path).LinkTarget != null;

    static Dictionary<string, Entry> ReadLedger(string dir)
    {
        string path = Path.Combine(dir, LedgerName);
        if (!File.Exists(path))
            return new(StringComparer.Ordinal);
        try
        {
            return JsonSerializer.Deserialize<Dictionary<string, Entry>>(File.ReadAllText(path), ProjectJson.Options)
                ?? new(StringComparer.Ordinal);
        }
        catch (JsonException)
        {
            return new(StringComparer.Ordinal);
        } // an unreadable ledger vouches for nothing
    }

    static string Sha256(string file)
    {
        using var stream = File.OpenRead(file);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    // (device, inode) of the file a path leads to, following links; null off Linux or when stat fails.
    static (ulong Device, ulong Inode)? Identity(string path)
    {
        if (
            !OperatingSystem.IsLinux()
            || RuntimeInformation.OSArchitecture is not (Architecture.X64 or Architecture.Arm64)
        )
            return null;
        var buffer = new byte[256]; // struct stat is 144 (x86-64) or 128 (arm64) bytes; st_dev and st_ino lead on both
        if (stat(path, buffer) != 0)
            return null;
        return (BitConverter.ToUInt64(buffer, 0), BitConverter.ToUInt64(buffer, 8));
    }

    [DllImport("libc", SetLastError = true)]
    static extern int stat([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] buffer);
}
