using System.Text;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Report;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Variants;

/// <summary>
/// What <c>sparse-decode</c> was asked: rewrite the MLPs of <paramref name="Model"/> whose measured activity in
/// <paramref name="Stats"/> is below <paramref name="BreakEven"/> into the exact sparse form; <paramref name="Out"/> is
/// a .onnx file (graph and sidecar) or a folder (also its model card).
/// </summary>
public sealed record SparseDecodeRequest(
    string Model,
    string Stats,
    string Out,
    double BreakEven,
    IReadOnlyList<string> Activations,
    string CommandLine = ""
);

/// <summary>The per-layer choices and the largest logit difference from the input model over the checked
/// shapes.</summary>
public sealed record SparseDecodeResult(
    IReadOnlyList<SparseChoice> Choices,
    float MaxLogitChange,
    IReadOnlyList<string> CheckedShapes
);

/// <summary>Sparse decoding as a library call: choose layers from measured activity, rewrite, check exactness at
/// several shapes, write.</summary>
public static class SparseDecoding
{
    /// <summary>Where the rewrite starts to lose (measured: NonZero → Gather → MatMul against a dense MatMul at batch 1
    /// breaks even near 25 % active).</summary>
    public const double DefaultBreakEven = 0.25;

    // Batch × sequence shapes the rewritten graph must be exact on: one decoding step, a short prompt, a padded batch.
    static readonly (int Batch, int Seq)[] Shapes = [(1, 1), (1, 7), (2, 16), (4, 5)];

    /// <summary>Rewrites, verifies and writes; nothing is written when a check fails or no layer is worth
    /// rewriting.</summary>
    public static SparseDecodeResult Run(SparseDecodeRequest r)
    {
        if (!(r.BreakEven > 0 && r.BreakEven <= 1))
            throw new UserInputException($"--break-even {r.BreakEven}: give a fraction of units in (0, 1].");
        if (!VariantFolder.IsModelFile(r.Out))
            OutputFolder.RequireWritable(r.Out, "sparse-decode"); // before the work, as every folder command
        else
            ModelFiles.RequireWritable("sparse-decode", r.Out, [r.Model], r.Stats);
        var proto = OnnxGraph.Load(r.Model);
        var sites = MlpSites.Find(proto, r.Activations);
        Pruning.RequireStatsOf(r.Stats, r.Model);
        var stats = SparsityStats.Load(r.Stats);
        if (stats.Layers.Count != sites.Count)
            throw new UserInputException(
                $"{r.Stats} describes {stats.Layers.Count} layers; the model has {sites.Count} MLPs: analyze this model first."
            );
        var choices = sites
            .Select(s =>
            {
                double f = stats.Layers[s.Layer].NonzeroFraction;
                return (Site: s, Fraction: f, Sparse: f < r.BreakEven);
            })
            .ToList();
        if (!choices.Any(c => c.Sparse))
            throw new UserInputException(
                $"No layer is below the break-even of {Markdown.Pct(r.BreakEven)} active units (measured: {Markdown.Layers(choices.Select(c => c.Fraction), "0.000")}): "
                    + "sparse decoding would only add work; nothing was written."
            );
        var (rewritten, sparseUp) = SparseDecode.Rewrite(proto, sites, choices.Select(c => c.Sparse).ToList());
        long vocab = GraphInputs.VocabularySize(proto) ?? 2;
        float max = 0;
        foreach (var (batch, seq) in Shapes)
            max = Math.Max(
                max,
                GraphCheck.Verify(
                    rewritten,
                    "sparse-decode graph",
                    ProbeBatch.Random(vocab, batch, seq, seed: batch * 31 + seq),
                    reference: proto
                )
            );
        var result = new SparseDecodeResult(
            choices
                .Select(c => new SparseChoice(
                    c.Site.Layer,
                    c.Fraction,
                    c.Sparse,
                    sparseUp[c.Site.Layer],
                    c.Sparse
                        ? $"{Markdown.Pct(c.Fraction)} active < break-even {Markdown.Pct(r.BreakEven)}"
                        : $"{Markdown.Pct(c.Fraction)} active ≥ break-even {Markdown.Pct(r.BreakEven)}: kept dense"
                ))
                .ToList(),
            max,
            Shapes.Select(s => $"{s.Batch} × {s.Seq}").ToList()
        );
        // The measured tensors are unchanged; the projections now read gathered weights, which the matcher does not
        // follow: the sidecar describes the sites as found before the rewrite.
        var rewrittenSites = sites;
        if (VariantFolder.IsModelFile(r.Out))
        {
            ModelFiles.Save("sparse-decode", rewritten, r.Out, rewrittenSites);
            return result;
        }
        OutputFolder.Write(r.Out, "sparse-decode", dir =>
        {
            string model = Path.Combine(dir, "model.onnx");
            OnnxGraph.Save(rewritten, model);
            MlpSidecar.Write(model, rewrittenSites);
            File.WriteAllText(Path.Combine(dir, "MODEL_CARD.md"), Card(r, result));
            Exporting.GenAiFiles.CopyBeside(r.Model, dir); // a GenAI folder's variant is one too
        });
        return result;
    }

    static string Card(SparseDecodeRequest r, SparseDecodeResult result)
    {
        var md = new StringBuilder($"# Sparse-decode variant of {Path.GetFileName(r.Model)}\n\n");
        md.AppendLine(
            $"Rewritten by {Tool.Producer} from `{r.Model}` with the activity measured in `{r.Stats}`. Each layer below the break-even"
        );
        md.AppendLine(
            "computes its down-projection over the units active somewhere in the batch (`NonZero → Gather → MatMul`), and in a gated"
        );
        md.AppendLine(
            "MLP its up-projection over the units whose gate fired; a unit that is zero contributes nothing, so the logits are unchanged."
        );
        md.AppendLine(
            $"Checked in ONNX Runtime against the input model at batch × sequence {string.Join(", ", result.CheckedShapes)}: largest logit difference {result.MaxLogitChange:E2} (≤ 1e-4).\n"
        );
        md.AppendLine(
            Markdown.Table(
                ["layer", "active per token", "down-projection", "up-projection", "why"],
                result.Choices.Select(c =>
                    (IReadOnlyList<string>)
                        [
                            c.Layer.ToString(),
                            Markdown.Pct(c.NonzeroFraction),
                            c.Sparse ? "active units only" : "dense",
                            c.SparseUp ? "active units only"
                            : c.Sparse ? "dense (not a gated MLP)"
                            : "dense",
                            c.Reason,
                        ]
                )
            )
        );
        md.AppendLine(
            $"\nThe rewrite pays at batch 1 (one token's active set); with many tokens per batch the union of active units grows and a layer can lose."
        );
        if (r.CommandLine != "")
            md.AppendLine($"\nMade with: `{r.CommandLine}`");
        return md.ToString();
    }
}
