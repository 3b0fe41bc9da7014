using Microsoft.ML;
using Microsoft.ML.Data;
using Sparsity.Training.Data;

namespace Sparsity.Pipeline.Streaming;

/// <summary>One batch of the corpus stream (one ML.NET row): B windows of T tokens, so ONNX Runtime runs a whole batch per call.</summary>
public sealed class BatchRow
{
    [ColumnName("input_ids")] public long[] InputIds = [];
    /// <summary>1 for real tokens, 0 for padding (the tail of a document's last window, or filler windows of the last batch).</summary>
    [ColumnName("attention_mask")] public long[] AttentionMask = [];
    /// <summary>Documents of the corpus read when this batch was cut (progress and its estimate of time left).</summary>
    [ColumnName("documents_read")] public long DocumentsRead;
    /// <summary>Per window: the index of its document in the stream (−1 for a filler window), where top examples point.</summary>
    [ColumnName("window_document")] public long[] WindowDocument = [];
    /// <summary>Per window: the offset of its first token in its document.</summary>
    [ColumnName("window_start")] public long[] WindowStart = [];
}

/// <summary>
/// The corpus stream up to the model: documents → tokens → non-overlapping windows of T tokens (a document's last
/// partial window is padded) → B consecutive windows per batch. Sharding selects whole batches (global batch g goes to
/// shard g mod n), so the shards' batches are exactly the batches of a single run and merging them reproduces its
/// per-batch statistics. --max-tokens cuts the stream before sharding.
/// </summary>
public static class CorpusBatches
{
    /// <summary>
    /// The corpus's documents as token ids, streamed: text tokenized, or a pre-tokenized corpus (<see cref="TokenDocuments"/>,
    /// with <c>--tokenizer ids</c>) read in chunks of whole windows of <paramref name="seqLen"/>.
    /// </summary>
    public static IEnumerable<long[]> Tokens(string corpus, TextTokenizer tokenizer, int seqLen)
    {
        if (!TokenDocuments.Handles(corpus)) return TextDocuments.Read(corpus).Select(text => tokenizer.Encode(text).Select(id => (long)id).ToArray());
        RequireIds(corpus, tokenizer);
        return TokenDocuments.Read(corpus, ChunkWindows * seqLen);
    }

    /// <summary>Documents in the corpus, counted before the stream starts (progress and its estimate of time left).</summary>
    public static long DocumentCount(string corpus, TextTokenizer tokenizer, int seqLen)
    {
        if (!TokenDocuments.Handles(corpus)) return TextDocuments.Read(corpus).LongCount();
        RequireIds(corpus, tokenizer);
        return TokenDocuments.Count(corpus, ChunkWindows * seqLen);
    }

    /// <summary>Windows of <paramref name="seqLen"/> the corpus holds (within <paramref name="maxTokens"/>), counted up to <paramref name="limit"/> only.</summary>
    public static long WindowsUpTo(string corpus, TextTokenizer tokenizer, int seqLen, long? maxTokens, long limit)
    {
        long windows = 0, tokens = 0;
        foreach (long[] doc in Tokens(corpus, tokenizer, seqLen))
        {
            long length = maxTokens is long cap ? Math.Min(doc.Length, cap - tokens) : doc.Length;
            if (length <= 0) break;
            tokens += length;
            windows += (length + seqLen - 1) / seqLen;
            if (windows >= limit) return limit;
        }
        return windows;
    }

    // A token file is read this many windows at a time.
    const int ChunkWindows = 4096;

    static void RequireIds(string corpus, TextTokenizer tokenizer)
    {
        if (tokenizer.Spec != "ids")
            throw new UserInputException($"Corpus {corpus} holds token ids, not text: pass --tokenizer ids (the ids must be the model's), not {tokenizer.Spec}.");
    }

    /// <summary>Batches of this shard, streamed; never more than one batch in memory.</summary>
    public static IEnumerable<BatchRow> Pack(IEnumerable<long[]> documents, int seqLen, int batchSize, long? maxTokens,
        int shardIndex, int shardCount, long vocabSize)
    {
        var ids = new long[batchSize * seqLen];
        var mask = new long[batchSize * seqLen];
        var windowDocument = new long[batchSize];
        var windowStart = new long[batchSize];
        Array.Fill(windowDocument, -1);
        int window = 0;
        long tokens = 0, batchIndex = 0, documentsRead = 0;
        foreach (long[] doc in documents)
        {
            documentsRead++;
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
                (windowDocument[window], windowStart[window]) = (documentsRead - 1, start);
                if (++window == batchSize)
                {
                    if (batchIndex++ % shardCount == shardIndex) yield return Emit(ids, mask, documentsRead, windowDocument, windowStart);
                    Array.Clear(ids);
                    Array.Clear(mask);
                    Array.Fill(windowDocument, -1);
                    Array.Clear(windowStart);
                    window = 0;
                }
            }
            if (maxTokens is long max && tokens >= max) break;
        }
        if (window > 0 && batchIndex % shardCount == shardIndex) yield return Emit(ids, mask, documentsRead, windowDocument, windowStart);
    }

    static BatchRow Emit(long[] ids, long[] mask, long documentsRead, long[] windowDocument, long[] windowStart) =>
        new() { InputIds = (long[])ids.Clone(), AttentionMask = (long[])mask.Clone(), DocumentsRead = documentsRead,
                WindowDocument = (long[])windowDocument.Clone(), WindowStart = (long[])windowStart.Clone() };

    /// <summary>
    /// The batches as an ML.NET source (columns input_ids and attention_mask, int64 vectors of B·T; documents_read), read
    /// on a second thread up to <see cref="ReadAheadBytes"/> ahead, so reading and tokenizing overlap the model's run
    /// (<paramref name="readAhead"/> false: the batches are already read ahead, as a <see cref="Dealer{T}"/> deals them).
    /// </summary>
    public static IDataView View(MLContext ml, IEnumerable<BatchRow> batches, int batchSize, int seqLen, bool readAhead = true) =>
        ml.Data.LoadFromEnumerable(readAhead ? ReadAhead.Of(batches, ReadAheadBatches(batchSize, seqLen)) : batches, Schema(batchSize, seqLen));

    /// <summary>Batches of B × T that fit in <see cref="ReadAheadBytes"/> (at least 4).</summary>
    public static int ReadAheadBatches(int batchSize, int seqLen) => (int)Math.Clamp(ReadAheadBytes / (16L * batchSize * seqLen), 4, 4096);

    /// <summary>
    /// How far the reading thread may run ahead, in bytes of batches (ids and mask, 16 bytes a token). Far enough that it
    /// tokenizes in bursts and then sleeps: a thread tokenizing beside every model run slows ONNX Runtime's intra-op
    /// threads by more than the time it takes (35 against 30 ms a batch, 2 cores, quick model). Bounded, whatever the corpus size.
    /// </summary>
    public const long ReadAheadBytes = 32L << 20;

    /// <summary>The columns of a batch row for batches of <paramref name="batchSize"/> × <paramref name="seqLen"/>.</summary>
    public static SchemaDefinition Schema(int batchSize, int seqLen)
    {
        var schema = SchemaDefinition.Create(typeof(BatchRow));
        schema["input_ids"].ColumnType = new VectorDataViewType(NumberDataViewType.Int64, batchSize * seqLen);
        schema["attention_mask"].ColumnType = new VectorDataViewType(NumberDataViewType.Int64, batchSize * seqLen);
        schema["window_document"].ColumnType = new VectorDataViewType(NumberDataViewType.Int64, batchSize);
        schema["window_start"].ColumnType = new VectorDataViewType(NumberDataViewType.Int64, batchSize);
        return schema;
    }
}
