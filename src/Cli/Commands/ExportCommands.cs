using System.CommandLine;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Exporting;
using Sparsity.Pipeline.Runtime;
using Sparsity.Training;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>export</c> and <c>instrument</c>: ONNX graphs with reachable MLP activations.</summary>
public static class ExportCommands
{
    /// <summary>The <c>export</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Export(TextWriter output)
    {
        var checkpoint = new Option<string>("--checkpoint")
        {
            Description =
                "Checkpoint folder: written by `train`, or a Hugging Face folder (config.json + safetensors) of an OPT, Llama or Mistral ReLU model, or of T5 v1.0 (written as Optimum's encoder/decoder folder: give --out DIR).",
            Required = true,
        };
        var outPath = SharedOptions.OutOption(
            "ONNX file to write; its sidecar <name>.mlp.json is written beside it (and <name>.data for large models)."
        );
        var variant = new Option<ExportVariant>("--variant")
        {
            Description =
                "dense: logits + mlp_hidden.{i}; stats: per-token/sequence/unit counts reduced in the runtime.",
            DefaultValueFactory = _ => ExportVariant.Dense,
        };
        var threshold = new Option<float>("--threshold")
        {
            Description = "Stats variant: a unit is active when its activation exceeds this.",
            DefaultValueFactory = _ => 0f,
        };
        var fused = new Option<bool>("--fused-attention")
        {
            Description =
                "Write each layer's attention as one ONNX Runtime MultiHeadAttention node (com.microsoft, causal): the same logits, faster, ONNX Runtime only.",
        };
        var skipParity = new Option<bool>("--skip-parity")
        {
            Description =
                "Do not load the model into TorchSharp and ONNX Runtime to compare logits (for checkpoints that do not fit in memory); the graph is then not checked.",
        };
        var externalAbove = new Option<long>("--external-data-above")
        {
            Description =
                "Stream the weights into <out>.data, one tensor at a time, when they exceed this many bytes as float32.",
            DefaultValueFactory = _ => ExternalData.InlineLimit,
        };
        var withPast = new Option<bool>("--with-past")
        {
            Description =
                "Add a key/value cache: inputs attention_mask [batch, past+seq] and past_key_values.{i}.key/value, outputs present.{i}.key/value (Optimum and ONNX Runtime GenAI naming), for `generate` and deployment.",
        };
        var command = new Command(
            "export",
            "Export a checkpoint (ours or a Hugging Face OPT/Llama/Mistral ReLU folder) to ONNX (opset 17) with the MLP hidden layers exposed."
        )
        {
            checkpoint,
            outPath,
            variant,
            threshold,
            fused,
            skipParity,
            externalAbove,
            withPast,
        };
        command.SetAction(parse =>
        {
            if (T5Checkpoint.IsOne(parse.GetValue(checkpoint)!))
            {
                // T5 is written from its weights straight to ONNX: no TorchSharp model, no variants.
                if (parse.GetValue(variant) != ExportVariant.Dense || parse.GetValue(fused) || parse.GetValue(withPast))
                    throw new UserInputException(
                        "--variant, --fused-attention and --with-past apply to decoder-only models; a T5 checkpoint is written as Optimum's encoder and decoder graphs (analyze adds the statistics in memory)."
                    );
                var t5 = T5Export.Run(parse.GetValue(checkpoint)!, parse.GetValue(outPath)!);
                output.WriteLine($"Source: {t5.Source}.");
                output.WriteLine("Checked: the encoder and decoder load and run joined in ONNX Runtime.");
                output.WriteLine(
                    $"Exported {t5.EncoderLayers} encoder and {t5.DecoderLayers} decoder layers (d_ff {t5.DFf}, {t5.Parameters:N0} parameters) to {parse.GetValue(outPath)}: "
                        + $"{string.Join(", ", t5.Files.Select(Path.GetFileName))} ({t5.Files.Sum(f => new FileInfo(f).Length) / 1e6:0.0} MB)."
                );
                return 0;
            }
            Libtorch.Require("export");
            var v = parse.GetValue(variant);
            var r = CheckedExport.Run(
                new ExportRequest(
                    parse.GetValue(checkpoint)!,
                    parse.GetValue(outPath)!,
                    v,
                    parse.GetValue(threshold),
                    parse.GetValue(fused),
                    parse.GetValue(skipParity),
                    parse.GetValue(externalAbove),
                    parse.GetValue(withPast)
                )
            );
            var c = r.Config;
            output.WriteLine($"Source: {r.Source}.");
            if (r.Parity is float d)
                output.WriteLine(
                    $"Parity: max |logits ONNX Runtime − TorchSharp| = {d:E2} on random ids [2, {Math.Min(32, c.SeqLen)}]."
                );
            else if (parse.GetValue(skipParity))
                output.WriteLine("Parity: not checked (--skip-parity); the graph was not run.");
            else
                output.WriteLine(
                    "Checked: the graph loads and runs in ONNX Runtime (the stats variant has no logits to compare)."
                );
            if (r.Deployment != null)
                output.WriteLine(
                    $"ONNX Runtime GenAI folder: {GenAiFolder.ConfigFile} (decoder type); {r.Deployment}."
                );
            output.WriteLine(
                $"Exported {c.Layers} layers (d_ff {c.DFf}{(c.GatedMlp ? ", gated" : "")}, {v.ToString().ToLowerInvariant()} variant) to {string.Join(" + ", r.Files.Select(Path.GetFileName))} "
                    + $"({r.Files.Sum(f => new FileInfo(f).Length) / 1e6:0.0} MB, {r.Parameters:N0} parameters); outputs: {string.Join(", ", r.Outputs)}"
            );
            return 0;
        });
        return command;
    }

    /// <summary>The <c>instrument</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Instrument(TextWriter output)
    {
        var model = SharedOptions.ModelOption();
        var outPath = SharedOptions.OutOption(
            "Instrumented ONNX file; the sidecar <name>.mlp.json is written beside it."
        );
        var activation = SharedOptions.ActivationOption();
        var command = new Command(
            "instrument",
            "Expose the MLP activations of any ONNX graph as outputs, in layer order, and describe them in a sidecar JSON."
        )
        {
            model,
            outPath,
            activation,
        };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(outPath)!;
            var sites = CheckedExport.Instrument(parse.GetValue(model)!, parse.GetValue(activation)!, path);
            foreach (var s in sites)
                output.WriteLine(
                    $"layer {s.Layer}: {s.Node} → {s.Output}  d_ff {s.DFf}  {s.Layout}  {(s.Gate is { } g ? $"gate {g.Op}({g.Weight})  " : "")}up {s.Up.Op}({s.Up.Weight}{(s.Up.TransB == 1 ? ", transB" : "")})  down {s.Down.Op}({s.Down.Weight}{(s.Down.TransB == 1 ? ", transB" : "")})"
                );
            output.WriteLine($"Wrote {path} and {MlpSidecar.PathFor(path)}");
            return 0;
        });
        return command;
    }

    /// <summary>The <c>fuse-attention</c> command, writing to <paramref name="output"/>.</summary>
    public static Command FuseAttention(TextWriter output)
    {
        var model = SharedOptions.ModelOption();
        var outPath = SharedOptions.OutOption("ONNX file to write (with its sidecar when the graph has ReLU MLPs).");
        var command = new Command(
            "fuse-attention",
            "Rewrite the causal self-attention of a graph (torch.onnx exports of OPT, GPT-2, Llama and kin) into ONNX Runtime's fused MultiHeadAttention; checked to give the same logits."
        )
        {
            model,
            outPath,
        };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(outPath)!;
            var (fused, skipped, diff) = CheckedExport.FuseAttention(parse.GetValue(model)!, path);
            output.WriteLine(
                $"Fused {fused} attention block(s) into MultiHeadAttention; max |Δ logits| = {diff:E2} on real tokens of a padded batch."
            );
            foreach (string s in skipped)
                output.WriteLine($"Left unchanged: {s}");
            output.WriteLine($"Wrote {path}");
            return 0;
        });
        return command;
    }
}
