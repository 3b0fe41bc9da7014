using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Sparsity.Training;

/// <summary>
/// Reads and writes the safetensors format (8-byte little-endian header length, a JSON header of
/// name → dtype, shape, data_offsets, then raw little-endian data), so weights move to and from
/// PyTorch. Writes F32; reads F32, F16 and BF16 (converted to F32).
/// </summary>
public static class Safetensors
{
    /// <summary>Writes tensors (moved to CPU, as float32) with optional string metadata.</summary>
    public static void Save(
        string path,
        IEnumerable<(string Name, Tensor Tensor)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null
    )
    {
        var header = new JsonObject();
        if (metadata != null)
            header["__metadata__"] = new JsonObject(
                metadata.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))
            );
        var blobs = new List<byte[]>();
        long offset = 0;
        foreach (var (name, tensor) in tensors)
        {
            using var cpu = tensor.detach().cpu().to_type(ScalarType.Float32).contiguous();
            var bytes = new byte[cpu.numel() * sizeof(float)];
            Buffer.BlockCopy(cpu.data<float>().ToArray(), 0, bytes, 0, bytes.Length);
            header[name] = new JsonObject
            {
                ["dtype"] = "F32",
                ["shape"] = new JsonArray(cpu.shape.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes.Length),
            };
            blobs.Add(bytes);
            offset += bytes.Length;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8; // data starts 8-byte aligned
        AtomicFile.Write(path, temp =>
        {
            using var stream = new BufferedStream(File.Create(temp), 1 << 20);
            stream.Write(BitConverter.GetBytes((ulong)padded));
            stream.Write(json);
            for (int i = json.Length; i < padded; i++)
                stream.WriteByte((byte)' ');
            foreach (var blob in blobs)
                stream.Write(blob);
        });
    }

    /// <summary>One tensor's header entry: dtype (F32, F16 or BF16), shape and absolute byte range in the
    /// file.</summary>
    public sealed record Entry(string Path, string Name, string Dtype, long[] Shape, long Begin, long End);

    /// <summary>Reads every tensor as float32 on the CPU, keyed by name.</summary>
    /// <exception cref="UserInputException">The file is not safetensors, its offsets, shapes or dtypes disagree with
    /// its size, or it holds an unsupported dtype.</exception>
    public static Dictionary<string, Tensor> Load(string path)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var entry in Header(path).Values)
            result[entry.Name] = Read(entry);
        return result;
    }

    /// <summary>
    /// The header of <paramref name="path"/>, every entry checked against the file (dtype supported, byte count = shape
    /// × dtype size, range inside the data section), without reading any tensor.
    /// </summary>
    /// <exception cref="UserInputException">The file is missing, not safetensors, or its header disagrees with
    /// it.</exception>
    public static Dictionary<string, Entry> Header(string path)
    {
        if (!File.Exists(path))
            throw new UserInputException($"Weights file {path} does not exist.");
        using var stream = File.OpenRead(path);
        var lengthBytes = new byte[8];
        if (stream.Read(lengthBytes) != 8)
            throw new UserInputException($"{path} is not a safetensors file (too short).");
        ulong headerLength = BitConverter.ToUInt64(lengthBytes);
        if (headerLength == 0 || headerLength > (ulong)Math.Min(stream.Length - 8, 100_000_000))
            throw new UserInputException($"{path} is not a safetensors file (bad header length).");
        var headerBytes = new byte[headerLength];
        stream.ReadExactly(headerBytes);
        JsonObject header;
        try
        {
            header = JsonNode.Parse(headerBytes)!.AsObject();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new UserInputException($"{path} is not a safetensors file (header is not a JSON object).");
        }

        long dataStart = 8 + (long)headerLength;
        var result = new Dictionary<string, Entry>();
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__")
                continue;
            string dtype;
            long[] shape;
            long begin,
                end;
            try
            {
                dtype = node!["dtype"]!.GetValue<string>();
                shape = node["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
                var offsets = node["data_offsets"]!.AsArray();
                if (offsets.Count != 2)
                    throw new InvalidOperationException();
                (begin, end) = (offsets[0]!.GetValue<long>(), offsets[1]!.GetValue<long>());
            }
            catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException)
            {
                throw new UserInputException(
                    $"{path}: the header entry of tensor {name} lacks a valid dtype, shape or data_offsets [begin, end]: the file is corrupt."
                );
            }
            int size = dtype switch
            {
                "F32" => 4,
                "F16" or "BF16" => 2,
                _ => throw new UserInputException(
                    $"{path}: tensor {name} has dtype {dtype}; only F32, F16 and BF16 are supported."
                ),
            };
            if (begin < 0 || end < begin || dataStart + end > stream.Length)
                throw new UserInputException(
                    $"{path}: tensor {name} claims bytes {begin}..{end} of a data section of {stream.Length - dataStart}: the file is truncated or corrupt."
                );
            if (shape.Any(d => d < 0) || end - begin != shape.Aggregate(1L, (a, d) => a * d) * size)
                throw new UserInputException(
                    $"{path}: tensor {name} holds {end - begin} bytes, but shape [{string.Join(", ", shape)}] in {dtype} needs {shape.Aggregate(1L, (a, d) => a * d) * size}: the file is corrupt."
                );
            result[name] = new Entry(path, name, dtype, shape, dataStart + begin, dataStart + end);
        }
        return result;
    }

    /// <summary>Reads one tensor's values as float32 (F16 and BF16 widened exactly), row-major, without
    /// TorchSharp.</summary>
    public static float[] ReadFloats(Entry entry)
    {
        var raw = new byte[entry.End - entry.Begin];
        using (var stream = File.OpenRead(entry.Path))
        {
            stream.Position = entry.Begin;
            stream.ReadExactly(raw);
        }
        if (entry.Dtype == "F32")
            return MemoryMarshalFloat(raw);
        var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(raw);
        var values = new float[halves.Length];
        if (entry.Dtype == "BF16")
            for (int i = 0; i < values.Length; i++)
                values[i] = BitConverter.Int32BitsToSingle(halves[i] << 16);
        else
            for (int i = 0; i < values.Length; i++)
                values[i] = (float)BitConverter.UInt16BitsToHalf(halves[i]);
        return values;
    }

    /// <summary>Reads one tensor as float32 on the CPU (F16 and BF16 widened exactly).</summary>
    public static Tensor Read(Entry entry) => tensor(ReadFloats(entry), entry.Shape);

    static float[] MemoryMarshalFloat(byte[] raw)
    {
        var values = new float[raw.Length / sizeof(float)];
        Buffer.BlockCopy(raw, 0, values, 0, raw.Length);
        return values;
    }
}
