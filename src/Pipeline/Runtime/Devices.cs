using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Sparsity.Training;

namespace Sparsity.Pipeline.Runtime;

/// <summary>Where ONNX Runtime runs a model: the CPU (<see cref="CudaId"/> null) or CUDA device N.</summary>
public sealed record Device(int? CudaId)
{
    /// <summary>The CPU.</summary>
    public static readonly Device Cpu = new((int?)null);

    /// <summary>"cpu" or "cuda:N".</summary>
    public override string ToString() => CudaId is int id ? $"cuda:{id}" : "cpu";

    /// <summary>Adds this device's execution provider to <paramref name="options"/> (the CPU provider is always there).</summary>
    public void Configure(SessionOptions options)
    {
        if (CudaId is int id) options.AppendExecutionProvider_CUDA(id);
    }
}

/// <summary>
/// Resolves <c>--device cpu|cuda|cuda:N|auto</c>. CUDA is checked before ONNX Runtime is asked for it: the build must
/// carry the CUDA provider and the libraries it loads must be found, or the error names the missing library and what
/// to install. <c>auto</c> takes cuda:0 when that check passes and says which it chose; never a silent fallback.
/// </summary>
public static class Devices
{
    // What libonnxruntime_providers_cuda.so (ONNX Runtime 1.31) links or loads, and where each comes from.
    static readonly (string Library, string From)[] CudaLibraries =
    [
        ("libcuda.so.1", "the NVIDIA driver"), ("libcudart.so.13", "the CUDA 13 runtime"), ("libcublas.so.13", "CUDA 13's cuBLAS"),
        ("libcublasLt.so.13", "CUDA 13's cuBLASLt"), ("libcurand.so.10", "CUDA 13's cuRAND"), ("libcudnn.so.9", "cuDNN 9"),
    ];

    /// <summary>The device <paramref name="option"/> names; <paramref name="note"/> receives the choice <c>auto</c> made.</summary>
    public static Device Resolve(string option, TextWriter? note = null)
    {
        if (option == "cpu") return Device.Cpu;
        if (option == "auto")
        {
            string? problem = CudaProblem();
            note?.WriteLine(problem == null ? "--device auto: using cuda:0." : $"--device auto: using the CPU ({problem}).");
            return problem == null ? new Device(0) : Device.Cpu;
        }
        int id = 0;
        if (option != "cuda" && !(option.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(option[5..], out id) && id >= 0))
            throw new UserInputException($"--device {option}: use cpu, cuda, cuda:N (N = GPU index) or auto.");
        if (CudaProblem() is string reason) throw new UserInputException($"--device {option}: {reason}.");
        return new Device(id);
    }

    /// <summary>Null when the CUDA provider can start here; otherwise why not, and what to do about it.</summary>
    public static string? CudaProblem()
    {
        if (!OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider"))
            return "this build uses the CPU ONNX Runtime package, which has no CUDA provider; build without -p:OnnxRuntimeGpu=false " +
                   "(the default references Microsoft.ML.OnnxRuntime.Gpu.Linux) or use the GPU bundle (`dotnet cake --target=PublishGpu`)";
        foreach (var (library, from) in CudaLibraries)
        {
            if (!NativeLibrary.TryLoad(library, out var handle))
                return $"{library} ({from}) cannot be loaded; ONNX Runtime's CUDA provider needs an NVIDIA driver, CUDA 13 and cuDNN 9, " +
                       "with their library folders on LD_LIBRARY_PATH";
            NativeLibrary.Free(handle);
        }
        return null;
    }
}
