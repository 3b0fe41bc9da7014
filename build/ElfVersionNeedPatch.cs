// Marks one required symbol version of an ELF64 shared library as weak (VER_FLG_WEAK), so the
// dynamic loader accepts a libstdc++ that lacks it. Used by build/TorchSharpLoaderFix.targets on
// TorchSharp's libLibTorchSharp.so (built with GCC 13, needs GLIBCXX_3.4.32 only for an
// uncalled marker symbol); the tests compile this file too, with ELF_PATCH_LIBRARY defined.
using System;
using System.IO;
using System.Text;

namespace SparsityBuild
{
    /// <summary>What <see cref="ElfVersionNeedPatch.MakeWeak"/> found and did.</summary>
    public enum ElfPatchOutcome
    {
        /// <summary>The version requirement was strong and is now weak.</summary>
        Patched,

        /// <summary>The requirement was already weak: nothing written.</summary>
        AlreadyWeak,

        /// <summary>The library does not require that version: nothing written.</summary>
        NotRequired,
    }

    /// <summary>Edits the SHT_GNU_verneed section of a little-endian ELF64 file in place.</summary>
    public static class ElfVersionNeedPatch
    {
        const uint ShtGnuVerneed = 0x6ffffffe;
        const ushort VerFlgWeak = 0x2;

        /// <summary>Sets VER_FLG_WEAK on every Vernaux entry named <paramref name="versionName"/>.</summary>
        public static ElfPatchOutcome MakeWeak(string path, string versionName)
        {
            byte[] elf = File.ReadAllBytes(path);
            if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
                throw new InvalidDataException(path + " is not an ELF file.");
            if (elf[4] != 2 || elf[5] != 1)
                throw new InvalidDataException(path + " is not a little-endian ELF64 file.");

            long shoff = (long)BitConverter.ToUInt64(elf, 0x28);
            int shentsize = BitConverter.ToUInt16(elf, 0x3A);
            int shnum = BitConverter.ToUInt16(elf, 0x3C);
            var outcome = ElfPatchOutcome.NotRequired;
            for (int s = 0; s < shnum; s++)
            {
                long sh = shoff + (long)s * shentsize;
                if (BitConverter.ToUInt32(elf, (int)sh + 4) != ShtGnuVerneed)
                    continue;
                long offset = (long)BitConverter.ToUInt64(elf, (int)sh + 0x18);
                int strtabIndex = (int)BitConverter.ToUInt32(elf, (int)sh + 0x28);
                int entries = (int)BitConverter.ToUInt32(elf, (int)sh + 0x2C);
                long strtab = (long)BitConverter.ToUInt64(elf, (int)(shoff + (long)strtabIndex * shentsize) + 0x18);

                long need = offset;
                for (int n = 0; n < entries; n++)
                {
                    int auxCount = BitConverter.ToUInt16(elf, (int)need + 2);
                    long aux = need + BitConverter.ToUInt32(elf, (int)need + 8);
                    for (int a = 0; a < auxCount; a++)
                    {
                        long name = strtab + BitConverter.ToUInt32(elf, (int)aux + 8);
                        if (ReadCString(elf, name) == versionName)
                        {
                            ushort flags = BitConverter.ToUInt16(elf, (int)aux + 4);
                            if ((flags & VerFlgWeak) != 0)
                            {
                                if (outcome == ElfPatchOutcome.NotRequired)
                                    outcome = ElfPatchOutcome.AlreadyWeak;
                            }
                            else
                            {
                                BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, (int)aux + 4);
                                outcome = ElfPatchOutcome.Patched;
                            }
                        }
                        aux += BitConverter.ToUInt32(elf, (int)aux + 12);
                    }
                    need += BitConverter.ToUInt32(elf, (int)need + 12);
                }
            }
            if (outcome == ElfPatchOutcome.Patched)
            {
                // Write beside, then replace: a build interrupted here never leaves a torn library.
                string temp = path + ".patching";
                File.WriteAllBytes(temp, elf);
                File.Copy(temp, path, overwrite: true);
                File.Delete(temp);
            }
            return outcome;
        }

        /// <summary>True when a file contains the NUL-terminated ASCII string (a version name in libstdc++'s
        /// tables).</summary>
        public static bool ContainsVersionString(string path, string versionName)
        {
            byte[] needle = Encoding.ASCII.GetBytes(versionName + "\0");
            byte[] data = File.ReadAllBytes(path);
            // Plain loop: MSBuild compiles inline tasks against netstandard, which lacks span search.
            for (int i = 0; i + needle.Length <= data.Length; i++)
            {
                int j = 0;
                while (j < needle.Length && data[i + j] == needle[j])
                    j++;
                if (j == needle.Length)
                    return true;
            }
            return false;
        }

        static string ReadCString(byte[] data, long start)
        {
            int end = (int)start;
            while (end < data.Length && data[end] != 0)
                end++;
            return Encoding.ASCII.GetString(data, (int)start, end - (int)start);
        }
    }

#if !ELF_PATCH_LIBRARY
    /// <summary>MSBuild task: weakens a version requirement when the machine's libstdc++ lacks it.</summary>
    public sealed class WeakenMissingLibstdcxxVersion : Microsoft.Build.Utilities.Task
    {
        /// <summary>The shared library to patch (the copy in the output folder).</summary>
        [Microsoft.Build.Framework.Required]
        public string Library { get; set; } = "";

        /// <summary>The symbol version, for example GLIBCXX_3.4.32.</summary>
        [Microsoft.Build.Framework.Required]
        public string Version { get; set; } = "";

        public override bool Execute()
        {
            if (!File.Exists(Library))
                return true;
            string[] candidates =
            {
                "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
                "/lib/x86_64-linux-gnu/libstdc++.so.6",
                "/usr/lib64/libstdc++.so.6",
                "/usr/lib/libstdc++.so.6",
            };
            string system = Array.Find(candidates, File.Exists); // null when none exists (no nullable context in inline tasks)
            if (system == null || ElfVersionNeedPatch.ContainsVersionString(system, Version))
                return true;
            var outcome = ElfVersionNeedPatch.MakeWeak(Library, Version);
            if (outcome == ElfPatchOutcome.Patched)
                Log.LogMessage(
                    Microsoft.Build.Framework.MessageImportance.High,
                    $"{system} lacks {Version}: marked it weak in {Library} so TorchSharp loads."
                );
            return true;
        }
    }
#endif
}
