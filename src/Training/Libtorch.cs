using TorchSharp;

namespace Sparsity.Training;

/// <summary>TorchSharp's native libtorch: training and export from checkpoints need it; nothing else does.</summary>
public static class Libtorch
{
    /// <summary>Loads libtorch, or refuses <paramref name="command"/> in one line when this build does not carry
    /// it.</summary>
    public static void Require(string command)
    {
        // Look before asking TorchSharp: when its natives are missing it prints a long trace and, finding a NuGet
        // cache, copies half a gigabyte beside the program.
        string bin = AppContext.BaseDirectory;
        if (
            OperatingSystem.IsLinux()
            && !new[] { bin, Path.Combine(bin, "runtimes", "linux-x64", "native") }.Any(d =>
                File.Exists(Path.Combine(d, "libtorch_cpu.so"))
            )
        )
            throw Missing(command);
        try
        {
            torch.InitializeDeviceType(DeviceType.CPU);
        }
        catch (Exception e)
            when (e
                    is NotSupportedException
                        or TypeInitializationException
                        or DllNotFoundException
                        or EntryPointNotFoundException
            )
        {
            throw new UserInputException(
                $"`{command}` needs libtorch, which is here but does not load ({Reason(e)}); `relu-sparsity doctor` says more.",
                e
            );
        }
    }

    /// <summary>Whether libtorch loads in this process, and if not, why (for <c>doctor</c>).</summary>
    public static (bool Loads, string Detail) Probe()
    {
        try
        {
            Require("probe");
            return (true, $"TorchSharp {typeof(torch).Assembly.GetName().Version?.ToString(3)}, libtorch loads");
        }
        catch (UserInputException e)
        {
            return (false, e.Message);
        }
    }

    // The innermost message names the library or symbol that failed (GLIBCXX_3.4.32 on Debian 12 without the loader
    // fix).
    static string Reason(Exception e) => e.GetBaseException().Message.Split('\n')[0];

    static UserInputException Missing(string command) =>
        new(
            $"`{command}` needs libtorch (TorchSharp's native library), which this build does not carry (the GPU bundle leaves it out): run it from a full build (`dotnet build -c Release`)."
        );
}
