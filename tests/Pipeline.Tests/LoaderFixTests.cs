using NUnit.Framework;
using SparsityBuild;

namespace Sparsity.Tests;

[TestFixture]
public class LoaderFixTests
{
    // The unpatched library as NuGet restored it (the build patches only the copy in the output folder).
    static string PackagedLibrary()
    {
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string version = typeof(TorchSharp.torch).Assembly.GetName().Version!.ToString(3);
        return Path.Combine(packages, "torchsharp", version, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
    }

    [Test]
    public void WeakeningIsIdempotentAndChangesOneFlag()
    {
        string original = PackagedLibrary();
        Assert.That(File.Exists(original), Is.True, $"restored TorchSharp native library expected at {original}");
        string copy = Path.Combine(TestCorpus.TempDir(), "libLibTorchSharp.so");
        File.Copy(original, copy);
        byte[] before = File.ReadAllBytes(copy);

        Assert.That(ElfVersionNeedPatch.MakeWeak(copy, "GLIBCXX_3.4.32"), Is.EqualTo(ElfPatchOutcome.Patched));
        byte[] once = File.ReadAllBytes(copy);
        Assert.That(ElfVersionNeedPatch.MakeWeak(copy, "GLIBCXX_3.4.32"), Is.EqualTo(ElfPatchOutcome.AlreadyWeak));
        Assert.That(File.ReadAllBytes(copy), Is.EqualTo(once), "a second run writes nothing");

        var changed = Enumerable.Range(0, before.Length).Where(i => before[i] != once[i]).ToList();
        Assert.That(changed, Has.Count.EqualTo(1), "only the vna_flags of one Vernaux entry");
        Assert.That(once[changed[0]] ^ before[changed[0]], Is.EqualTo(0x2), "VER_FLG_WEAK");

        Assert.That(ElfVersionNeedPatch.MakeWeak(copy, "GLIBCXX_9.9.9"), Is.EqualTo(ElfPatchOutcome.NotRequired));
    }

    [Test]
    public void NonElfFilesAreRejected()
    {
        string path = Path.Combine(TestCorpus.TempDir(), "not-elf.so");
        File.WriteAllText(path, "definitely not an ELF file, but long enough to have a header of sixty-four bytes...");
        Assert.Throws<InvalidDataException>(() => ElfVersionNeedPatch.MakeWeak(path, "GLIBCXX_3.4.32"));
    }
}
