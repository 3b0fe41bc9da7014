using System.IO.MemoryMappedFiles;

namespace Sparsity.Corpora;

/// <summary>
/// A corpus tokenized once into little-endian uint16 ids and read back through a memory map
/// (nanoGPT's train.bin), so training samples windows without holding the corpus in memory.
/// </summary>
public sealed class TokenFile : IDisposable
{
    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;

    TokenFile(string path)
    {
        long bytes = new FileInfo(path).Length;
        Length = bytes / sizeof(ushort);
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, bytes, MemoryMappedFileAccess.Read);
    }

    /// <summary>Tokens in the file.</summary>
    public long Length { get; }

    /// <summary>
    /// Tokenizes <paramref name="documents"/> into <paramref name="path"/>, one document after another,
    /// each followed by <paramref name="separatorId"/> when given. Returns the token count.
    /// </summary>
    public static long Write(IEnumerable<string> documents, TextTokenizer tokenizer, string path, int? separatorId)
    {
        long count = 0;
        AtomicFile.Write(path, temp =>
        {
            using var writer = new BinaryWriter(new BufferedStream(File.Create(temp), 1 << 16));
            foreach (string doc in documents)
            {
                foreach (int id in tokenizer.Encode(doc))
                {
                    Put(writer, id);
                    count++;
                }
                if (separatorId is int sep)
                {
                    Put(writer, sep);
                    count++;
                }
            }
        });
        return count;
    }

    static void Put(BinaryWriter writer, int id)
    {
        if ((uint)id > ushort.MaxValue)
            throw new UserInputException(
                $"Token id {id} does not fit the 16-bit token file: use a vocabulary under 65536 ids for training."
            );
        writer.Write((ushort)id);
    }

    /// <summary>Opens a file written by <see cref="Write"/>.</summary>
    public static TokenFile Open(string path) => new(path);

    /// <summary>Copies tokens [start, start + destination.Length) into <paramref name="destination"/>.</summary>
    public void Read(long start, Span<long> destination)
    {
        if (start < 0 || start + destination.Length > Length)
            throw new ArgumentOutOfRangeException(nameof(start));
        Span<ushort> buffer =
            destination.Length <= 4096 ? stackalloc ushort[destination.Length] : new ushort[destination.Length];
        for (int i = 0; i < buffer.Length; i++)
            buffer[i] = _view.ReadUInt16((start + i) * sizeof(ushort));
        for (int i = 0; i < buffer.Length; i++)
            destination[i] = buffer[i];
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _view.Dispose();
        _map.Dispose();
    }
}
