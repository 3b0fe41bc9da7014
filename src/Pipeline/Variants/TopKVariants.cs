using System.Text.Json;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Variants;

/// <summary>One Top-k variant: its name (k=32), folder name (k32) and one k for every layer, or one per
/// layer.</summary>
public sealed record TopKVariant(string Name, string Folder, IReadOnlyList<int> Ks)
{
    /// <summary>k of layer <paramref name="layer"/>.</summary>
    public int K(int layer) => Ks[Ks.Count == 1 ? 0 : layer];
}

/// <summary>What <c>topk</c> was asked: variants, and a .onnx file (one variant) or a folder with an evaluation per
/// variant.</summary>
public sealed record TopKRequest(
    string Model,
    IReadOnlyList<TopKVariant> Variants,
    string Out,
    IReadOnlyList<string> Activations,
    EvaluationRequest? Evaluation = null,
    string CommandLine = ""
);

/// <summary>The written variants: with a folder, the dense model's evaluation first and one row per variant;
/// <c>MaxLogitChange</c> when k = d_ff everywhere (checked exact).</summary>
public sealed record TopKResult(
    int Layers,
    IReadOnlyList<(string Name, Evaluation Evaluation)> Rows,
    float? MaxLogitChange,
    string? Table
)
{
    /// <summary>Files of an encoder-decoder folder not written (graphs with a past).</summary>
    public IReadOnlyList<string> LeftOut { get; init; } = [];
}

/// <summary>Top-k (Li et al. §4.2) as a library call: keep the k largest MLP activations per token, check, write,
/// evaluate.</summary>
public static class TopKVariants
{
    // An Optimum folder in: each variant an Optimum folder of its own under --out, Top-k in both stacks, checked
    // joined.
    static TopKResult RunFolder(TopKRequest r)
    {
        if (VariantFolder.IsModelFile(r.Out))
            throw new UserInputException(
                $"{r.Model} is an encoder-decoder folder: each variant is written as a folder of the same layout; give --out DIR."
            );
        OutputFolder.RequireWritable(r.Out, "topk");
        var folder = EncoderDecoderFolder.Load(r.Model, r.Activations);
        var reference = folder.Joined();
        int layers = folder.EncoderSites.Count + folder.DecoderSites.Count;
        if (r.Variants.Any(v => v.Ks.Count != 1 && v.Ks.Count != layers))
            throw new UserInputException(
                $"Give one k or one per layer ({layers}: the encoder's {folder.EncoderSites.Count}, then the decoder's {folder.DecoderSites.Count})."
            );
        float? change = null;
        var built = r
            .Variants.Select(v =>
            {
                IReadOnlyList<int> Ks(int first, int count) =>
                    v.Ks.Count == 1 ? v.Ks : v.Ks.Skip(first).Take(count).ToList();
                var variant = folder with
                {
                    Encoder = Surgery.InsertTopK(folder.Encoder, folder.EncoderSites, Ks(0, folder.EncoderSites.Count)),
                    Decoder = Surgery.InsertTopK(
                        folder.Decoder,
                        folder.DecoderSites,
                        Ks(folder.EncoderSites.Count, folder.DecoderSites.Count)
                    ),
                };
                bool identity = folder.LayerSizes.Select((d, i) => v.K(i) == d).All(same => same);
                float diff = GraphCheck.Verify(
                    variant.Joined(),
                    $"Top-k encoder-decoder ({v.Name})",
                    ProbeBatch.For(reference),
                    reference: identity ? reference : null
                );
                if (identity)
                    change = diff;
                return (Variant: v, Folder: variant);
            })
            .ToList();
        IReadOnlyList<string> leftOut = [];
        OutputFolder.Write(r.Out, "topk", dir =>
        {
            foreach (var (v, variant) in built)
            {
                string sub = Path.Combine(dir, v.Folder);
                Directory.CreateDirectory(sub);
                leftOut = variant.WriteTo(sub, "topk");
            }
        });
        return new TopKResult(layers, [], change, null) { LeftOut = leftOut };
    }

    /// <summary>Builds and checks every variant before any long work, then writes
    /// <see cref="TopKRequest.Out"/>.</summary>
    public static TopKResult Run(TopKRequest r)
    {
        if (EncoderDecoder.IsFolder(r.Model))
            return RunFolder(r);
        var proto = OnnxGraph.Load(r.Model);
        var sites = MlpSites.Find(proto, r.Activations);
        if (VariantFolder.IsModelFile(r.Out) && r.Variants.Count != 1)
            throw new UserInputException("A .onnx --out takes one variant: give one --k, or write a folder.");
        if (!VariantFolder.IsModelFile(r.Out))
            OutputFolder.RequireWritable(r.Out, "topk");
        else
            ModelFiles.RequireWritable("topk", r.Out, [r.Model]);
        float? change = null;
        var built = r
            .Variants.Select(v =>
            {
                var model = Surgery.InsertTopK(proto, sites, v.Ks);
                // k = d_ff keeps every unit: the variant must compute exactly what the input model does.
                bool identity = sites.All(s => v.K(s.Layer) == s.DFf);
                float diff = GraphCheck.Verify(
                    model,
                    $"Top-k graph ({v.Name})",
                    ProbeBatch.For(proto),
                    reference: identity ? proto : null
                );
                if (identity)
                    change = diff;
                return (Variant: v, Model: model);
            })
            .ToList();
        if (VariantFolder.IsModelFile(r.Out))
        {
            ModelFiles.Save("topk", built[0].Model, r.Out, sites);
            return new TopKResult(sites.Count, [], change, null);
        }
        var request = r.Evaluation
            ?? throw new UserInputException(
                "Writing a folder evaluates each variant: give --eval-corpus, --tokenizer and --seq-len (or a .onnx --out)."
            );
        var reference = Evaluator.Run(request);
        var rows = new List<(string, Evaluation)> { ("dense", reference) };
        string table = "";
        OutputFolder.Write(r.Out, "topk", dir =>
        {
            foreach (var (v, model) in built)
                rows.Add(
                    (
                        v.Name,
                        VariantFolder.Write(
                            Path.Combine(dir, v.Folder),
                            model,
                            $"Top-k variant ({v.Name}) of {Path.GetFileNameWithoutExtension(r.Model)}",
                            r.CommandLine,
                            request,
                            reference,
                            null,
                            r.Model
                        )
                    )
                );
            table = VariantFolder.Table(rows);
            File.WriteAllText(Path.Combine(dir, "topk.md"), "# Top-k variants\n\n" + table);
            File.WriteAllText(
                Path.Combine(dir, "topk.json"),
                JsonSerializer.Serialize(
                    rows.Select(row => new { variant = row.Item1, evaluation = row.Item2 }),
                    ProjectJson.Options
                )
            );
        });
        return new TopKResult(sites.Count, rows, change, table);
    }
}
