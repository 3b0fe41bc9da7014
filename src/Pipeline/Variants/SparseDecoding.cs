using System.Globalization;
using System.Text;
using Onnx;
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
/// <paramref name="FixedShape"/>: the GPU form (<see cref="SparseDecode.RewriteFixedShape"/>), each layer's capacity
/// the <paramref name="CapacityQuantile"/> quantile of its active units per token (counts.json beside the statistics),
/// rounded up to a multiple of <see cref="SparseDecoding.CapacityStep"/>.
public sealed record SparseDecodeRequest(
    string Model,
    string Stats,
    string Out,
    double BreakEven,
    IReadOnlyList<string> Activations,
    string CommandLine = "",
    bool FixedShape = false,
    double CapacityQuantile = SparseDecoding.DefaultCapacityQuantile,
    Runtime.Device? CheckDevice = null
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

    /// <summary>The fixed-shape form's default capacity: the 99.9th percentile of active units per token.</summary>
    public const double DefaultCapacityQuantile = 0.999;

    /// <summary>Capacities are rounded up to a multiple of this (whole warps of rows on a GPU).</summary>
    public const int CapacityStep = 32;

    // Tokens decoded one at a time to check the fixed-shape form, as written and with every capacity 1 (each step
    // overflows and is recomputed).
    const int DecodeCheckTokens = 12;

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
        if (r.FixedShape && !(r.CapacityQuantile > 0 && r.CapacityQuantile <= 1))
            throw new UserInputException($"--capacity-quantile {r.CapacityQuantile}: give a quantile in (0, 1].");
        if (
            r.FixedShape && !proto.Graph.Input.Any(i => i.Name.StartsWith("past_key_values.", StringComparison.Ordinal))
        )
            throw new UserInputException(
                $"{r.Model} has no key/value cache: the fixed-shape form (--device cuda) computes one new token per step, which needs one. "
                    + "Export the model with its cache (`export --with-past`, or Optimum's with-past export)."
            );
        var capacities = r.FixedShape ? CapacitiesFor(r, sites) : null;
        var choices = sites
            .Select(s =>
            {
                // The fixed form's cost follows its capacity, the NonZero form's the units actually active.
                double f = stats.Layers[s.Layer].NonzeroFraction,
                    cost = capacities?[s.Layer] is long k ? (double)k / s.DFf : f;
                return (Site: s, Fraction: f, Cost: cost, Sparse: cost < r.BreakEven);
            })
            .ToList();
        if (!choices.Any(c => c.Sparse))
            throw new UserInputException(
                $"No layer is below the break-even of {Markdown.Pct(r.BreakEven)} active units ({(capacities == null ? "measured" : "capacities as a share of d_ff")}: {Markdown.Layers(choices.Select(c => c.Cost), "0.000")}): "
                    + "sparse decoding would only add work; nothing was written."
            );
        var (rewritten, sparseUp) =
            capacities == null
                ? SparseDecode.Rewrite(proto, sites, choices.Select(c => c.Sparse).ToList())
                : SparseDecode.RewriteFixedShape(
                    proto,
                    sites,
                    choices.Select(c => c.Sparse ? (long?)capacities[c.Site.Layer] : null).ToList()
                );
        long vocab = GraphInputs.VocabularySize(proto) ?? 2;
        // The fixed form runs prompts and overflowed steps densely: that form must equal the model at every shape.
        var checkedForm = capacities == null ? rewritten : SparseDecode.Dense(rewritten);
        float max = GraphCheck.Verify(
            checkedForm,
            "sparse-decode graph",
            [.. Shapes.Select(s => ProbeBatch.Random(vocab, s.Batch, s.Seq, seed: s.Batch * 31 + s.Seq))],
            reference: proto,
            r.CheckDevice
        );
        if (capacities != null)
            max = Math.Max(max, CheckDecoding(proto, rewritten, vocab, r.CheckDevice));
        var result = new SparseDecodeResult(
            choices
                .Select(c => new SparseChoice(
                    c.Site.Layer,
                    c.Fraction,
                    c.Sparse,
                    sparseUp[c.Site.Layer],
                    (capacities == null ? "" : $"capacity {capacities[c.Site.Layer]} of {c.Site.DFf}: ")
                        + (
                            c.Sparse
                                ? $"{Markdown.Pct(c.Cost)} < break-even {Markdown.Pct(r.BreakEven)}"
                                : $"{Markdown.Pct(c.Cost)} ≥ break-even {Markdown.Pct(r.BreakEven)}: kept dense"
                        ),
                    c.Sparse ? capacities?[c.Site.Layer] : null
                ))
                .ToList(),
            max,
            [
                .. Shapes.Select(s => $"{s.Batch} × {s.Seq}"),
                .. capacities == null
                    ? Array.Empty<string>()
                    : [$"{DecodeCheckTokens} tokens decoded one at a time with the capacities and with capacity 1"],
            ]
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

    // Each layer's capacity: the quantile of its active units per token on the statistics' corpus, rounded up.
    static long[] CapacitiesFor(SparseDecodeRequest r, IReadOnlyList<MlpSite> sites)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(r.Stats))!;
        if (!File.Exists(Path.Combine(dir, SparsityCounts.FileName)))
            throw new UserInputException(
                $"The fixed-shape form (--device cuda) sizes each layer from the histogram of active units per token in {SparsityCounts.FileName}, which is not beside {r.Stats}: "
                    + "give the stats.json of an analyze folder."
            );
        var counts = SparsityCounts.Load(dir);
        return sites
            .Select(s =>
            {
                int q = UseSummary.Quantile(counts.Layers[s.Layer].UnitsPerTokenHistogram, r.CapacityQuantile);
                return Math.Min(s.DFf, Math.Max(1, (q + CapacityStep - 1) / CapacityStep * CapacityStep));
            })
            .Select(k => (long)k)
            .ToArray();
    }

    // Decodes probe tokens one at a time through the fixed form, as written and with every capacity 1 (each step
    // overflows and is recomputed densely): both must give the input model's logits at every step.
    static float CheckDecoding(ModelProto proto, ModelProto rewritten, long vocab, Runtime.Device? device)
    {
        var probe = ProbeBatch.Random(vocab, 1, DecodeCheckTokens, seed: 7).Ids.Select(i => (int)i).ToList();
        List<float[]> Steps(ModelProto m)
        {
            using var generator = new Generation.Generator(m, threads: 2, device: device);
            return generator.StepLogits(probe).ToList();
        }
        var expected = Steps(proto);
        float max = 0;
        foreach (
            var (form, what) in new[]
            {
                (rewritten, "sparse-decode graph decoding one token per step"),
                (SparseDecode.WithCapacity(rewritten, (_, _) => 1), "sparse-decode graph recomputing overflowed steps"),
            }
        )
            max = Math.Max(
                max,
                GraphCheck.RequireSameLogits(Steps(form), expected, proto, what, $"over {DecodeCheckTokens} tokens")
            );
        return max;
    }

    static string Card(SparseDecodeRequest r, SparseDecodeResult result)
    {
        var md = new StringBuilder($"# Sparse-decode variant of {Path.GetFileName(r.Model)}\n\n");
        md.AppendLine(
            $"Rewritten by {Tool.Producer} from `{r.Model}` with the activity measured in `{r.Stats}`. Each layer below the break-even"
        );
        if (r.FixedShape)
        {
            md.AppendLine(
                "computes, for one new token per step, its down-projection over a fixed number of units, its capacity k (`TopK(k)` of the"
            );
            md.AppendLine(
                "activity, `Gather` of k weight rows, `MatMul`), and in a gated MLP its up-projection over the same units; every shape is fixed"
            );
            md.AppendLine(
                "when the graph is built (no `NonZero`), so a step can be captured as a CUDA graph. A unit that is zero contributes nothing,"
            );
            md.AppendLine(
                $"so while at most k units fire the logits are unchanged. Each rewritten layer also returns `{SparseDecode.OverflowPrefix}<layer>` (bool [1]):"
            );
            md.AppendLine(
                "true when more than k units fired, and then `generate` and `decode-bench` recompute the step with every capacity raised to"
            );
            md.AppendLine(
                "the layer's width (the graph's initializers `sparse.<layer>.capacity`), so the result never depends on the capacities."
            );
            md.AppendLine(
                $"Capacities: the {r.CapacityQuantile:0.####} quantile of the layer's active units per token on the statistics' corpus, rounded up to a multiple of {CapacityStep}."
            );
        }
        else
        {
            md.AppendLine(
                "computes its down-projection over the units active somewhere in the batch (`NonZero → Gather → MatMul`), and in a gated"
            );
            md.AppendLine(
                "MLP its up-projection over the units whose gate fired; a unit that is zero contributes nothing, so the logits are unchanged."
            );
        }
        md.AppendLine(
            $"Checked in ONNX Runtime against the input model at batch × sequence {string.Join(", ", result.CheckedShapes)}: largest logit difference {result.MaxLogitChange:E2} (accepted: within {GraphCheck.Tolerance:E0} of the largest logit, {GraphCheck.HalfTolerance:E0} for a model computing in fp16 or bf16).\n"
        );
        md.AppendLine(
            Markdown.Table(
                ["layer", "active per token", "capacity", "down-projection", "up-projection", "why"],
                result.Choices.Select(c =>
                    (IReadOnlyList<string>)
                        [
                            c.Layer.ToString(),
                            Markdown.Pct(c.NonzeroFraction),
                            c.Capacity?.ToString(CultureInfo.InvariantCulture) ?? "—",
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
