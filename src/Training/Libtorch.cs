using TorchSharp;

namespace Sparsity.Training;

/// <summary>TorchSharp's native libtorch: training and export from checkpoints need it; nothing else does.</summary>
public static class Libtorch
{
    /// <summary>Loads libtorch, or refuses <paramref name="command"/> in one line when this build does not carry it.</summary>
    public static void Require(string command)
    {
        // Look before asking TorchSharp: when its natives are missing it prints a long trace and, finding a NuGet cache,
        // copies half a gigabyte beside the program.
        string bin = AppContext.BaseDirectory;
        if (OperatingSystem.IsLinux() && !new[] { bin, Path.Combine(bin, "runtimes", "linux-x64", "native") }.Any(d => File.Exists(Path.Combine(d, "libtorch_cpu.so"))))
            throw Missing(command);
        try { torch.InitializeDeviceType(DeviceType.CPU); }
        catch (Exception e) when (e is NotSupportedException or TypeInitializationException or DllNotFoundException or EntryPointNotFoundException)
        {
            throw Missing(command);
        }
    }

    static UserInputException Missing(string command) =>
        new($"`{command}` needs libtorch (TorchSharp's native library), which this build does not carry (the GPU bundle leaves it out): run it from a full build (`dotnet build -c Release`).");
}
