using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace Sparsity.Pipeline.Runtime;

/// <summary>Where ONNX Runtime runs a model: the CPU (<see cref="CudaId"/> null) or CUDA device N.</summary>
public sealed record Device(int? CudaId)
{
    /// <summary>The CPU.</summary>
    public static readonly Device Cpu = new((int?)null);

    /// <summary>"cpu" or "cuda:N".</summary>
    public override string ToString() => CudaId is int id ? $"cuda:{id}" : "cpu";

    /// <summary>
    /// Adds this device's execution provider to <paramref name="options"/> (the CPU provider is always there);
    /// <paramref name="cudaGraph"/> has the CUDA provider capture each run's kernels once and replay them.
    /// </summary>
    public void Configure(SessionOptions options, bool cudaGraph = false)
    {
        if (CudaId is not int id)
            return;
        if (!cudaGraph)
        {
            options.AppendExecutionProvider_CUDA(id);
            return;
        }
        using var cuda = new OrtCUDAProviderOptions(); // copied by the session options
        cuda.UpdateOptions(
            new Dictionary<string, string>
            {
                ["device_id"] = id.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["enable_cuda_graph"] = "1",
            }
        );
        options.AppendExecutionProvider_CUDA(cuda);
    }
}

/// <summary>
/// Resolves <c>--device cpu|cuda|cuda:N|auto</c>, or several devices (<c>cuda:0,cuda:1</c>, <c>cuda:all</c>;
/// <c>cpu,cpu</c> runs the same code path on one machine). CUDA is checked before ONNX Runtime is asked for it: the
/// build must carry the CUDA provider and the libraries it loads must be found, or the error names the missing library
/// and what to install. <c>auto</c> takes cuda:0 when that check passes and says which it chose; never a silent
/// fallback.
/// </summary>
public static class Devices
{
    // What libonnxruntime_providers_cuda.so (ONNX Runtime 1.32) links or loads, and where each comes from.
    static readonly (string Library, string From)[] CudaLibraries =
    [
        ("libcuda.so.1", "the NVIDIA driver"),
        ("libcudart.so.13", "the CUDA 13 runtime"),
        ("libcublas.so.13", "CUDA 13's cuBLAS"),
        ("libcublasLt.so.13", "CUDA 13's cuBLASLt"),
        ("libcurand.so.10", "CUDA 13's cuRAND"),
        ("libcudnn.so.9", "cuDNN 9"),
    ];

    /// <summary>The device <paramref name="option"/> names; <paramref name="note"/> receives the choice <c>auto</c>
    /// made.</summary>
    public static Device Resolve(string option, TextWriter? note = null)
    {
        if (option == "cpu")
            return Device.Cpu;
        if (option == "auto")
        {
            string? problem = CudaProblem();
            note?.WriteLine(
                problem == null ? "--device auto: using cuda:0." : $"--device auto: using the CPU ({problem})."
            );
            return problem == null ? new Device(0) : Device.Cpu;
        }
        int id = 0;
        if (
            option != "cuda"
            && !(option.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(option[5..], out id) && id >= 0)
        )
            throw new UserInputException($"--device {option}: use cpu, cuda, cuda:N (N = GPU index) or auto.");
        if (CudaProblem() is string reason)
            throw new UserInputException($"--device {option}: {reason}.");
        return new Device(id);
    }

    /// <summary>
    /// The devices <paramref name="option"/> names: one (as <see cref="Resolve"/>), a comma-separated list, or
    /// <c>cuda:all</c> (every GPU the CUDA runtime sees, so CUDA_VISIBLE_DEVICES and a scheduler's allocation apply).
    /// A GPU named twice is refused; the CPU may be named several times (one session each).
    /// </summary>
    public static IReadOnlyList<Device> ResolveAll(string option, TextWriter? note = null)
    {
        if (option == "cuda:all")
        {
            if (CudaProblem() is string reason)
                throw new UserInputException($"--device cuda:all: {reason}.");
            int count = GpuCount();
            if (count < 1)
                throw new UserInputException(
                    "--device cuda:all: the CUDA runtime sees no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)."
                );
            note?.WriteLine(
                $"--device cuda:all: using {string.Join(",", Enumerable.Range(0, count).Select(i => $"cuda:{i}"))}."
            );
            return Enumerable.Range(0, count).Select(i => new Device(i)).ToList();
        }
        string[] parts = option.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length == 1)
            return [Resolve(option, note)];
        if (parts.Any(p => p is "auto" or "cuda:all" or ""))
            throw new UserInputException(
                $"--device {option}: a list names devices (cpu, cuda:N); auto and cuda:all stand alone."
            );
        var devices = parts.Select(p => Resolve(p)).ToList();
        if (devices.Where(d => d.CudaId != null).GroupBy(d => d.CudaId).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new UserInputException($"--device {option}: cuda:{twice.Key} is named twice; name each GPU once.");
        return devices;
    }

    [DllImport("libcudart.so.13", EntryPoint = "cudaGetDeviceCount")]
    static extern int CudaGetDeviceCount(out int count);

    // The CUDA runtime's count (0 on an error such as no device), asked only after CudaProblem found libcudart.
    static int GpuCount() => CudaGetDeviceCount(out int count) == 0 ? count : 0;

    /// <summary>Null when the CUDA provider can start here; otherwise why not, and what to do about it.</summary>
    public static string? CudaProblem()
    {
        if (!OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider"))
            return "this build uses the CPU ONNX Runtime package, which has no CUDA provider; build without -p:OnnxRuntimeGpu=false "
                + "(the default references Microsoft.ML.OnnxRuntime.Gpu.Linux) or use the GPU bundle (`dotnet cake --target=PublishGpu`)";
        foreach (var (library, from) in CudaLibraries)
        {
            if (!NativeLibrary.TryLoad(library, out var handle))
                return $"{library} ({from}) cannot be loaded; ONNX Runtime's CUDA provider needs an NVIDIA driver, CUDA 13 and cuDNN 9, "
                    + "with their library folders on LD_LIBRARY_PATH";
            NativeLibrary.Free(handle);
        }
        return null;
    }
}
