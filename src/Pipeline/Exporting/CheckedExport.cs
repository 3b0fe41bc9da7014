using Onnx;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Training;
using Sparsity.Training.Model;
using static TorchSharp.torch;

namespace Sparsity.Pipeline.Exporting;

/// <summary>
/// Export as a library call: the TorchSharp model written as ONNX with its sidecar, after ONNX Runtime's logits were
/// checked against TorchSharp's (as llm.c checks against PyTorch). Nothing is written when they disagree.
/// </summary>
public static class CheckedExport
{
    /// <summary>Largest logit difference accepted.</summary>
    public const float Tolerance = 1e-4f;

    /// <summary>
    /// Exports <paramref name="model"/> to <paramref name="path"/> (and <c>.mlp.json</c>); the dense variant is first checked
    /// against TorchSharp. Returns the graph and the parity figure (dense only).
    /// </summary>
    public static (ModelProto Model, float? Parity) Write(ReluTransformer model, ExportVariant variant, float threshold, string path, bool fusedAttention = false)
    {
        var proto = ModelExporter.Export(model, variant, threshold, fusedAttention);
        float? parity = null;
        if (variant == ExportVariant.Dense)
        {
            float diff = MaxLogitDifference(model, proto);
            if (!(diff <= Tolerance))
                throw new InvalidOperationException($"The exported graph disagrees with TorchSharp by {diff:E2} (> {Tolerance:E0}); nothing was written. Please report this.");
            parity = diff;
        }
        OnnxGraph.Save(proto, path);
        MlpSidecar.Write(path, MlpSites.Find(proto));
        return (proto, parity);
    }

    /// <summary>Max |logits| difference between ONNX Runtime and TorchSharp on seeded random ids [2, min(32, seq_len)].</summary>
    public static float MaxLogitDifference(ReluTransformer model, ModelProto proto)
    {
        var c = model.Config;
        int batch = 2, seq = Math.Min(32, c.SeqLen);
        var random = new Random(0);
        long[] ids = Enumerable.Range(0, batch * seq).Select(_ => (long)random.Next(c.VocabSize)).ToArray();

        model.eval();
        float[] expected;
        using (no_grad())
        using (var input = tensor(ids, new long[] { batch, seq }))
        using (var logits = model.forward(input))
            expected = logits.data<float>().ToArray();

        var actual = GraphCheck.Logits(proto, new ProbeBatch(ids, Enumerable.Repeat(1L, ids.Length).ToArray(), batch, seq));
        float max = 0;
        for (int i = 0; i < expected.Length; i++) max = Math.Max(max, Math.Abs(actual[i] - expected[i]));
        return max;
    }

    /// <summary>
    /// Writes <paramref name="model"/> with every MLP activation exposed as an output (in layer order) and its sidecar,
    /// after checking in ONNX Runtime that the logits are unchanged. Returns the MLP sites found.
    /// </summary>
    public static IReadOnlyList<MlpSite> Instrument(ModelProto model, IReadOnlyList<string> activations, string path)
    {
        var sites = MlpSites.Find(model, activations);
        var instrumented = Surgery.Instrument(model, sites);
        GraphCheck.Verify(instrumented, "instrumented graph", ProbeBatch.For(model), reference: model);
        OnnxGraph.Save(instrumented, path);
        MlpSidecar.Write(path, sites);
        return sites;
    }

    /// <summary>
    /// Rewrites the causal self-attention of <paramref name="model"/> (any graph) into ONNX Runtime's fused
    /// MultiHeadAttention (<see cref="AttentionFusion"/>) and writes it, after checking in ONNX Runtime that its logits on
    /// real tokens equal the original's within 1e-4, on a batch whose windows end in padding. Nothing is written when no
    /// block matches. Returns the blocks fused, those left as they were (with why), and the largest logit difference.
    /// </summary>
    public static (int Fused, IReadOnlyList<string> Skipped, float MaxLogitChange) FuseAttention(ModelProto model, string path)
    {
        var result = AttentionFusion.Fuse(model);
        if (result.Fused == 0)
            throw new UserInputException($"No attention block was recognised ({(result.Skipped.Count == 0 ? "the graph has no Softmax" : result.Skipped[0])}); nothing was written.");
        var probe = ProbeBatch.For(model);
        long[] mask = [.. probe.Mask];
        for (int w = 0; w < probe.Batch; w++) for (int t = probe.SeqLen - 1 - 3 * w; t < probe.SeqLen; t++) mask[w * probe.SeqLen + t] = 0; // padding at the end
        float diff;
        try { diff = GraphCheck.Verify(result.Model, "graph with fused attention", probe with { Mask = mask }, reference: model); }
        catch (UserInputException e) when (e.Message.Contains("logits differ"))
        {
            // The fused operator masks causally: an encoder's attention, or a mask of another kind, changes the outputs.
            throw new UserInputException(e.Message.Replace("; nothing was written.", ": its attention is not causal (an encoder?) or masks otherwise than causally; nothing was written."));
        }
        OnnxGraph.Save(result.Model, path);
        if (TryFindSites(result.Model) is { } sites) MlpSidecar.Write(path, sites);
        return (result.Fused, result.Skipped, diff);
    }

    static IReadOnlyList<MlpSite>? TryFindSites(ModelProto model)
    {
        try { return MlpSites.Find(model); }
        catch (UserInputException) { return null; } // a graph without ReLU MLPs may still have its attention fused
    }
}
