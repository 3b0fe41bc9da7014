using Google.Protobuf;
using Onnx;
using Location = Onnx.TensorProto.Types.DataLocation;

namespace Sparsity.Export;

/// <summary>
/// Initializers stored outside the .onnx file (ONNX external data: <c>location</c>, <c>offset</c>, <c>length</c>
/// relative to the model's folder). Loading reads them in, so a rewritten graph never depends on where it is
/// written; saving puts large tensors of a large model back into one side file beside the graph.
/// </summary>
public static class ExternalData
{
    /// <summary>Above this many bytes of tensor data a model is saved with external data (protobuf caps a message at 2
    /// GiB).</summary>
    public const long InlineLimit = 1L << 30;

    /// <summary>Tensors smaller than this many bytes stay inline even in a model saved with external data (as onnx's
    /// own save does).</summary>
    public const int SmallTensor = 1024;

    /// <summary>
    /// A side file written one tensor at a time (page-aligned), for graphs built from weights larger than memory: each
    /// <see cref="Add"/> writes the values and returns an initializer that points at them under <c>location</c>.
    /// </summary>
    public sealed class SideFile(string path, string location) : IDisposable
    {
        readonly FileStream _stream = File.Create(path);

        /// <summary>Bytes written so far.</summary>
        public long Length => _stream.Length;

        /// <summary>Writes <paramref name="values"/> and returns the external initializer describing them.</summary>
        public TensorProto Add(string name, long[] dims, ReadOnlySpan<float> values)
        {
            long offset = (_stream.Position + 4095) / 4096 * 4096;
            _stream.Position = offset;
            _stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
            var t = new TensorProto
            {
                Name = name,
                DataType = (int)TensorProto.Types.DataType.Float,
                DataLocation = Location.External,
            };
            t.Dims.AddRange(dims);
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
            t.ExternalData.Add(
                new StringStringEntryProto
                {
                    Key = "offset",
                    Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture),
                }
            );
            t.ExternalData.Add(
                new StringStringEntryProto
                {
                    Key = "length",
                    Value = (values.Length * (long)sizeof(float)).ToString(
                        System.Globalization.CultureInfo.InvariantCulture
                    ),
                }
            );
            return t;
        }

        /// <summary>Flushes and closes the file.</summary>
        public void Dispose() => _stream.Dispose();
    }

    /// <summary>True when some initializer of the model lives in a side file.</summary>
    public static bool Uses(ModelProto model) => model.Graph.Initializer.Any(t => t.DataLocation == Location.External);

    /// <summary>Reads every external initializer of <paramref name="model"/> (loaded from <paramref name="modelPath"/>)
    /// into its raw_data.</summary>
    public static void Inline(ModelProto model, string modelPath)
    {
        string folder = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        var open = new Dictionary<string, FileStream>();
        try
        {
            foreach (var t in model.Graph.Initializer.Where(t => t.DataLocation == Location.External))
            {
                var entries = t.ExternalData.ToDictionary(e => e.Key, e => e.Value);
                if (!entries.TryGetValue("location", out string? location) || location == "")
                    throw new UserInputException(
                        $"{modelPath}: initializer {t.Name} is marked external but names no location."
                    );
                string file = Path.GetFullPath(Path.Combine(folder, location));
                if (
                    Path.IsPathRooted(location)
                    || !file.StartsWith(folder + Path.DirectorySeparatorChar, StringComparison.Ordinal)
                )
                    throw new UserInputException(
                        $"{modelPath}: initializer {t.Name} points outside the model's folder ({location}); external data must sit beside the model."
                    );
                if (!File.Exists(file))
                    throw new UserInputException(
                        $"{modelPath}: the external data file {location} of initializer {t.Name} is missing; keep it beside the model."
                    );
                if (!open.TryGetValue(file, out var stream))
                    open[file] = stream = File.OpenRead(file);
                long offset = entries.TryGetValue("offset", out string? o)
                    ? long.Parse(o, System.Globalization.CultureInfo.InvariantCulture)
                    : 0;
                long length = entries.TryGetValue("length", out string? l)
                    ? long.Parse(l, System.Globalization.CultureInfo.InvariantCulture)
                    : stream.Length - offset;
                if (offset < 0 || length < 0 || offset + length > stream.Length)
                    throw new UserInputException(
                        $"{modelPath}: initializer {t.Name} reads bytes {offset}..{offset + length} of {location}, which has {stream.Length}: the data file is truncated or belongs to another model."
                    );
                var bytes = new byte[length];
                stream.Position = offset;
                stream.ReadExactly(bytes);
                t.RawData = ByteString.CopyFrom(bytes);
                t.ExternalData.Clear();
                t.ClearDataLocation();
            }
        }
        finally
        {
            foreach (var s in open.Values)
                s.Dispose();
        }
    }

    /// <summary>
    /// The model as it will be written to <paramref name="path"/>: unchanged when its tensors fit inline, otherwise a
    /// copy whose large tensors point into <c>&lt;name&gt;.data</c>, which this writes (the caller writes the graph).
    /// Returns the side file's name, or null. <paramref name="inlineLimit"/> is the size above which tensors go to the
    /// side file.
    /// </summary>
    public static (ModelProto Model, string? DataFile) Externalize(
        ModelProto model,
        string path,
        long inlineLimit = InlineLimit
    )
    {
        long bytes = model.Graph.Initializer.Sum(t => (long)t.RawData.Length);
        if (bytes <= inlineLimit)
            return (model, null);
        var copy = model.Clone();
        string dataName = Path.GetFileName(path) + ".data";
        AtomicFile.Write(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, dataName), temp =>
        {
            using var data = File.Create(temp);
            foreach (var t in copy.Graph.Initializer.Where(t => t.RawData.Length >= SmallTensor))
            {
                long offset = (data.Position + 4095) / 4096 * 4096; // page-aligned, so runtimes can map it
                data.Position = offset;
                data.Write(t.RawData.Span);
                t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
                t.ExternalData.Add(
                    new StringStringEntryProto
                    {
                        Key = "offset",
                        Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    }
                );
                t.ExternalData.Add(
                    new StringStringEntryProto
                    {
                        Key = "length",
                        Value = t.RawData.Length.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    }
                );
                t.DataLocation = Location.External;
                t.ClearRawData();
            }
        });
        return (copy, dataName);
    }
}
