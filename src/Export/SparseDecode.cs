using Onnx;

namespace Sparsity.Export;

/// <summary>What <see cref="SparseDecode"/> did to one MLP site: left dense, or computed over the units active in the
/// batch (with or without the up-projection).</summary>
/// <param name="Layer">Layer index.</param>
/// <param name="NonzeroFraction">Measured share of units active per token (from the statistics).</param>
/// <param name="Sparse">True when the down-projection reads only the active units.</param>
/// <param name="SparseUp">True when, in a gated MLP, the up-projection too is computed for the active units
/// only.</param>
/// <param name="Reason">Why, in words (for the model card).</param>
public sealed record SparseChoice(int Layer, double NonzeroFraction, bool Sparse, bool SparseUp, string Reason);

/// <summary>
/// Exact sparse decoding with standard operators. In a ReLU MLP a unit that is zero for every token of the batch adds
/// nothing to the down-projection, so <c>down(h) = h[:, active] · W[active, :]</c> with <c>active = NonZero(max
/// |h|)</c>; in a gated MLP a unit whose gate is zero contributes nothing either, so the up-projection is computed for
/// those units only. At batch 1 during decoding the active set is one token's, a small share of d_ff; where it is not
/// (dense layers, large batches) the rewrite costs more than it saves, so it is applied per layer.
/// </summary>
public static class SparseDecode
{
    /// <summary>Rewrites the sites chosen in <paramref name="sparse"/>; returns the graph and, per site, whether the
    /// up-projection was narrowed too.</summary>
    public static (ModelProto Model, IReadOnlyList<bool> SparseUp) Rewrite(
        ModelProto model,
        IReadOnlyList<MlpSite> sites,
        IReadOnlyList<bool> sparse
    )
    {
        var result = model.Clone();
        var g = new GraphWriter(result.Graph);
        var index = new GraphIndex(result.Graph);
        var up = new List<bool>();
        foreach (var site in sites)
        {
            if (!sparse[site.Layer])
            {
                up.Add(false);
                continue;
            }
            var down = result.Graph.Node.First(n => n.Name == site.Down.Node);
            string p = $"sparse.{site.Layer}";
            var product = site.Gate != null ? index.Producer(down.Input[0]) : null;
            string? upOutput = product == null ? null : ProjectionOutput(index, site.Up);
            bool narrowUp =
                product is { OpType: "Mul" }
                && upOutput != null
                && product.Input.Contains(upOutput)
                && site.Up.Op == "MatMul";
            // Units active anywhere in the batch: from the gate where the up-projection is narrowed, else from what
            // down reads.
            string activity = narrowUp ? product!.Input[product.Input[0] == upOutput ? 1 : 0] : down.Input[0];
            string flat = g.Op("Reshape", p + ".flat", [activity, g.Longs(p + ".flat_shape", [2], -1, site.DFf)]);
            // Σ|x| over the batch's tokens > 0 ⇔ some token's value is nonzero (ReduceSum takes its axes as an input in
            // every opset ≥ 13).
            string mass = g.Op(
                "ReduceSum",
                p + ".mass",
                [g.Op("Abs", p + ".abs", [flat]), g.Longs(p + ".tokens", [1], 0)],
                OnnxGraph.Int("keepdims", 0)
            );
            string active = g.Op(
                "Reshape",
                p + ".active",
                [
                    g.Op("NonZero", p + ".nonzero", [g.Op("Greater", p + ".fires", [mass, g.Scalar(p + ".zero", 0f)])]),
                    g.Longs(p + ".vector", [1], -1),
                ]
            );
            string reads;
            if (narrowUp)
            {
                var upNode = result.Graph.Node.First(n => n.Name == site.Up.Node);
                string rows = g.Op(
                    "Gather",
                    p + ".up_rows",
                    [UnitRows(g, index, site.Up.Weight, unitsFirst: site.Up.TransB == 1), active],
                    OnnxGraph.Int("axis", 0)
                ); // [K, in]
                string upActive = g.Op(
                    "MatMul",
                    p + ".up_matmul",
                    [upNode.Input[0], g.Op("Transpose", p + ".up_t", [rows], OnnxGraph.Ints("perm", 1, 0))]
                );
                if (site.Up.Bias != null)
                    upActive = g.Op(
                        "Add",
                        p + ".up_bias",
                        [upActive, g.Op("Gather", p + ".up_bias_k", [site.Up.Bias, active], OnnxGraph.Int("axis", 0))]
                    );
                string gate = g.Op("Gather", p + ".gate_k", [activity, active], OnnxGraph.Int("axis", -1));
                reads = g.Op("Mul", p + ".product", [gate, upActive]);
            }
            else
                reads = g.Op("Gather", p + ".units", [down.Input[0], active], OnnxGraph.Int("axis", -1));
            down.Input[0] = reads;
            // The active units' rows of the down-projection, [K, out]: MatMul reads them as they are, Gemm without
            // transB.
            down.Input[1] = g.Op(
                "Gather",
                p + ".down_rows",
                [UnitRows(g, index, site.Down.Weight, unitsFirst: site.Down.TransB == 0), active],
                OnnxGraph.Int("axis", 0)
            );
            if (down.OpType == "Gemm")
                foreach (var a in down.Attribute.Where(a => a.Name == "transB"))
                    a.I = 0;
            up.Add(narrowUp);
        }
        SortTopologically(result.Graph); // first: dead-node removal walks back from the outputs in node order
        OnnxGraph.RemoveDeadNodes(result.Graph);
        result.Graph.ValueInfo.Clear(); // shapes inside the rewritten MLPs changed
        return (result, up);
    }

    // The up-projection's output: its bias Add when it has one, else the MatMul.
    static string? ProjectionOutput(GraphIndex index, Projection p)
    {
        var node = index.Graph.Node.First(n => n.Name == p.Node);
        if (p.Bias == null)
            return node.Output[0];
        return index
            .Consumers(node.Output[0])
            .FirstOrDefault(n => n.OpType == "Add" && n.Input.Contains(p.Bias))
            ?.Output[0];
    }

    // The weight with one row per unit: as stored when units come first, else a transposed copy (once per weight), so
    // the active units are gathered as contiguous rows; a strided column gather measured slower than the dense product.
    static string UnitRows(GraphWriter g, GraphIndex index, string weight, bool unitsFirst)
    {
        if (unitsFirst)
            return weight;
        string name = weight + ".unit_rows";
        if (g.Graph.Initializer.Any(t => t.Name == name))
            return name;
        var stored = index.Initializers[weight];
        long rows = stored.Dims[0],
            columns = stored.Dims[1];
        float[] values = Surgery.ReadFloats(stored),
            transposed = new float[values.Length];
        for (long r = 0; r < rows; r++)
        for (long c = 0; c < columns; c++)
            transposed[c * rows + r] = values[r * columns + c];
        return g.Floats(name, [columns, rows], transposed);
    }

    /// <summary>Orders the nodes so each comes after the producers of its inputs (ONNX requires it; rewrites
    /// append).</summary>
    public static void SortTopologically(GraphProto graph)
    {
        var produced = graph.Node.SelectMany(n => n.Output).ToHashSet();
        var ready = graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(t => t.Name)).ToHashSet();
        var pending = graph.Node.ToList();
        var sorted = new List<NodeProto>(pending.Count);
        while (pending.Count > 0)
        {
            int before = sorted.Count;
            foreach (var node in pending.ToList())
            {
                if (!node.Input.All(i => i == "" || ready.Contains(i) || !produced.Contains(i)))
                    continue;
                sorted.Add(node);
                pending.Remove(node);
                foreach (string o in node.Output)
                    ready.Add(o);
            }
            if (sorted.Count == before)
                throw new InvalidOperationException("The graph has a cycle; it cannot be sorted.");
        }
        graph.Node.Clear();
        graph.Node.AddRange(sorted);
    }
}
