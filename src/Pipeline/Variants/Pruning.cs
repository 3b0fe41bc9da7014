using Onnx;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Pipeline.Streaming;

namespace Sparsity.Pipeline.Variants;

/// <summary>
/// What <c>prune</c> was asked. <paramref name="Out"/> is a .onnx file (the pruned graph only) or a folder (model,
/// mask, tokenizer, evaluation against the input model, model card; needs <paramref name="Evaluation"/>).
/// <paramref name="Stats"/> is the stats.json the mask came from, if any: it must describe this model, and a dead-only
/// mask is checked exact on its text.
/// </summary>
public sealed record PruneRequest(
    string Model,
    UnitMask Mask,
    string Out,
    IReadOnlyList<string> Activations,
    string? Stats = null,
    bool DeadOnly = false,
    EvaluationRequest? Evaluation = null,
    bool AllowStatsCorpus = false,
    string CommandLine = ""
);

/// <summary>What pruning did: sizes before and after, the exactness check (dead-only), and the two evaluations (folder
/// output).</summary>
public sealed record PruneResult(
    Surgery.PruneReport Report,
    float? MaxLogitChange,
    ProbeBatch? ExactOn,
    Evaluation? Reference,
    Evaluation? Pruned
)
{
    /// <summary>The output the exactness check compared: logits, or the last hidden state of a stack exported without
    /// them.</summary>
    public string Compared { get; init; } = "logits";

    /// <summary>Files of an encoder-decoder folder not written (graphs with a past).</summary>
    public IReadOnlyList<string> LeftOut { get; init; } = [];
}

/// <summary>Pruning as a library call: slice the MLP weights by a mask, check the graph runs (exactly, for dead units),
/// write it.</summary>
public static class Pruning
{
    /// <summary>Prunes, verifies and writes <see cref="PruneRequest.Out"/>; nothing is written when a check
    /// fails.</summary>
    public static PruneResult Run(PruneRequest r)
    {
        if (EncoderDecoder.IsFolder(r.Model))
            return RunFolder(r);
        if (VariantFolder.IsModelFile(r.Out))
            ModelFiles.RequireWritable("prune", r.Out, [r.Model], r.Stats ?? "");
        var proto = OnnxGraph.Load(r.Model);
        var sites = MlpSites.Find(proto, r.Activations);
        if (r.Stats != null)
            RequireStatsOf(r.Stats, r.Model);
        var (pruned, prunedSites, report) = Surgery.Prune(proto, sites, r.Mask);
        // Dead units are dead on the text the statistics came from: on a batch of it the pruned model must be exact.
        var exactOn = r.DeadOnly && r.Stats != null ? StatsBatch(r.Stats, GraphInputs.VocabularySize(proto)) : null;
        float? change = exactOn != null ? GraphCheck.Verify(pruned, "pruned graph", exactOn, reference: proto) : null;
        if (exactOn == null)
            GraphCheck.Verify(pruned, "pruned graph", ProbeBatch.For(proto));
        if (VariantFolder.IsModelFile(r.Out))
        {
            ModelFiles.Save("prune", pruned, r.Out, prunedSites);
            return new PruneResult(report, change, exactOn, null, null) { Compared = GraphCheck.OutputName(proto) };
        }
        OutputFolder.RequireWritable(r.Out, "prune");
        var request = r.Evaluation
            ?? throw new UserInputException(
                "Writing a folder evaluates the pruned model: give --eval-corpus, --tokenizer and --seq-len (or a .onnx --out)."
            );
        if (r.Stats != null && !r.AllowStatsCorpus && SameFile(SparsityStats.Load(r.Stats).Corpus, request.Corpus))
            throw new UserInputException(
                $"--eval-corpus is the text the statistics came from ({request.Corpus}): evaluate on held-out text, or pass --allow-stats-corpus."
            );
        var reference = Evaluator.Run(request);
        Evaluation result = null!;
        OutputFolder.Write(r.Out, "prune", dir =>
            result = VariantFolder.Write(
                dir,
                pruned,
                $"Pruned {Path.GetFileNameWithoutExtension(r.Model)}",
                r.CommandLine,
                request,
                reference,
                r.Mask,
                r.Model
            )
        );
        return new PruneResult(report, change, exactOn, reference, result) { Compared = GraphCheck.OutputName(proto) };
    }

    // An Optimum folder in, a folder out: each stack's graph pruned by its part of the mask, checked joined.
    static PruneResult RunFolder(PruneRequest r)
    {
        if (VariantFolder.IsModelFile(r.Out))
            throw new UserInputException(
                $"{r.Model} is an encoder-decoder folder: it is pruned into a folder of the same layout; give --out DIR."
            );
        OutputFolder.RequireWritable(r.Out, "prune");
        var folder = EncoderDecoderFolder.Load(r.Model, r.Activations);
        if (r.Stats != null)
            RequireStatsOf(r.Stats, r.Model);
        r.Mask.Validate(folder.LayerSizes);
        if (r.Mask.Layers.All(l => l.Kept.Length == l.DFf))
            throw new UserInputException("The mask keeps every unit: pruning would write an unchanged model.");
        var pruned = folder;
        if (folder.MaskOf(r.Mask, ModelStack.Encoder) is { } encoderMask)
        {
            var (model, sites, _) = Surgery.Prune(folder.Encoder, folder.EncoderSites, encoderMask);
            pruned = pruned with { Encoder = model, EncoderSites = sites };
        }
        if (folder.MaskOf(r.Mask, ModelStack.Decoder) is { } decoderMask)
        {
            var (model, sites, _) = Surgery.Prune(folder.Decoder, folder.DecoderSites, decoderMask);
            pruned = pruned with { Decoder = model, DecoderSites = sites };
        }
        var reference = folder.Joined();
        var joined = pruned.Joined();
        var exactOn = r.DeadOnly && r.Stats != null ? StatsBatch(r.Stats, GraphInputs.VocabularySize(reference)) : null;
        float? change =
            exactOn != null ? GraphCheck.Verify(joined, "pruned encoder-decoder", exactOn, reference: reference) : null;
        if (exactOn == null)
            GraphCheck.Verify(joined, "pruned encoder-decoder", ProbeBatch.For(reference));
        IReadOnlyList<string> leftOut = [];
        OutputFolder.Write(r.Out, "prune", dir => leftOut = pruned.WriteTo(dir, "prune"));
        var combined = new Surgery.PruneReport(
            Surgery.Parameters(folder.Encoder) + Surgery.Parameters(folder.Decoder),
            Surgery.Parameters(pruned.Encoder) + Surgery.Parameters(pruned.Decoder),
            folder.Encoder.CalculateSize() + folder.Decoder.CalculateSize(),
            pruned.Encoder.CalculateSize() + pruned.Decoder.CalculateSize(),
            [.. folder.LayerSizes],
            [.. pruned.LayerSizes]
        );
        return new PruneResult(combined, change, exactOn, null, null) { LeftOut = leftOut };
    }

    // A mask from another model's statistics would remove the wrong units: the stats record the model's SHA-256.
    internal static void RequireStatsOf(string statsPath, string modelPath)
    {
        var s = SparsityStats.Load(statsPath);
        if (s.ModelSha256 != null && s.ModelSha256 != Provenance.ModelSha256(modelPath))
            throw new UserInputException(
                $"{statsPath} describes another model ({s.Model}, SHA-256 {s.ModelSha256[..12]}…), not {modelPath}: analyze this model first."
            );
    }

    // The first batch of the text the statistics came from, when it is still readable; null otherwise.
    static ProbeBatch? StatsBatch(string statsPath, long? vocab)
    {
        var s = SparsityStats.Load(statsPath);
        if (!File.Exists(s.Corpus) && !Directory.Exists(s.Corpus))
            return null;
        var tokenizer = TextTokenizer.FromSpec(s.Tokenizer);
        var first = (
            s.Pairs is { } pairs // an encoder-decoder's statistics come from pairs: rows of 2T
                ? PairCorpus.Batches(s.Corpus, tokenizer, pairs, s.SeqLen, s.BatchSize, null, vocab ?? long.MaxValue)
                : CorpusBatches.Pack(
                    CorpusBatches.Tokens(s.Corpus, tokenizer, s.SeqLen),
                    s.SeqLen,
                    s.BatchSize,
                    null,
                    0,
                    1,
                    vocab ?? long.MaxValue
                )
        ).FirstOrDefault();
        return first == null
            ? null
            : new ProbeBatch(first.InputIds, first.AttentionMask, s.BatchSize, first.InputIds.Length / s.BatchSize);
    }

    static bool SameFile(string a, string b) => Path.GetFullPath(a) == Path.GetFullPath(b);
}
