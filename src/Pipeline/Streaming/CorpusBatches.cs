using Microsoft.ML.Data;

namespace Sparsity.Pipeline.Streaming;

/// <summary>A document as the corpus view streams it.</summary>
public sealed class DocumentRow
{
    public string Text = "";
}

/// <summary>A document after the tokenization transform.</summary>
public sealed class TokenRow
{
    [VectorType] public long[] Ids = [];
}

/// <summary>One ML.NET row: B windows of T tokens, so ONNX Runtime runs a whole batch per call.</summary>
public sealed class BatchRow
{
    [ColumnName("input_ids")] public long[] InputIds = [];
    /// <summary>1 for real tokens, 0 for padding (the tail of a document's last window, or filler windows of the last batch).</summary>
    [ColumnName("attention_mask")] public long[] AttentionMask = [];
}

/// <summary>Counters the batching stream updates as it goes, for progress and the final header.</summary>
public sealed class StreamCounters
{
    public long Documents;
    public long Tokens;
    public long Windows;
    public long Batches;
}

/// <summary>
/// Cuts tokenized documents into non-overlapping windows of T tokens (a document's last partial window
/// is padded) and packs B consecutive windows per row. Sharding selects whole batches (global batch g
/// goes to shard g mod n), so the shards' batches are exactly the batches of a single run and merging
/// them reproduces its per-batch statistics. --max-tokens cuts the stream before sharding.
/// </summary>
public static class CorpusBatches
{
    /// <summary>Batches of this shard, streamed; never more than one batch in memory.</summary>
    public static IEnumerable<BatchRow> Pack(IEnumerable<long[]> documents, int seqLen, int batchSize, long? maxTokens,
        int shardIndex, int shardCount, long vocabSize, StreamCounters counters)
    {
        var ids = new long[batchSize * seqLen];
        var mask = new long[batchSize * seqLen];
        int window = 0;
        long tokens = 0, batchIndex = 0;
        foreach (long[] doc in documents)
        {
            counters.Documents++;
            for (int start = 0; start < doc.Length; start += seqLen)
            {
                int length = Math.Min(seqLen, doc.Length - start);
                if (maxTokens is long cap) length = (int)Math.Min(length, cap - tokens);
                if (length <= 0) break;
                for (int t = 0; t < length; t++)
                {
                    long id = doc[start + t];
                    if (id < 0 || id >= vocabSize) throw new UserInputException($"Token id {id} is outside the model's vocabulary (0..{vocabSize - 1}): the tokenizer does not match the model.");
                    ids[window * seqLen + t] = id;
                    mask[window * seqLen + t] = 1;
                }
                tokens += length;
                if (++window == batchSize)
                {
                    if (batchIndex++ % shardCount == shardIndex) yield return Emit(ids, mask, counters, batchSize, seqLen);
                    Array.Clear(ids);
                    Array.Clear(mask);
                    window = 0;
                }
            }
            if (maxTokens is long max && tokens >= max) break;
        }
        if (window > 0 && batchIndex % shardCount == shardIndex) yield return Emit(ids, mask, counters, batchSize, seqLen);
    }

    static BatchRow Emit(long[] ids, long[] mask, StreamCounters counters, int batchSize, int seqLen)
    {
        counters.Batches++;
        for (int w = 0; w < batchSize; w++) if (mask[w * seqLen] == 1) counters.Windows++;
        counters.Tokens += mask.Sum();
        return new BatchRow { InputIds = (long[])ids.Clone(), AttentionMask = (long[])mask.Clone() };
    }
}
