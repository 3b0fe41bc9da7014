using Microsoft.ML;
using Microsoft.ML.Data;
using Sparsity.Analysis;
using Sparsity.Corpora;

namespace Sparsity.Pipeline.Streaming;

/// <summary>One batch of the corpus stream (one ML.NET row): B windows of T tokens, so ONNX Runtime runs a whole batch
/// per call.</summary>
public sealed class BatchRow
{
    /// <summary>Token ids, [B, T] row-major (pairs: [B, 2T], the source then the decoder's inputs).</summary>
    [ColumnName("input_ids")]
    public long[] InputIds = [];

    /// <summary>1 for real tokens, 0 for padding (the tail of a document's last window, or filler windows of the last
    /// batch).</summary>
    [ColumnName("attention_mask")]
    public long[] AttentionMask = [];

    /// <summary>Documents of the corpus read when this batch was cut (progress and its estimate of time
    /// left).</summary>
    [ColumnName("documents_read")]
    public long DocumentsRead;

    /// <summary>Per window: the index of its document in the stream (−1 for a filler window), where top examples
    /// point.</summary>
    [ColumnName("window_document")]
    public long[] WindowDocument = [];

    /// <summary>Per window: the offset of its first token in its document.</summary>
    [ColumnName("window_start")]
    public long[] WindowStart = [];

    /// <summary>Pairs only, [B, T]: the target ids the decoder's positions predict (pad where the target has ended);
    /// empty otherwise.</summary>
    [ColumnName("targets")]
    public long[] Targets = [];
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
    /// The corpus's documents as token ids, streamed: text tokenized, or a pre-tokenized corpus
    /// (<see cref="TokenDocuments"/>, with <c>--tokenizer ids</c>) read in chunks of whole windows of
    /// <paramref name="seqLen"/>.
    /// </summary>
    public static IEnumerable<long[]> Tokens(string corpus, TextTokenizer tokenizer, int seqLen)
    {
        if (!TokenDocuments.Handles(corpus))
            return TextDocuments.Read(corpus).Select(text => tokenizer.Encode(text).Select(id => (long)id).ToArray());
        RequireIds(corpus, tokenizer);
        return TokenDocuments.Read(corpus, ChunkWindows * seqLen);
    }

    /// <summary>Documents in the corpus, counted before the stream starts (progress and its estimate of time
    /// left).</summary>
    public static long DocumentCount(string corpus, TextTokenizer tokenizer, int seqLen)
    {
        if (!TokenDocuments.Handles(corpus))
            return TextDocuments.Read(corpus).LongCount();
        RequireIds(corpus, tokenizer);
        return TokenDocuments.Count(corpus, ChunkWindows * seqLen);
    }

    /// <summary>Windows of <paramref name="seqLen"/> the corpus holds (within <paramref name="maxTokens"/>), counted up
    /// to <paramref name="limit"/> only.</summary>
    public static long WindowsUpTo(string corpus, TextTokenizer tokenizer, int seqLen, long? maxTokens, long limit)
    {
        long windows = 0,
            tokens = 0;
        foreach (long[] doc in Tokens(corpus, tokenizer, seqLen))
        {
            long length = maxTokens is long cap ? Math.Min(doc.Length, cap - tokens) : doc.Length;
            if (length <= 0)
                break;
            tokens += length;
            windows += (length + seqLen - 1) / seqLen;
            if (windows >= limit)
                return limit;
        }
        return windows;
    }

    // A token file is read this many windows at a time.
    const int ChunkWindows = 4096;

    static void RequireIds(string corpus, TextTokenizer tokenizer)
    {
        if (tokenizer.Spec != "ids")
            throw new UserInputException(
                $"Corpus {corpus} holds token ids, not text: pass --tokenizer ids (the ids must be the model's), not {tokenizer.Spec}."
            );
    }

    /// <summary>Batches of this shard, streamed; never more than one batch in memory.</summary>
    public static IEnumerable<BatchRow> Pack(
        IEnumerable<long[]> documents,
        int seqLen,
        int batchSize,
        long? maxTokens,
        int shardIndex,
        int shardCount,
        long vocabSize
    )
    {
        var ids = new long[batchSize * seqLen];
        var mask = new long[batchSize * seqLen];
        var windowDocument = new long[batchSize];
        var windowStart = new long[batchSize];
        Array.Fill(windowDocument, -1);
        int window = 0;
        long tokens = 0,
            batchIndex = 0,
            documentsRead = 0;
        foreach (long[] doc in documents)
        {
            documentsRead++;
            for (int start = 0; start < doc.Length; start += seqLen)
            {
                int length = Math.Min(seqLen, doc.Length - start);
                if (maxTokens is long cap)
                    length = (int)Math.Min(length, cap - tokens);
                if (length <= 0)
                    break;
                for (int t = 0; t < length; t++)
                {
                    long id = doc[start + t];
                    if (id < 0 || id >= vocabSize)
                        throw new UserInputException(
                            $"Token id {id} is outside the model's vocabulary (0..{vocabSize - 1}): the tokenizer does not match the model."
                        );
                    ids[window * seqLen + t] = id;
                    mask[window * seqLen + t] = 1;
                }
                tokens += length;
                (windowDocument[window], windowStart[window]) = (documentsRead - 1, start);
                if (++window == batchSize)
                {
                    if (batchIndex++ % shardCount == shardIndex)
                        yield return Emit(ids, mask, documentsRead, windowDocument, windowStart);
                    Array.Clear(ids);
                    Array.Clear(mask);
                    Array.Fill(windowDocument, -1);
                    Array.Clear(windowStart);
                    window = 0;
                }
            }
            if (maxTokens is long max && tokens >= max)
                break;
        }
        if (window > 0 && batchIndex % shardCount == shardIndex)
            yield return Emit(ids, mask, documentsRead, windowDocument, windowStart);
    }

    /// <summary>
    /// An encoder-decoder corpus as token pairs: a .tsv corpus's lines, each side tokenized
    /// (<see cref="TextDocuments.ReadPairs"/>), or with <paramref name="reconstruct"/> each window of
    /// <paramref name="seqLen"/> of a text or token corpus paired with itself.
    /// </summary>
    public static IEnumerable<(long[] Source, long[] Target)> PairTokens(
        string corpus,
        TextTokenizer tokenizer,
        int seqLen,
        bool reconstruct
    )
    {
        if (reconstruct)
            return Tokens(corpus, tokenizer, seqLen)
                .SelectMany(doc =>
                    Enumerable
                        .Range(0, (doc.Length + seqLen - 1) / seqLen)
                        .Select(w => doc[(w * seqLen)..Math.Min(doc.Length, (w + 1) * seqLen)])
                        .Select(w => (w, w))
                );
        long[] Encode(string text) => tokenizer.Encode(text).Select(id => (long)id).ToArray();
        return TextDocuments.ReadPairs(corpus).Select(p => (Encode(p.Source), Encode(p.Target)));
    }

    /// <summary>
    /// Batches of pairs for an encoder-decoder model, streamed like <see cref="Pack"/>: each row holds T source ids
    /// then the T decoder input ids (the target shifted right after <paramref name="decoderStart"/>, as T5 trains),
    /// padded with <paramref name="pad"/>; the mask holds the source's real positions then the target's. A side longer
    /// than T is cut to T and counted in <paramref name="tally"/> (this shard's pairs only). --max-tokens counts both
    /// sides; the pair that reaches it is the last.
    /// </summary>
    public static IEnumerable<BatchRow> PackPairs(
        IEnumerable<(long[] Source, long[] Target)> pairs,
        int seqLen,
        int batchSize,
        long? maxTokens,
        int shardIndex,
        int shardCount,
        long vocabSize,
        long decoderStart,
        long pad,
        PairTally tally
    )
    {
        int width = 2 * seqLen;
        var ids = new long[batchSize * width];
        var mask = new long[batchSize * width];
        var pairIndex = new long[batchSize];
        var targets = new long[batchSize * seqLen];
        Array.Fill(ids, pad);
        Array.Fill(targets, pad);
        Array.Fill(pairIndex, -1);
        int row = 0;
        long tokens = 0,
            batchIndex = 0,
            read = 0,
            cutSources = 0,
            cutTargets = 0;
        void Check(long id)
        {
            if (id < 0 || id >= vocabSize)
                throw new UserInputException(
                    $"Token id {id} is outside the model's vocabulary (0..{vocabSize - 1}): the tokenizer does not match the model."
                );
        }
        foreach (var (id, option) in new[] { (decoderStart, "--decoder-start-id"), (pad, "--pad-id") })
            if (id < 0 || id >= vocabSize)
                throw new UserInputException(
                    $"The decoder's {(option == "--pad-id" ? "pad" : "start")} id {id} is outside the model's vocabulary (0..{vocabSize - 1}): give {option} (T5: 0), or fix config.json beside the model."
                );
        foreach (var (source, target) in pairs)
        {
            read++;
            int s = Math.Min(seqLen, source.Length),
                t = Math.Min(seqLen, target.Length);
            cutSources += source.Length > seqLen ? 1 : 0;
            cutTargets += target.Length > seqLen ? 1 : 0;
            int at = row * width;
            for (int i = 0; i < s; i++)
            {
                Check(source[i]);
                (ids[at + i], mask[at + i]) = (source[i], 1);
            }
            ids[at + seqLen] = decoderStart; // the decoder's first input; its own target is target[0]
            for (int i = 0; i < t; i++)
            {
                Check(target[i]);
                if (i + 1 < seqLen)
                    ids[at + seqLen + i + 1] = target[i];
                mask[at + seqLen + i] = 1;
                targets[row * seqLen + i] = target[i];
            }
            tokens += s + t;
            pairIndex[row] = read - 1;
            if (++row == batchSize)
            {
                if (batchIndex++ % shardCount == shardIndex)
                {
                    tally.Add(row, cutSources, cutTargets);
                    yield return WithTargets(Emit(ids, mask, read, pairIndex, new long[batchSize]), targets);
                }
                (cutSources, cutTargets, row) = (0, 0, 0);
                Array.Fill(ids, pad);
                Array.Fill(targets, pad);
                Array.Clear(mask);
                Array.Fill(pairIndex, -1);
            }
            if (maxTokens is long max && tokens >= max)
                break;
        }
        if (row > 0 && batchIndex % shardCount == shardIndex)
        {
            for (int r = row; r < batchSize; r++)
                ids[r * width + seqLen] = decoderStart;
            tally.Add(row, cutSources, cutTargets);
            yield return WithTargets(Emit(ids, mask, read, pairIndex, new long[batchSize]), targets);
        }
    }

    static BatchRow WithTargets(BatchRow row, long[] targets)
    {
        row.Targets = (long[])targets.Clone();
        return row;
    }

    static BatchRow Emit(long[] ids, long[] mask, long documentsRead, long[] windowDocument, long[] windowStart) =>
        new()
        {
            InputIds = (long[])ids.Clone(),
            AttentionMask = (long[])mask.Clone(),
            DocumentsRead = documentsRead,
            WindowDocument = (long[])windowDocument.Clone(),
            WindowStart = (long[])windowStart.Clone(),
        };

    /// <summary>
    /// The batches as an ML.NET source (columns input_ids and attention_mask, int64 vectors of B·T; documents_read),
    /// read on a second thread up to <see cref="ReadAheadBytes"/> ahead, so reading and tokenizing overlap the model's
    /// run (<paramref name="readAhead"/> false: the batches are already read ahead, as a <see cref="Dealer{T}"/> deals
    /// them).
    /// </summary>
    public static IDataView View(
        MLContext ml,
        IEnumerable<BatchRow> batches,
        int batchSize,
        int seqLen,
        bool readAhead = true
    ) =>
        ml.Data.LoadFromEnumerable(
            readAhead ? ReadAhead.Of(batches, ReadAheadBatches(batchSize, seqLen)) : batches,
            Schema(batchSize, seqLen)
        );

    /// <summary>Batches of B × T that fit in <see cref="ReadAheadBytes"/> (at least 4).</summary>
    public static int ReadAheadBatches(int batchSize, int seqLen) =>
        (int)Math.Clamp(ReadAheadBytes / (16L * batchSize * seqLen), 4, 4096);

    /// <summary>
    /// How far the reading thread may run ahead, in bytes of batches (ids and mask, 16 bytes a token). Far enough that
    /// it tokenizes in bursts and then sleeps: a thread tokenizing beside every model run slows ONNX Runtime's intra-op
    /// threads by more than the time it takes (35 against 30 ms a batch, 2 cores, quick model). Bounded, whatever the
    /// corpus size.
    /// </summary>
    public const long ReadAheadBytes = 32L << 20;

    /// <summary>The columns of a batch row for batches of <paramref name="batchSize"/> ×
    /// <paramref name="seqLen"/>.</summary>
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

/// <summary>An encoder-decoder stream's pairs and cut sides so far (written by the reading thread, read when it is
/// done).</summary>
public sealed class PairTally
{
    long _pairs,
        _sources,
        _targets;

    /// <summary>Adds one batch's pairs and cut sides.</summary>
    public void Add(long pairs, long cutSources, long cutTargets)
    {
        Interlocked.Add(ref _pairs, pairs);
        Interlocked.Add(ref _sources, cutSources);
        Interlocked.Add(ref _targets, cutTargets);
    }

    /// <summary>The totals.</summary>
    public PairCounts Counts =>
        new(Interlocked.Read(ref _pairs), Interlocked.Read(ref _sources), Interlocked.Read(ref _targets));
}
