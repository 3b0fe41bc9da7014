using System.Globalization;
using System.Text;
using System.Text.Json;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Exporting;
using Sparsity.Pipeline.Report;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Variants;

/// <summary>
/// Deployable variant folders: model.onnx (logits only), its sidecar, the mask that made it, the tokenizer
/// files, evaluation.json and a model card (README.md) with its numbers beside the reference model's.
/// </summary>
public static class VariantFolder
{
    /// <summary>Writes one variant into <paramref name="dir"/> (a folder being written by
    /// <see cref="OutputFolder.Write"/>) and returns its evaluation.</summary>
    public static Evaluation Write(
        string dir,
        ModelProto model,
        string title,
        string command,
        EvaluationRequest evaluation,
        Evaluation reference,
        UnitMask? mask,
        string? sourceModel = null
    )
    {
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "model.onnx");
        // Deployed: the logits, and the key/value cache of a graph that has one.
        var deployed = OnnxGraph.WithOnlyOutputs(
            model,
            [
                GraphInputs.LogitsOutput(model)?.Name ?? "logits",
                .. model
                    .Graph.Output.Select(o => o.Name)
                    .Where(n => n.StartsWith("present.", StringComparison.Ordinal)),
            ]
        );
        OnnxGraph.Save(deployed, path);
        MlpSidecar.Write(path, MlpSites.Find(deployed, evaluation.Activations ?? ["Relu"]));
        if (mask != null)
            File.WriteAllText(Path.Combine(dir, "mask.json"), mask.ToJson());
        var tokenizer = TextTokenizer.FromSpec(evaluation.Tokenizer);
        foreach (string file in tokenizer.Files)
            File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        string spec =
            tokenizer.Files.Count == 0
                ? tokenizer.Spec
                : tokenizer.Spec.Split(':')[0] + ":" + string.Join(',', tokenizer.Files.Select(Path.GetFileName));
        if (sourceModel != null)
            GenAiFiles.CopyBeside(sourceModel, dir); // a GenAI folder's variant is one too
        var result = Evaluator.Run(evaluation with { Model = path });
        File.WriteAllText(Path.Combine(dir, "evaluation.json"), JsonSerializer.Serialize(result, ProjectJson.Options));
        File.WriteAllText(
            Path.Combine(dir, "README.md"),
            ModelCard(title, command, spec, mask, [("reference", reference), (title, result)])
        );
        return result;
    }

    /// <summary>Writes <c>evaluate</c>'s output folder: evaluation.json and the table as evaluation.md.</summary>
    public static void WriteEvaluation(string outDir, Evaluation e) => OutputFolder.Write(outDir, "evaluate", dir =>
        {
            File.WriteAllText(Path.Combine(dir, "evaluation.json"), JsonSerializer.Serialize(e, ProjectJson.Options));
            File.WriteAllText(Path.Combine(dir, "evaluation.md"), Table([(e.Model, e)]));
        });

    /// <summary>True when an --out names a .onnx file (the graph only) rather than a variant folder.</summary>
    public static bool IsModelFile(string path) => path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);

    /// <summary>A Markdown table comparing evaluations; ratios are against the first row.</summary>
    public static string Table(IReadOnlyList<(string Name, Evaluation E)> rows)
    {
        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        var b = rows[0].E;
        md.Append(
            Markdown.Table(
                [
                    "model",
                    "units per layer",
                    "parameters",
                    "MLP FLOPs / token",
                    "loss (Δ)",
                    "perplexity",
                    "accuracy",
                    "ECE",
                    "accuracy, noisy input",
                    "ms / batch (p10–p90)",
                    "tokens/s",
                    "latency ratio",
                ],
                rows.Select(r => Row(r.Name, r.E)),
                align: "ll"
            )
        );
        md.AppendLine()
            .AppendLine(
                inv,
                $"Held-out text `{b.Corpus}`: {b.Predictions:N0} next-token predictions in windows of {b.SeqLen} tokens. ECE over 15 equal-width confidence bins; noisy input: {b.NoiseFraction:P0} of input tokens replaced by random ids (seeded), targets unchanged. Latency: median of timed runs of one batch of {b.BatchSize} × {b.SeqLen} after warm-up, ONNX Runtime CPU with {b.Threads} intra-op threads, logits as the only output."
            );
        return md.ToString();

        string[] Row(string name, Evaluation e) =>
            [
                name,
                string.Join(" / ", e.UnitsPerLayer),
                e.Parameters.ToString("N0", inv),
                e.MlpFlopsPerToken.ToString("N0", inv),
                string.Create(inv, $"{e.Loss:0.0000} ({(e.Loss - b.Loss) / b.Loss:+0.00%;-0.00%;0.00%})"),
                Markdown.F(e.Perplexity, "0.00"),
                e.Accuracy.ToString("P2", inv),
                e.ExpectedCalibrationError.ToString("P2", inv),
                e.NoisyAccuracy.ToString("P2", inv),
                string.Create(inv, $"{e.MedianMsPerBatch:0.00} ({e.P10MsPerBatch:0.00}–{e.P90MsPerBatch:0.00})"),
                e.TokensPerSecond.ToString("N0", inv),
                string.Create(inv, $"{e.MedianMsPerBatch / b.MedianMsPerBatch:0.00}×"),
            ];
    }

    static string ModelCard(
        string title,
        string command,
        string tokenizer,
        UnitMask? mask,
        IReadOnlyList<(string, Evaluation)> rows
    )
    {
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"# {title}").AppendLine();
        md.AppendLine(
                "ONNX language model (`model.onnx`, input `input_ids` int64 [batch, seq], output `logits`), written by relu-sparsity."
            )
            .AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Tokenizer: `{tokenizer}` (files in this folder).").AppendLine();
        if (mask != null)
            md.AppendLine(
                    CultureInfo.InvariantCulture,
                    $"Units kept per layer: {string.Join(" / ", mask.Layers.Select(l => $"{l.Kept.Length} of {l.DFf}"))}; rule: {mask.Rule}; statistics from {mask.Source} (`mask.json`)."
                )
                .AppendLine();
        md.AppendLine("Made with:").AppendLine().AppendLine("```").AppendLine(command).AppendLine("```").AppendLine();
        md.AppendLine("## Measured").AppendLine().AppendLine(Table(rows));
        return md.ToString();
    }
}
