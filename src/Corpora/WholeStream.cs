namespace Sparsity.Corpora;

/// <summary>
/// A decompressing stream that is read whole or refused: a compressed corpus that ends early, fails its checksum or is
/// not the format its extension names becomes one <see cref="UserInputException"/> naming the file and the byte offset
/// reached, never a shorter corpus analysed without a word.
/// </summary>
sealed class WholeStream(Stream decompressed, Stream file, string path, string format) : Stream
{
    public override int Read(byte[] buffer, int offset, int count)
    {
        try
        {
            return decompressed.Read(buffer, offset, count);
        }
        // Decoders meet corrupt input with their own exceptions, and some (SharpZipLib's inflater on flipped bits) with
        // an IndexOutOfRangeException: whatever the decoder throws, the file is not what it says.
        catch (Exception e) when (e is not (OutOfMemoryException or OperationCanceledException))
        {
            throw new UserInputException(
                $"Corpus {path} is not a whole {format} file: {e.Message.TrimEnd('.')} at byte {file.Position:N0} of {file.Length:N0}; "
                    + "re-download or re-compress it (or give the uncompressed text)."
            );
        }
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override void Flush() { }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            decompressed.Dispose();
        base.Dispose(disposing);
    }
}
