using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Pipeline.Streaming;
using Sparsity.Training.Data;

namespace Sparsity.Pipeline.Variants;

/// <summary>
/// What <c>prune</c> was asked. <paramref name="Out"/> is a .onnx file (the pruned graph only) or a folder (model, mask,
/// tokenizer, evaluation against the input model, model card; needs <paramref name="Evaluation"/>). <paramref name="Stats"/>
/// is the stats.json the mask came from, if any: it must describe this model, and a dead-only mask is checked exact on its text.
/// </summary>
public sealed record PruneRequest(string Model, UnitMask Mask, string Out, IReadOnlyList<string> Activations, string? Stats = null,
    bool DeadOnly = false, EvaluationRequest? Evaluation = null, bool AllowStatsCorpus = false, string CommandLine = "");

/// <summary>What pruning did: sizes before and after, the exactness check (dead-only), and the two evaluations (folder output).</summary>
public sealed record PruneResult(Surgery.PruneReport Report, float? MaxLogitChange, ProbeBatch? ExactOn, Evaluation? Reference, Evaluation? Pruned)
{
    /// <summary>The output the exactness check compared: logits, or the last hidden state of a stack exported without them.</summary>
    public string Compared { get; init; } = "logits";
}

/// <summary>Pruning as a library call: slice the MLP weights by a mask, check the graph runs (exactly, for dead units), write it.</summary>
public static class Pruning
{
    /// <summary>Prunes, verifies and writes <see cref="PruneRequest.Out"/>; nothing is written when a check fails.</summary>
    public static PruneResult Run(PruneRequest r)
    {
        if (VariantFolder.IsModelFile(r.Out)) ModelFiles.RequireWritable("prune", r.Out, [r.Model], r.Stats ?? "");
        var proto = OnnxGraph.Load(r.Model);
        var sites = MlpSites.Find(proto, r.Activations);
        if (r.Stats != null) RequireStatsOf(r.Stats, r.Model);
        var (pruned, prunedSites, report) = Surgery.Prune(proto, sites, r.Mask);
        // Dead units are dead on the text the statistics came from: on a batch of it the pruned model must be exact.
        var exactOn = r.DeadOnly && r.Stats != null ? StatsBatch(r.Stats, GraphInputs.VocabularySize(proto)) : null;
        float? change = exactOn != null ? GraphCheck.Verify(pruned, "pruned graph", exactOn, reference: proto) : null;
        if (exactOn == null) GraphCheck.Verify(pruned, "pruned graph", ProbeBatch.For(proto));
        if (VariantFolder.IsModelFile(r.Out))
        {
            ModelFiles.Save("prune", pruned, r.Out, prunedSites);
            return new PruneResult(report, change, exactOn, null, null) { Compared = GraphCheck.OutputName(proto) };
        }
        OutputFolder.RequireWritable(r.Out, "prune");
        var request = r.Evaluation ?? throw new UserInputException("Writing a folder evaluates the pruned model: give --eval-corpus, --tokenizer and --seq-len (or a .onnx --out).");
        if (r.Stats != null && !r.AllowStatsCorpus && SameFile(SparsityStats.Load(r.Stats).Corpus, request.Corpus))
            throw new UserInputException($"--eval-corpus is the text the statistics came from ({request.Corpus}): evaluate on held-out text, or pass --allow-stats-corpus.");
        var reference = Evaluator.Run(request);
        Evaluation result = null!;
        OutputFolder.Write(r.Out, "prune", dir => result = VariantFolder.Write(dir, pruned, $"Pruned {Path.GetFileNameWithoutExtension(r.Model)}", r.CommandLine, request, reference, r.Mask, r.Model));
        return new PruneResult(report, change, exactOn, reference, result) { Compared = GraphCheck.OutputName(proto) };
    }

    // A mask from another model's statistics would remove the wrong units: the stats record the model's SHA-256.
    internal static void RequireStatsOf(string statsPath, string modelPath)
    {
        var s = SparsityStats.Load(statsPath);
        if (s.ModelSha256 != null && s.ModelSha256 != Provenance.ModelSha256(modelPath))
            throw new UserInputException($"{statsPath} describes another model ({s.Model}, SHA-256 {s.ModelSha256[..12]}…), not {modelPath}: analyze this model first.");
    }

    // The first batch of the text the statistics came from, when it is still readable; null otherwise.
    static ProbeBatch? StatsBatch(string statsPath, long? vocab)
    {
        var s = SparsityStats.Load(statsPath);
        if (!File.Exists(s.Corpus) && !Directory.Exists(s.Corpus)) return null;
        var tokenizer = TextTokenizer.FromSpec(s.Tokenizer);
        var first = CorpusBatches.Pack(CorpusBatches.Tokens(s.Corpus, tokenizer, s.SeqLen), s.SeqLen, s.BatchSize, null, 0, 1, vocab ?? long.MaxValue).FirstOrDefault();
        return first == null ? null : new ProbeBatch(first.InputIds, first.AttentionMask, s.BatchSize, s.SeqLen);
    }

    static bool SameFile(string a, string b) => Path.GetFullPath(a) == Path.GetFullPath(b);
}
