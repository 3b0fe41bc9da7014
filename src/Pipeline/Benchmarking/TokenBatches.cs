using Sparsity.Corpora;
using Sparsity.Pipeline.Streaming;

namespace Sparsity.Pipeline.Benchmarking;

/// <summary>
/// The held-out text tokenized and packed once, so every contender runs on identical batches of
/// <see cref="BatchSize"/> windows of <see cref="SeqLen"/> tokens (the last batch padded, as in <c>analyze</c>).
/// </summary>
public sealed record TokenBatches(
    IReadOnlyList<(long[] Ids, long[] Mask)> Batches,
    int BatchSize,
    int SeqLen,
    long Tokens
)
{
    /// <summary>Tokenizes and packs the corpus exactly as <c>analyze</c> does.</summary>
    public static TokenBatches From(string corpus, TextTokenizer tokenizer, int seqLen, int batchSize, long vocab)
    {
        var batches = CorpusBatches
            .Pack(CorpusBatches.Tokens(corpus, tokenizer, seqLen), seqLen, batchSize, null, 0, 1, vocab)
            .Select(b => (b.InputIds, b.AttentionMask))
            .ToList();
        return new TokenBatches(batches, batchSize, seqLen, batches.Sum(b => b.AttentionMask.Sum()));
    }

    /// <summary>int64 little-endian: all ids [n, B, T], then all masks [n, B, T] (numpy.fromfile reads it).</summary>
    public void Write(string path)
    {
        using var writer = new BinaryWriter(File.Create(path));
        foreach (var (ids, _) in Batches)
        foreach (long v in ids)
            writer.Write(v);
        foreach (var (_, mask) in Batches)
        foreach (long v in mask)
            writer.Write(v);
    }
}
