using System.Runtime.InteropServices;

namespace Sparsity.Pipeline;

/// <summary>The machine a figure was measured on, as reports state it.</summary>
public static class MachineDescription
{
    /// <summary>Cores, memory, OS and .NET version.</summary>
    public static string Brief() =>
        $"{Environment.ProcessorCount} cores, {GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1L << 30)} GiB, {RuntimeInformation.OSDescription}, .NET {Environment.Version}";

    /// <summary><see cref="Brief"/> plus the ONNX Runtime and TorchSharp versions.</summary>
    public static string WithRuntimes() =>
        $"{Brief()}, ONNX Runtime {typeof(Microsoft.ML.OnnxRuntime.InferenceSession).Assembly.GetName().Version?.ToString(3)}, "
        + $"TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version?.ToString(3)}";
}
