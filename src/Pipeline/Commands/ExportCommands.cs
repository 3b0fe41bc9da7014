using System.CommandLine;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Training;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>export</c>, <c>instrument</c>, <c>prune</c> and <c>topk</c>: ONNX graphs with reachable MLP activations.</summary>
public static class ExportCommands
{
    static Option<string> OutOption(string what) => new("--out") { Description = what, Required = true };
    static Option<string> ModelOption() => new("--model") { Description = "Input ONNX model (this project's export or any torch.onnx/Optimum export).", Required = true };
    static Option<string[]> ActivationOption() => new("--activation")
    {
        Description = "Activation op types that mark MLP hidden layers (default Relu; e.g. --activation Relu Gelu).",
        DefaultValueFactory = _ => ["Relu"], AllowMultipleArgumentsPerToken = true,
    };

    // The three graph commands start alike: read the model, find its MLP sites.
    static (Onnx.ModelProto Model, IReadOnlyList<MlpSite> Sites) LoadSites(System.CommandLine.ParseResult parse, Option<string> model, Option<string[]> activation)
    {
        var proto = OnnxGraph.Load(parse.GetValue(model)!);
        return (proto, MlpSites.Find(proto, parse.GetValue(activation)));
    }

    public static Command Export(TextWriter output)
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint folder written by `train`.", Required = true };
        var outPath = OutOption("ONNX file to write; its sidecar <name>.mlp.json is written beside it.");
        var variant = new Option<ExportVariant>("--variant") { Description = "dense: logits + mlp_hidden.{i}; stats: per-token/sequence/unit counts reduced in the runtime.", DefaultValueFactory = _ => ExportVariant.Dense };
        var threshold = new Option<float>("--threshold") { Description = "Stats variant: a unit is active when its activation exceeds this.", DefaultValueFactory = _ => 0f };
        var command = new Command("export", "Export a checkpoint to ONNX (opset 17) with the MLP hidden layers exposed.") { checkpoint, outPath, variant, threshold };
        command.SetAction(parse =>
        {
            var (model, _, info) = Checkpoint.Load(parse.GetValue(checkpoint)!);
            using var _ = model;
            string path = parse.GetValue(outPath)!;
            var proto = ModelExporter.Export(model, parse.GetValue(variant), parse.GetValue(threshold));
            var sites = MlpSites.Find(proto);
            if (parse.GetValue(variant) == ExportVariant.Dense)
            {
                float diff = ExportParity.MaxLogitDifference(model, proto);
                output.WriteLine($"Parity: max |logits ONNX Runtime − TorchSharp| = {diff:E2} on random ids [2, {Math.Min(32, info.Model.SeqLen)}].");
                if (!(diff <= ExportParity.Tolerance))
                    throw new InvalidOperationException($"The exported graph disagrees with TorchSharp by {diff:E2} (> {ExportParity.Tolerance:E0}); nothing was written. Please report this.");
            }
            OnnxGraph.Save(proto, path);
            MlpSidecar.Write(path, sites);
            output.WriteLine($"Exported {info.Model.Layers} layers (d_ff {info.Model.DFf}, {parse.GetValue(variant).ToString().ToLowerInvariant()} variant) to {path} " +
                             $"({new FileInfo(path).Length / 1e6:0.0} MB, {Surgery.Parameters(proto):N0} parameters); outputs: {string.Join(", ", proto.Graph.Output.Select(o => o.Name))}");
            return 0;
        });
        return command;
    }

    public static Command Instrument(TextWriter output)
    {
        var model = ModelOption();
        var outPath = OutOption("Instrumented ONNX file; the sidecar <name>.mlp.json is written beside it.");
        var activation = ActivationOption();
        var command = new Command("instrument", "Expose the MLP activations of any ONNX graph as outputs, in layer order, and describe them in a sidecar JSON.") { model, outPath, activation };
        command.SetAction(parse =>
        {
            var (proto, sites) = LoadSites(parse, model, activation);
            string path = parse.GetValue(outPath)!;
            OnnxGraph.Save(Surgery.Instrument(proto, sites), path);
            MlpSidecar.Write(path, sites);
            foreach (var s in sites)
                output.WriteLine($"layer {s.Layer}: {s.Node} → {s.Output}  d_ff {s.DFf}  {s.Layout}  up {s.Up.Op}({s.Up.Weight}{(s.Up.TransB == 1 ? ", transB" : "")})  down {s.Down.Op}({s.Down.Weight}{(s.Down.TransB == 1 ? ", transB" : "")})");
            output.WriteLine($"Wrote {path} and {MlpSidecar.PathFor(path)}");
            return 0;
        });
        return command;
    }

    public static Command Prune(TextWriter output)
    {
        var model = ModelOption();
        var mask = new Option<string>("--mask") { Description = "mask.json: per layer, the kept unit indices (see README).", Required = true };
        var outPath = OutOption("Pruned ONNX file.");
        var activation = ActivationOption();
        var command = new Command("prune", "Remove MLP units not kept by a mask: slice the up- and down-projection weights.") { model, mask, outPath, activation };
        command.SetAction(parse =>
        {
            var (proto, sites) = LoadSites(parse, model, activation);
            UnitMask unitMask;
            try { unitMask = UnitMask.Load(parse.GetValue(mask)!); }
            catch (ArgumentException e) { throw new UserInputException(e.Message); }
            var (pruned, prunedSites, report) = Surgery.Prune(proto, sites, unitMask);
            string path = parse.GetValue(outPath)!;
            OnnxGraph.Save(pruned, path);
            MlpSidecar.Write(path, prunedSites);
            output.WriteLine($"Units per layer: {string.Join(" ", report.UnitsBefore)} → {string.Join(" ", report.UnitsAfter)}");
            output.WriteLine($"Parameters: {report.ParametersBefore:N0} → {report.ParametersAfter:N0} ({100.0 * report.ParametersAfter / report.ParametersBefore:0.0} %); " +
                             $"bytes: {report.BytesBefore:N0} → {report.BytesAfter:N0}. Wrote {path}");
            return 0;
        });
        return command;
    }

    public static Command TopK(TextWriter output)
    {
        var model = ModelOption();
        var k = new Option<string>("--k") { Description = "k for every layer, or one per layer separated by commas (1 ≤ k ≤ d_ff).", Required = true };
        var outPath = OutOption("ONNX file with Top-k thresholding after each MLP activation.");
        var activation = ActivationOption();
        var command = new Command("topk", "Keep only the k largest MLP activations per token (Li et al. §4.2).") { model, k, outPath, activation };
        command.SetAction(parse =>
        {
            var (proto, sites) = LoadSites(parse, model, activation);
            var ks = parse.GetValue(k)!.Split(',').Select(s => int.TryParse(s.Trim(), out int v) ? v : throw new UserInputException($"--k '{s}' is not an integer.")).ToList();
            string path = parse.GetValue(outPath)!;
            OnnxGraph.Save(Surgery.InsertTopK(proto, sites, ks), path);
            MlpSidecar.Write(path, sites);
            if (sites.All(s => (ks.Count == 1 ? ks[0] : ks[s.Layer]) == s.DFf))
                output.WriteLine("Note: k equals d_ff in every layer, so this model computes exactly what the input model does.");
            output.WriteLine($"Top-k ({string.Join(",", ks)}) inserted in {sites.Count} layers. Wrote {path}");
            return 0;
        });
        return command;
    }
}
