using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Training;
using Sparsity.Training.Model;
using static TorchSharp.torch;

namespace Sparsity.Pipeline.Exporting;

/// <summary>
/// What <c>export</c> was asked. <paramref name="Checkpoint"/> is a folder written by <c>train</c> or a Hugging Face
/// checkpoint (<see cref="HuggingFaceCheckpoint"/>). Weights over <paramref name="ExternalDataAbove"/> bytes (float32)
/// are streamed into <c>&lt;out&gt;.data</c> one tensor at a time. <paramref name="SkipParity"/> writes without
/// comparing ONNX Runtime with TorchSharp (for models that do not fit in memory twice); the graph is then not run.
/// <paramref name="WithPast"/> adds the key/value cache inputs and outputs (checked with an empty past; decoding
/// through it: <c>generate</c>).
/// </summary>
public sealed record ExportRequest(
    string Checkpoint,
    string Out,
    ExportVariant Variant = ExportVariant.Dense,
    float Threshold = 0f,
    bool FusedAttention = false,
    bool SkipParity = false,
    long ExternalDataAbove = ExternalData.InlineLimit,
    bool WithPast = false
);

/// <summary>What was exported: the model, where its weights came from, the parity figure (null when not checked), the
/// graph's outputs and files.</summary>
public sealed record ExportResult(
    ModelConfig Config,
    string Source,
    float? Parity,
    long Parameters,
    IReadOnlyList<string> Outputs,
    IReadOnlyList<string> Files,
    string? Deployment = null
);

/// <summary>
/// Export as a library call: the TorchSharp model written as ONNX with its sidecar, after ONNX Runtime's logits were
/// checked against TorchSharp's (as llm.c checks against PyTorch). Files are written into a temporary sibling folder
/// and moved into place only when the check passed; nothing is written when they disagree.
/// </summary>
public static class CheckedExport
{
    /// <summary>Largest logit difference accepted.</summary>
    public const float Tolerance = 1e-4f;

    /// <summary>Exports the checkpoint <paramref name="r"/> names (ours or Hugging Face's), checked unless asked not
    /// to.</summary>
    public static ExportResult Run(ExportRequest r)
    {
        if (!Directory.Exists(r.Checkpoint))
            throw new UserInputException($"Checkpoint folder {r.Checkpoint} does not exist.");
        if (!r.WithPast || r.Out.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
        {
            // Every file of the checkpoint is an input (weights, config, tokenizer), except earlier exports being
            // replaced.
            var inputs = Directory
                .EnumerateFiles(r.Checkpoint, "*", SearchOption.AllDirectories)
                .Where(f => !OutputFile.IsOurs(f, "export"));
            OutputFile.Require("export", ModelFiles.Written(r.Out), inputs);
            var exported = Export(r, null);
            OutputFile.Record("export", exported.Files);
            return exported;
        }
        // A graph with a cache written to a folder: the folder ONNX Runtime GenAI loads, swapped in whole.
        ExportResult result = null!;
        OutputFolder.Write(r.Out, "export", dir =>
            result = Export(r with { Out = Path.Combine(dir, "model.onnx") }, dir)
        );
        return result with
        {
            Files =
            [
                .. result.Files.Select(f => Path.Combine(r.Out, Path.GetFileName(f))),
                Path.Combine(r.Out, GenAiFolder.ConfigFile),
            ],
        };
    }

    static ExportResult Export(ExportRequest r, string? genAiFolder)
    {
        if (HuggingFaceCheckpoint.IsOne(r.Checkpoint))
        {
            var hf = HuggingFaceCheckpoint.Open(r.Checkpoint);
            using var reference = r.SkipParity || r.Variant != ExportVariant.Dense ? null : hf.Model();
            var (proto, parity, files) = Write(hf.Config, hf.Weight, reference, r, hf.Description, hf.Float32Bytes);
            var (eos, bos, pad) = hf.TokenIds;
            string? deployment =
                genAiFolder == null
                    ? null
                    : GenAiFolder.Write(
                        genAiFolder,
                        "model.onnx",
                        hf.Config,
                        new GenAiFolder.SpecialIds(eos, bos, pad),
                        new TokenizerSource(r.Checkpoint, null)
                    );
            return new ExportResult(
                hf.Config,
                hf.Description,
                parity,
                Surgery.Parameters(proto),
                proto.Graph.Output.Select(o => o.Name).ToList(),
                files,
                deployment
            );
        }
        var (model, tokenizer, info) = Checkpoint.Load(r.Checkpoint);
        using (model)
        {
            string source =
                $"relu-sparsity checkpoint {Path.GetFileName(Path.GetFullPath(r.Checkpoint).TrimEnd('/'))} ({info.Steps} steps)";
            var (proto, parity, files) = Write(
                model.Config,
                ModelExporter.WeightsOf(model),
                r.SkipParity ? null : model,
                r,
                source,
                Float32Bytes(model)
            );
            int endOfText = tokenizer.EndOfTextId ?? 0;
            string? deployment =
                genAiFolder == null
                    ? null
                    : GenAiFolder.Write(
                        genAiFolder,
                        "model.onnx",
                        model.Config,
                        new GenAiFolder.SpecialIds(endOfText, endOfText, endOfText),
                        new TokenizerSource(null, tokenizer)
                    );
            return new ExportResult(
                model.Config,
                source,
                parity,
                Surgery.Parameters(proto),
                proto.Graph.Output.Select(o => o.Name).ToList(),
                files,
                deployment
            );
        }
    }

    /// <summary>
    /// Exports <paramref name="model"/> to <paramref name="path"/> (and <c>.mlp.json</c>); the dense variant is first
    /// checked against TorchSharp. Returns the graph and the parity figure (dense only).
    /// </summary>
    public static (ModelProto Model, float? Parity) Write(
        ReluTransformer model,
        ExportVariant variant,
        float threshold,
        string path,
        bool fusedAttention = false
    )
    {
        var (proto, parity, _) = Write(
            model.Config,
            ModelExporter.WeightsOf(model),
            model,
            new ExportRequest("", path, variant, threshold, fusedAttention),
            "",
            Float32Bytes(model)
        );
        return (proto, parity);
    }

    static (ModelProto Model, float? Parity, IReadOnlyList<string> Files) Write(
        ModelConfig config,
        Func<string, Tensor?> weight,
        ReluTransformer? reference,
        ExportRequest r,
        string source,
        long bytes
    )
    {
        var probe = ProbeBatch.Random(config.VocabSize, 2, Math.Min(32, config.SeqLen));
        float[]? expected =
            reference != null && r.Variant == ExportVariant.Dense ? TorchSharpLogits(reference, probe) : null;
        string path = Path.GetFullPath(r.Out),
            name = Path.GetFileName(path),
            folder = Path.GetDirectoryName(path)!;
        if (Directory.Exists(path))
            throw new UserInputException($"--out {r.Out} is a folder; give the .onnx file to write.");
        Directory.CreateDirectory(folder);
        string hidden = Path.Combine(folder, "." + name);
        Temporaries.RemoveStale(hidden);
        string temp = Temporaries.For(hidden, "partial");
        if (Directory.Exists(temp))
            Directory.Delete(temp, recursive: true);
        Directory.CreateDirectory(temp);
        try
        {
            string tempPath = Path.Combine(temp, name);
            ModelProto proto;
            using (
                var side =
                    bytes > r.ExternalDataAbove ? new ExternalData.SideFile(tempPath + ".data", name + ".data") : null
            )
                proto = ModelExporter.Export(
                    config,
                    weight,
                    r.Variant,
                    r.Threshold,
                    r.FusedAttention,
                    side,
                    r.WithPast
                );
            if (source != "")
            {
                proto.DocString += $" Weights from {source}.";
                proto.MetadataProps.Add(new StringStringEntryProto { Key = "relu_sparsity.source", Value = source });
            }
            OnnxGraph.Save(proto, tempPath);
            MlpSidecar.Write(tempPath, MlpSites.Find(proto));
            float? parity = null;
            if (expected != null)
            {
                // The files as written, external data included, loaded back: what users will load.
                var actual = GraphCheck.Logits(OnnxGraph.Load(tempPath), probe);
                // Logits no trained language model gives (non-finite, or beyond ±10⁴) come from corrupt weights, where
                // two correct float32 programs may disagree by more than any absolute tolerance.
                float largest = expected.Max(v => float.IsFinite(v) ? Math.Abs(v) : float.PositiveInfinity);
                if (!(largest <= 1e4f))
                    throw new UserInputException(
                        $"The checkpoint's weights give logits of magnitude {largest:G3} on random ids: {r.Checkpoint} holds corrupt weights (or values that overflow float32); nothing was written."
                    );
                float max = 0;
                for (int i = 0; i < expected.Length; i++)
                    max = Math.Max(max, Math.Abs(actual[i] - expected[i]));
                if (!(max <= Tolerance))
                    throw new InvalidOperationException(
                        $"The exported graph disagrees with TorchSharp by {max:E2} (> {Tolerance:E0}); nothing was written. Please report this."
                    );
                parity = max;
            }
            else if (!r.SkipParity)
                GraphCheck.Runs(
                    OnnxGraph.Load(tempPath),
                    $"exported {r.Variant.ToString().ToLowerInvariant()} graph",
                    probe
                );
            var files = Directory
                .GetFiles(temp)
                .Select(f => Path.Combine(folder, Path.GetFileName(f)))
                .Order()
                .ToList();
            foreach (string f in Directory.GetFiles(temp))
            {
                string target = Path.Combine(folder, Path.GetFileName(f));
                File.Move(f, target, overwrite: true);
                OutputFolder.Adopt(target); // an export into a checkpoint joins its manifest, like any file written there
            }
            return (proto, parity, files);
        }
        finally
        {
            Directory.Delete(temp, recursive: true);
        }
    }

    static long Float32Bytes(ReluTransformer model) => model.parameters().Sum(p => p.numel()) * sizeof(float);

    static float[] TorchSharpLogits(ReluTransformer model, ProbeBatch probe)
    {
        model.eval();
        using (no_grad())
        using (var input = tensor(probe.Ids, new long[] { probe.Batch, probe.SeqLen }))
        using (var logits = model.forward(input))
            return logits.data<float>().ToArray();
    }

    /// <summary>
    /// Writes the model at <paramref name="modelPath"/> with every MLP activation exposed as an output (in layer order)
    /// and its sidecar, after checking in ONNX Runtime that the logits are unchanged. Returns the MLP sites found.
    /// </summary>
    public static IReadOnlyList<MlpSite> Instrument(string modelPath, IReadOnlyList<string> activations, string path)
    {
        ModelFiles.RequireWritable("instrument", path, [modelPath]);
        var model = OnnxGraph.Load(modelPath);
        var sites = MlpSites.Find(model, activations);
        var instrumented = Surgery.Instrument(model, sites);
        GraphCheck.Verify(instrumented, "instrumented graph", ProbeBatch.For(model), reference: model);
        ModelFiles.Save("instrument", instrumented, path, sites);
        return sites;
    }

    /// <summary>
    /// Rewrites the causal self-attention of the model at <paramref name="modelPath"/> (any graph) into ONNX Runtime's
    /// fused MultiHeadAttention (<see cref="AttentionFusion"/>) and writes it, after checking in ONNX Runtime that its
    /// logits on real tokens equal the original's within 1e-4, on a batch whose windows end in padding. Nothing is
    /// written when no block matches. Returns the blocks fused, those left as they were (with why), and the largest
    /// logit difference.
    /// </summary>
    public static (int Fused, IReadOnlyList<string> Skipped, float MaxLogitChange) FuseAttention(
        string modelPath,
        string path
    )
    {
        ModelFiles.RequireWritable("fuse-attention", path, [modelPath]);
        var (result, diff) = FuseAttentionChecked(OnnxGraph.Load(modelPath), "nothing was written");
        ModelFiles.Save("fuse-attention", result.Model, path, TryFindSites(result.Model));
        return (result.Fused, result.Skipped, diff);
    }

    /// <summary>
    /// <see cref="AttentionFusion.Fuse"/> checked in ONNX Runtime (CPU, float32) as <see cref="FuseAttention"/>
    /// describes; a graph with no recognised block, or whose fused logits differ, is refused naming why (then ";
    /// <paramref name="consequence"/>.").
    /// </summary>
    public static (AttentionFusion.Result Result, float MaxLogitChange) FuseAttentionChecked(
        ModelProto model,
        string consequence
    )
    {
        var result = AttentionFusion.Fuse(model);
        if (result.Fused == 0)
            throw new UserInputException(
                $"No attention block was recognised ({(result.Skipped.Count == 0 ? "the graph has no Softmax" : result.Skipped[0])}); {consequence}."
            );
        var probe = ProbeBatch.For(model);
        long[] mask = [.. probe.Mask];
        for (int w = 0; w < probe.Batch; w++)
        for (int t = probe.SeqLen - 1 - 3 * w; t < probe.SeqLen; t++)
            mask[w * probe.SeqLen + t] = 0; // padding at the end
        float diff;
        try
        {
            diff = GraphCheck.Verify(
                result.Model,
                "graph with fused attention",
                probe with
                {
                    Mask = mask,
                },
                reference: model
            );
        }
        catch (UserInputException e) when (e.Message.Contains("logits differ"))
        {
            // The fused operator masks causally: an encoder's attention, or a mask of another kind, changes the
            // outputs.
            throw new UserInputException(
                e.Message.Replace(
                    "; nothing was written.",
                    $": its attention is not causal (an encoder?) or masks otherwise than causally; {consequence}."
                )
            );
        }
        return (result, diff);
    }

    static IReadOnlyList<MlpSite>? TryFindSites(ModelProto model)
    {
        try
        {
            return MlpSites.Find(model);
        }
        catch (UserInputException)
        {
            return null;
        } // a graph without ReLU MLPs may still have its attention fused
    }
}
