using System.Runtime.InteropServices;

namespace Sparsity.Pipeline.Runtime;

/// <summary>
/// Device buffers through the CUDA runtime the CUDA provider already loads (libcudart), for what ONNX Runtime's C# API
/// does not offer: inputs and outputs at fixed device addresses, which a captured CUDA graph replays, filled and read
/// with plain copies around each run.
/// </summary>
public sealed class CudaBuffer : IDisposable
{
    const string Library = "libcudart.so.13";

    [DllImport(Library, EntryPoint = "cudaSetDevice")]
    static extern int SetDevice(int device);

    [DllImport(Library, EntryPoint = "cudaMalloc")]
    static extern int Malloc(out IntPtr pointer, nuint bytes);

    [DllImport(Library, EntryPoint = "cudaFree")]
    static extern int Free(IntPtr pointer);

    [DllImport(Library, EntryPoint = "cudaMemcpy")]
    static extern unsafe int Memcpy(void* destination, void* source, nuint bytes, int kind);

    [DllImport(Library, EntryPoint = "cudaGetErrorString")]
    static extern IntPtr ErrorString(int error);

    const int HostToDevice = 1,
        DeviceToHost = 2;

    readonly int _device;

    /// <summary>Allocates <paramref name="bytes"/> on CUDA device <paramref name="device"/>.</summary>
    public CudaBuffer(int device, long bytes)
    {
        _device = device;
        Bytes = bytes;
        Check(SetDevice(device), "cudaSetDevice");
        Check(Malloc(out var pointer, (nuint)Math.Max(1, bytes)), $"cudaMalloc of {bytes:N0} bytes");
        Pointer = pointer;
    }

    /// <summary>The device address.</summary>
    public IntPtr Pointer { get; private set; }

    /// <summary>Its size.</summary>
    public long Bytes { get; }

    /// <summary>Copies <paramref name="source"/> to the start of the buffer (synchronous).</summary>
    public unsafe void Write<T>(ReadOnlySpan<T> source)
        where T : unmanaged
    {
        long bytes = (long)source.Length * sizeof(T);
        if (bytes > Bytes)
            throw new ArgumentException($"{bytes} bytes do not fit a buffer of {Bytes}.", nameof(source));
        Check(SetDevice(_device), "cudaSetDevice");
        fixed (T* host = source)
            Check(Memcpy((void*)Pointer, host, (nuint)bytes, HostToDevice), "cudaMemcpy to the device");
    }

    /// <summary>Copies the start of the buffer into <paramref name="destination"/> (synchronous).</summary>
    public unsafe void Read<T>(Span<T> destination)
        where T : unmanaged
    {
        long bytes = (long)destination.Length * sizeof(T);
        if (bytes > Bytes)
            throw new ArgumentException($"{bytes} bytes exceed a buffer of {Bytes}.", nameof(destination));
        Check(SetDevice(_device), "cudaSetDevice");
        fixed (T* host = destination)
            Check(Memcpy(host, (void*)Pointer, (nuint)bytes, DeviceToHost), "cudaMemcpy to the host");
    }

    static void Check(int error, string what)
    {
        if (error != 0)
            throw new UserInputException(
                $"CUDA: {what} failed: {Marshal.PtrToStringAnsi(ErrorString(error))} (error {error})."
            );
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (Pointer == IntPtr.Zero)
            return;
        SetDevice(_device);
        Free(Pointer);
        Pointer = IntPtr.Zero;
    }
}
