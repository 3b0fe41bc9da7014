using System.Text.Json;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Variants;

/// <summary>One Top-k variant: its name (k=32), folder name (k32) and one k for every layer, or one per layer.</summary>
public sealed record TopKVariant(string Name, string Folder, IReadOnlyList<int> Ks)
{
    /// <summary>k of layer <paramref name="layer"/>.</summary>
    public int K(int layer) => Ks[Ks.Count == 1 ? 0 : layer];
}

/// <summary>What <c>topk</c> was asked: variants, and a .onnx file (one variant) or a folder with an evaluation per variant.</summary>
public sealed record TopKRequest(string Model, IReadOnlyList<TopKVariant> Variants, string Out, IReadOnlyList<string> Activations,
    EvaluationRequest? Evaluation = null, string CommandLine = "");

/// <summary>The written variants: with a folder, the dense model's evaluation first and one row per variant; <c>MaxLogitChange</c> when k = d_ff everywhere (checked exact).</summary>
public sealed record TopKResult(int Layers, IReadOnlyList<(string Name, Evaluation Evaluation)> Rows, float? MaxLogitChange, string? Table);

/// <summary>Top-k (Li et al. §4.2) as a library call: keep the k largest MLP activations per token, check, write, evaluate.</summary>
public static class TopKVariants
{
    /// <summary>Builds and checks every variant before any long work, then writes <see cref="TopKRequest.Out"/>.</summary>
    public static TopKResult Run(TopKRequest r)
    {
        var proto = OnnxGraph.Load(r.Model);
        var sites = MlpSites.Find(proto, r.Activations);
        if (VariantFolder.IsModelFile(r.Out) && r.Variants.Count != 1) throw new UserInputException("A .onnx --out takes one variant: give one --k, or write a folder.");
        if (!VariantFolder.IsModelFile(r.Out)) OutputFolder.RequireWritable(r.Out, "topk");
        else ModelFiles.RequireWritable("topk", r.Out, [r.Model]);
        float? change = null;
        var built = r.Variants.Select(v =>
        {
            var model = Surgery.InsertTopK(proto, sites, v.Ks);
            // k = d_ff keeps every unit: the variant must compute exactly what the input model does.
            bool identity = sites.All(s => v.K(s.Layer) == s.DFf);
            float diff = GraphCheck.Verify(model, $"Top-k graph ({v.Name})", ProbeBatch.For(proto), reference: identity ? proto : null);
            if (identity) change = diff;
            return (Variant: v, Model: model);
        }).ToList();
        if (VariantFolder.IsModelFile(r.Out))
        {
            ModelFiles.Save("topk", built[0].Model, r.Out, sites);
            return new TopKResult(sites.Count, [], change, null);
        }
        var request = r.Evaluation ?? throw new UserInputException("Writing a folder evaluates each variant: give --eval-corpus, --tokenizer and --seq-len (or a .onnx --out).");
        var reference = Evaluator.Run(request);
        var rows = new List<(string, Evaluation)> { ("dense", reference) };
        string table = "";
        OutputFolder.Write(r.Out, "topk", dir =>
        {
            foreach (var (v, model) in built)
                rows.Add((v.Name, VariantFolder.Write(Path.Combine(dir, v.Folder), model, $"Top-k variant ({v.Name}) of {Path.GetFileNameWithoutExtension(r.Model)}", r.CommandLine, request, reference, null, r.Model)));
            table = VariantFolder.Table(rows);
            File.WriteAllText(Path.Combine(dir, "topk.md"), "# Top-k variants\n\n" + table);
            File.WriteAllText(Path.Combine(dir, "topk.json"), JsonSerializer.Serialize(rows.Select(row => new { variant = row.Item1, evaluation = row.Item2 }), ProjectJson.Options));
        });
        return new TopKResult(sites.Count, rows, change, table);
    }
}
