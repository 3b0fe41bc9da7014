using Microsoft.ML.OnnxRuntime;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>
/// Streams a corpus through an ONNX model with ML.NET and accumulates per-layer unit use: documents → tokens →
/// windows → B windows per row (an IDataView read ahead on its own thread) → the analysis graph, counting in place,
/// run by <see cref="ModelRunner"/> behind <see cref="InGraphCounts"/> (ML.NET's ApplyOnnxModel only with
/// <c>--dense-activations</c>) → one cursor-driven consumer adding the counts to <see cref="LayerUnitUse"/>.
/// Memory is bounded by one batch and the per-layer counts, whatever the corpus size. By concern: this file (the
/// request checked, the plan, the output written), Analyzer.Devices.cs (several devices), Analyzer.Stream.cs (one
/// device's stream and its timings), Analyzer.Counting.cs (each batch into counts, inline or on a counting thread).
/// </summary>
public static partial class Analyzer
{
    /// <summary>Most tokens one batch may hold (B × T): far beyond any accelerator's memory for a transformer, and
    /// within .NET's arrays.</summary>
    public const long MaxBatchTokens = 1L << 24;

    /// <summary>Most top windows kept per unit.</summary>
    public const int MaxTopExamples = 10_000;

    /// <summary>Runs the analysis and writes counts.json, stats.json and the layer CSVs into OutDir (swapped in when
    /// complete, <see cref="OutputFolder"/>).</summary>
    public static SparsityStats Run(
        AnalysisRequest r,
        IProgress<AnalysisProgress>? progress = null,
        CancellationToken cancel = default,
        TextWriter? notes = null
    )
    {
        if (r.SeqLen < 1 || r.BatchSize < 1)
            throw new UserInputException("--seq-len and --batch-size must be at least 1.");
        if ((long)r.SeqLen * r.BatchSize > MaxBatchTokens)
            throw new UserInputException(
                $"--batch-size {r.BatchSize} × --seq-len {r.SeqLen} = {(long)r.BatchSize * r.SeqLen:N0} tokens a batch exceeds the {MaxBatchTokens:N0} one batch may hold: use smaller batches."
            );
        if (r.ShardCount < 1 || r.ShardIndex < 0 || r.ShardIndex >= r.ShardCount)
            throw new UserInputException($"--shard {r.ShardIndex}/{r.ShardCount}: use i/n with 0 ≤ i < n.");
        if (r.MaxTokens is <= 0)
            throw new UserInputException("--max-tokens must be positive.");
        if (r.TopExamples < 0)
            throw new UserInputException($"--top-examples {r.TopExamples}: use a count K ≥ 1, or 0 for none.");
        if (r.TopExamples > MaxTopExamples)
            throw new UserInputException(
                $"--top-examples {r.TopExamples} exceeds {MaxTopExamples:N0} windows per unit (all are held in memory, d_ff × K per layer): use a smaller K."
            );
        if (r.TopExamples > 0 && r.Threshold < 0)
            throw new UserInputException(
                $"--top-examples ranks activations above the threshold, which must be ≥ 0 (got {r.Threshold}): ReLU activations are never negative."
            );
        var devices = r.Devices;
        var precision = r.Precision;
        if (r.CudaGraph && devices.Any(d => d.CudaId == null))
            throw new UserInputException(
                "--cuda-graph captures the GPU's kernels: add --device cuda, or leave it out on the CPU."
            );
        if (precision != Precision.Fp32 && devices.Any(d => d.CudaId == null))
            throw new UserInputException(
                $"--precision {precision.Name()} runs on a GPU only (ONNX Runtime's CPU provider lacks half-precision kernels for most ops): add --device cuda, or use fp32."
            );
        var tokenizer = TextTokenizer.FromSpec(r.Tokenizer);
        var proto = EncoderDecoder.IsFolder(r.Model) ? EncoderDecoder.LoadFolder(r.Model) : OnnxGraph.Load(r.Model);
        var pairs = PairSettingsFor(r, proto);
        if (r.Fuse && !r.DenseActivations && devices.Any(d => d.CudaId != null))
            proto = FuseForGpu(proto, notes);
        var plan = AnalysisPlan.For(
            proto,
            r.Activations,
            r.Threshold,
            r.DenseActivations,
            precision,
            r.DenseActivations ? 0 : r.TopExamples,
            histogramOnHost: devices.All(d => d.CudaId == null),
            halfCounts: devices.All(d => d.CudaId != null) && r.SeqLen <= StatsReduction.HalfExactSum,
            windowsPerBatch: r.BatchSize
        );
        if (plan.ExportedThreshold is float baked && baked != r.Threshold)
            throw new UserInputException(
                $"This stats-variant model counts activations above {baked}; --threshold {r.Threshold} needs a re-export (`export --variant stats --threshold {r.Threshold}`) or the dense variant."
            );
        long vocab = plan.VocabSize ?? tokenizer.VocabSize ?? long.MaxValue;
        if (tokenizer.VocabSize is int tv && plan.VocabSize is long mv && tv > mv)
            throw new UserInputException(
                $"The tokenizer has {tv} ids but the model's vocabulary has {mv}: use the model's tokenizer."
            );
        if (plan.MaxSeqLen is long maxT && r.SeqLen > maxT)
            throw new UserInputException($"--seq-len {r.SeqLen} exceeds what the model can take ({maxT} positions).");
        // Cheap pre-pass: the estimate of time left (pairs: the pairs, counted without tokenizing unless
        // reconstructed).
        long totalDocuments =
            pairs == null ? CorpusBatches.DocumentCount(r.Corpus, tokenizer, r.SeqLen)
            : pairs.Source == "tsv" ? TextDocuments.ReadPairs(r.Corpus).LongCount()
            : CorpusBatches.WindowsUpTo(r.Corpus, tokenizer, r.SeqLen, r.MaxTokens, long.MaxValue);
        if (totalDocuments == 0)
            throw new UserInputException($"The corpus {r.Corpus} holds no {(pairs == null ? "documents" : "pairs")}.");
        // Memory follows the data, not the option: a corpus of fewer windows than a batch runs as one batch of just
        // those windows (the filler windows would count nowhere, so the statistics are the same; the header keeps
        // --batch-size).
        long fewest =
            pairs == null
                ? CorpusBatches.WindowsUpTo(r.Corpus, tokenizer, r.SeqLen, r.MaxTokens, r.BatchSize)
                : Math.Min(totalDocuments, r.BatchSize);
        var run = r with { BatchSize = (int)Math.Clamp(fewest, 1, r.BatchSize) };
        var tally = new PairTally();

        SparsityStats? stats = null;
        OutputFolder.Write(r.OutDir, "analyze", dir =>
        {
            // In-graph counts run the plan's graph from memory; ML.NET's ApplyOnnxModel (dense activations) needs a
            // file.
            bool rewrite = plan.Rewritten && !plan.ReadsCounts;
            string modelFile = rewrite ? Path.Combine(dir, "analysis.onnx") : r.Model;
            if (rewrite)
                OnnxGraph.Save(plan.Graph, modelFile);
            var uses = plan.Layers.Select(l => new LayerUnitUse(l.DFf)).ToArray();
            var examples =
                r.TopExamples > 0 ? UnitExamples.Empty(plan.Layers.Select(l => l.DFf).ToList(), r.TopExamples) : null;
            long tokens;
            try
            {
                var prepared = new PreparedModel(plan);
                tokens = Stream(
                    run,
                    prepared,
                    modelFile,
                    devices,
                    vocab,
                    tokenizer,
                    uses,
                    examples,
                    totalDocuments,
                    progress,
                    cancel,
                    pairs,
                    tally
                );
                if (prepared.Profile is { } profile)
                    AtomicFile.WriteAllText(Path.Combine(dir, "profile.csv"), profile.ToCsv());
            }
            catch (InvalidOperationException e) when (e.GetBaseException() is UserInputException user)
            {
                throw user; // ML.NET wraps what the source stream throws on its worker thread
            }
            catch (Exception e) when (e is OnnxRuntimeException || e.GetBaseException() is OnnxRuntimeException)
            {
                // A window longer than a position table: ONNX Runtime names the Gather and its table's rows.
                var table = System.Text.RegularExpressions.Regex.Match(
                    e.GetBaseException().Message,
                    @"Gather node\. Name:'([^']+)'.*out of data bounds.*inclusive range \[-(\d+),"
                );
                if (table.Success)
                    throw new UserInputException(
                        $"--seq-len {r.SeqLen} exceeds what {Path.GetFileName(r.Model)} can take: its Gather '{table.Groups[1].Value}' reads a table of "
                            + $"{table.Groups[2].Value} rows (its positions; some models reserve a few), and a window of {r.SeqLen} indexes past it: use a shorter --seq-len."
                    );
                throw new UserInputException(
                    $"ONNX Runtime could not run {Path.GetFileName(r.Model)} on batches of {r.BatchSize} × {r.SeqLen}: {e.GetBaseException().Message.Split('\n')[0]}"
                );
            }
            if (tokens == 0)
                throw new UserInputException(
                    $"The corpus {r.Corpus} produced no tokens for shard {r.ShardIndex}/{r.ShardCount}."
                );
            if (rewrite)
                foreach (string f in new[] { modelFile, modelFile + ".data" }.Where(File.Exists))
                    File.Delete(f);

            var header = new AnalysisHeader(
                Path.GetFileName(r.Model),
                r.Corpus,
                r.Tokenizer.ToString(),
                r.SeqLen,
                r.BatchSize,
                r.Threshold,
                r.MaxTokens,
                [$"{r.ShardIndex}/{r.ShardCount}"],
                Tool.Producer,
                Provenance.ModelSha256(r.Model),
                Provenance.Corpus(r.Corpus),
                Provenance.TokenizerSha256(tokenizer),
                precision.Name(),
                r.TopExamples,
                examples != null ? UnitExamples.Format : null,
                pairs
            );
            var counts = new SparsityCounts(
                header,
                plan.Layers.Select(
                        (l, i) =>
                            LayerCounts.From(
                                l.Name,
                                i,
                                uses[i],
                                l.Stack.Name(),
                                l.Stack == ModelStack.None ? null : l.StackIndex
                            )
                    )
                    .ToList(),
                pairs == null ? null : tally.Counts
            );
            examples?.Write(dir);
            counts.Write(dir);
            stats = SparsityStats.From(counts);
        });
        return stats!;
    }

    /// <summary>What runs on every device: the plan, and the one profile (<c>--profile</c>: the first device to finish
    /// takes it).</summary>
    sealed class PreparedModel(AnalysisPlan plan)
    {
        public AnalysisPlan Plan => plan;
        public int Profiling;
        public OperatorProfile? Profile;
    }

    /// <summary>
    /// What <c>analyze</c> runs on a GPU: attention as ONNX Runtime's fused kernel (MultiHeadAttention), checked on the
    /// CPU in float32 as <c>fuse-attention</c> checks it; a graph it does not match, or whose check fails, is returned
    /// as it is, and a line on <paramref name="notes"/> says which. Stats exports and graphs already fused are left
    /// alone.
    /// </summary>
    public static ModelProto FuseForGpu(ModelProto model, TextWriter? notes)
    {
        if (model.Graph.Output.Any(o => o.Name == StatsReduction.UnitTokensOutput(0)))
            return model; // a stats export: counted as written
        if (model.Graph.Node.Any(n => n.OpType is "MultiHeadAttention" or "Attention" or "GroupQueryAttention"))
            return model; // fused already
        if (!model.Graph.Node.Any(n => n.OpType == "Softmax"))
            return model;
        try
        {
            var (result, diff) = Exporting.CheckedExport.FuseAttentionChecked(model, "analysing the graph as it is");
            notes?.WriteLine(
                string.Create(
                    System.Globalization.CultureInfo.InvariantCulture,
                    $"Attention fused for the GPU: {result.Fused} block(s) as MultiHeadAttention (logits within {diff:E1} of the original on the CPU in fp32){(result.Skipped.Count > 0 ? $"; {result.Skipped.Count} left as they were: {result.Skipped[0]}" : "")}. --no-fuse runs the graph as it is."
                )
            );
            return result.Model;
        }
        catch (UserInputException e)
        {
            notes?.WriteLine($"warning: attention not fused: {e.Message.Split("; ")[0]}.");
            return model;
        }
    }

    // A row's width: T tokens, or for pairs T source ids then T decoder input ids.
    static int RowLength(AnalysisRequest r, AnalysisPlan plan) => plan.Pairs ? 2 * r.SeqLen : r.SeqLen;

    // An encoder-decoder's pairs (null for other models), and what analysis cannot do with them yet.
    static PairSettings? PairSettingsFor(AnalysisRequest r, ModelProto model)
    {
        var pairs = PairCorpus.SettingsFor(r.Model, model, r.Corpus, r.Pairs, r.DecoderStartId, r.PadId);
        if (pairs != null && r.DenseActivations)
            throw new UserInputException(
                "--dense-activations is not available for encoder-decoder models: leave it out (the in-graph counts are the same numbers)."
            );
        return pairs;
    }

    static AnalysisProgress Progress(long tokens, long batches, long documents, long totalDocuments, TimeSpan elapsed)
    {
        double fraction = (double)documents / totalDocuments;
        TimeSpan? left = fraction > 0 ? TimeSpan.FromSeconds(elapsed.TotalSeconds * (1 - fraction) / fraction) : null;
        return new AnalysisProgress(
            tokens,
            batches,
            documents,
            totalDocuments,
            tokens / Math.Max(1e-9, elapsed.TotalSeconds),
            elapsed,
            left
        );
    }
}
