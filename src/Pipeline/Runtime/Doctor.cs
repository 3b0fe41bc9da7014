using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Sparsity.Training;

namespace Sparsity.Pipeline.Runtime;

/// <summary>One line of <c>doctor</c>: what was checked, whether it works, and the detail (a version, or what to
/// do).</summary>
/// <param name="Name">What was checked.</param>
/// <param name="Ok">Whether it works.</param>
/// <param name="Detail">A version, or what to do.</param>
/// <param name="Essential">Whether nothing works without it (the command then exits 1).</param>
public sealed record Finding(string Name, bool Ok, string Detail, bool Essential = false);

/// <summary>What is installed and working here: .NET, ONNX Runtime and its providers, TorchSharp, CUDA, presets, the
/// Brown corpus.</summary>
public static class Doctor
{
    /// <summary>
    /// Every check, in order; <paramref name="brownBuilt"/> says whether the built-in corpus and tokenizer are present
    /// (<see cref="BrownDefaults"/>).
    /// </summary>
    public static IReadOnlyList<Finding> Check(bool brownBuilt)
    {
        var findings = new List<Finding>
        {
            new("relu-sparsity", true, $"{Tool.Version} in {AppContext.BaseDirectory}"),
            new(
                ".NET",
                true,
                $"{RuntimeInformation.FrameworkDescription} on {RuntimeInformation.OSDescription} ({RuntimeInformation.OSArchitecture}, {Environment.ProcessorCount} cores)"
            ),
        };
        try
        {
            var providers = OrtEnv.Instance().GetAvailableProviders();
            findings.Add(
                new(
                    "ONNX Runtime",
                    true,
                    $"{OrtEnv.Instance().GetVersionString()}, providers: {string.Join(", ", providers)}",
                    Essential: true
                )
            );
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or OnnxRuntimeException)
        {
            findings.Add(
                new(
                    "ONNX Runtime",
                    false,
                    $"does not load ({e.GetBaseException().Message.Split('\n')[0]}); analyze, prune, topk and evaluate need it",
                    Essential: true
                )
            );
        }
        var (loads, detail) = Libtorch.Probe();
        findings.Add(
            new(
                "TorchSharp",
                loads,
                loads ? detail : detail + " (train, export and experiment need it; analysis does not)"
            )
        );
        findings.Add(LoaderFix(loads));
        string? cuda = findings[2].Ok ? Devices.CudaProblem() : "ONNX Runtime does not load";
        findings.Add(new("CUDA", cuda == null, cuda == null ? "usable: analyze --device cuda" : $"not usable: {cuda}"));
        string presets = Path.Combine(AppContext.BaseDirectory, "presets");
        var names = Directory.Exists(presets)
            ? Directory.GetFiles(presets, "*.json").Select(Path.GetFileNameWithoutExtension).Order().ToList()
            : [];
        findings.Add(
            new(
                "presets",
                names.Count > 0,
                names.Count > 0
                    ? string.Join(", ", names)
                    : $"none in {presets}: pass --preset a path to a preset JSON file"
            )
        );
        findings.Add(
            new(
                "Brown corpus",
                brownBuilt,
                brownBuilt
                    ? $"built in {Path.GetFullPath(BrownDefaults.Folder)}: --corpus, --heldout and --tokenizer may be omitted"
                    : $"not built in {Path.GetFullPath(BrownDefaults.Folder)}: give --corpus and --tokenizer, or run `dotnet cake --target=Tokenizer` in a clone"
            )
        );
        return findings;
    }

    // TorchSharp 0.107's native library asks for GLIBCXX_3.4.32, which Debian 12's libstdc++ lacks; the build marks it
    // weak.
    static Finding LoaderFix(bool torchLoads)
    {
        string? system = new[]
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6",
            "/usr/lib/libstdc++.so.6",
        }.FirstOrDefault(File.Exists);
        if (!OperatingSystem.IsLinux() || system == null)
            return new("loader fix", true, "not needed here");
        bool hasVersion = File.ReadAllBytes(system).AsSpan().IndexOf("GLIBCXX_3.4.32"u8) >= 0;
        if (hasVersion)
            return new("loader fix", true, $"not needed ({system} has GLIBCXX_3.4.32)");
        return torchLoads
            ? new(
                "loader fix",
                true,
                $"applied ({system} lacks GLIBCXX_3.4.32; TorchSharp's requirement is marked weak in this copy)"
            )
            : new(
                "loader fix",
                false,
                $"needed but not applied ({system} lacks GLIBCXX_3.4.32): rebuild or reinstall from a package built by this project"
            );
    }
}
