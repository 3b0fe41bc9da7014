using System.Globalization;
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
/// <param name="Capacity">In the fixed-shape form, the units computed per step (<see
/// cref="SparseDecode.RewriteFixedShape"/>); null otherwise or when dense.</param>
public sealed record SparseChoice(
    int Layer,
    double NonzeroFraction,
    bool Sparse,
    bool SparseUp,
    string Reason,
    long? Capacity = null
);

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
    ) => Rewrite(model, sites, sparse, capacities: null);

    /// <summary>
    /// The fixed-shape form for decoding on a GPU: each site with a capacity k (null: left dense) computes over the
    /// <c>TopK(k)</c> units of its activity instead of <c>NonZero</c>'s, so every shape is known when the graph is
    /// built (no wait for the device, capturable as a CUDA graph). It is exact while at most k units are active in the
    /// step; the graph returns <c>sparse_overflow.{layer}</c> (bool [1]), true when more were, and that step must be
    /// recomputed densely (<see cref="Dense"/>). The capacities are initializers <c>sparse.{layer}.capacity</c>.
    /// </summary>
    public static (ModelProto Model, IReadOnlyList<bool> SparseUp) RewriteFixedShape(
        ModelProto model,
        IReadOnlyList<MlpSite> sites,
        IReadOnlyList<long?> capacities
    ) => Rewrite(model, sites, capacities.Select(c => c != null).ToList(), capacities);

    /// <summary>Prefix of the fixed-shape form's per-layer overflow outputs.</summary>
    public const string OverflowPrefix = "sparse_overflow.";

    /// <summary>The layers of a fixed-shape graph (<see cref="RewriteFixedShape"/>) and their capacities; empty for
    /// any other graph.</summary>
    public static IReadOnlyList<(int Layer, long Capacity, long Units)> Capacities(ModelProto model)
    {
        var values = model.Graph.Initializer.ToDictionary(t => t.Name);
        var units = (model.MetadataProps.FirstOrDefault(m => m.Key == UnitsKey)?.Value ?? "")
            .Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(e => e.Split(':').Select(v => long.Parse(v, CultureInfo.InvariantCulture)).ToArray())
            .ToDictionary(e => (int)e[0], e => e[1]);
        return model
            .Graph.Output.Where(o => o.Name.StartsWith(OverflowPrefix, StringComparison.Ordinal))
            .Select(o => int.Parse(o.Name[OverflowPrefix.Length..], CultureInfo.InvariantCulture))
            .Select(l => (l, Long(values[$"sparse.{l}.capacity"]), units[l]))
            .ToList();
    }

    // Each rewritten layer's width, "layer:d_ff,…" in the model's metadata (what the dense form raises capacities to).
    const string UnitsKey = "sparse_decode.units";

    /// <summary>
    /// The fixed-shape graph with every capacity raised to its layer's width: the same weights and outputs, every unit
    /// computed, never overflowing. Decoding recomputes an overflowed step (and runs prompts) with it.
    /// </summary>
    public static ModelProto Dense(ModelProto fixedShape) => WithCapacity(fixedShape, (_, units) => units);

    /// <summary>The fixed-shape graph with layer capacities chosen by <paramref name="capacity"/>(layer,
    /// units).</summary>
    public static ModelProto WithCapacity(ModelProto fixedShape, Func<int, long, long> capacity)
    {
        var result = fixedShape.Clone();
        var values = result.Graph.Initializer.ToDictionary(t => t.Name);
        foreach (var (layer, _, units) in Capacities(fixedShape))
        {
            var t = values[$"sparse.{layer}.capacity"];
            t.ClearRawData(); // proto2: an empty raw_data still counts as present
            t.Int64Data.Clear();
            t.Int64Data.Add(Math.Clamp(capacity(layer, units), 1, units));
        }
        return result;
    }

    static long Long(TensorProto t) => t.Int64Data.Count > 0 ? t.Int64Data[0] : BitConverter.ToInt64(t.RawData.Span);

    static (ModelProto Model, IReadOnlyList<bool> SparseUp) Rewrite(
        ModelProto model,
        IReadOnlyList<MlpSite> sites,
        IReadOnlyList<bool> sparse,
        IReadOnlyList<long?>? capacities
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
            string active =
                capacities == null
                    ? ActiveUnits(g, p, flat)
                    : CapacityUnits(g, p, flat, site, capacities[site.Layer]!.Value);
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
        if (capacities != null)
            result.MetadataProps.Add(
                new StringStringEntryProto
                {
                    Key = UnitsKey,
                    Value = string.Join(
                        ",",
                        sites.Where(x => capacities[x.Layer] != null).Select(x => $"{x.Layer}:{x.DFf}")
                    ),
                }
            );
        SortTopologically(result.Graph); // first: dead-node removal walks back from the outputs in node order
        OnnxGraph.RemoveDeadNodes(result.Graph);
        result.Graph.ValueInfo.Clear(); // shapes inside the rewritten MLPs changed
        return (result, up);
    }

    // Units active anywhere in the batch, as many as there are: Σ|x| over the batch's tokens > 0 ⇔ some token's value
    // is nonzero (ReduceSum takes its axes as an input in every opset ≥ 13).
    static string ActiveUnits(GraphWriter g, string p, string flat)
    {
        string mass = Mass(g, p, flat);
        return g.Op(
            "Reshape",
            p + ".active",
            [
                g.Op("NonZero", p + ".nonzero", [g.Op("Greater", p + ".fires", [mass, g.Scalar(p + ".zero", 0f)])]),
                g.Longs(p + ".vector", [1], -1),
            ]
        );
    }

    // Σ|x| over the batch's tokens, per unit: positive exactly where some token's value is nonzero.
    static string Mass(GraphWriter g, string p, string flat) =>
        g.Op(
            "ReduceSum",
            p + ".mass",
            [g.Op("Abs", p + ".abs", [flat]), g.Longs(p + ".tokens", [1], 0)],
            OnnxGraph.Int("keepdims", 0)
        );

    // The k units of largest activity (all the active ones while at most k are), and the overflow output saying when
    // more were active. Σ|x| of non-negative terms is positive wherever one is, even where a half sum overflows to ∞;
    // counted and compared in float32 whatever the weights' type.
    static string CapacityUnits(GraphWriter g, string p, string flat, MlpSite site, long capacity)
    {
        string mass = g.Op(
            "Cast",
            p + ".mass_float",
            [Mass(g, p, flat)],
            OnnxGraph.Int("to", (long)TensorProto.Types.DataType.Float)
        );
        string k = g.Longs($"sparse.{site.Layer}.capacity", [1], Math.Clamp(capacity, 1, site.DFf));
        string active = g.Ops("TopK", p + ".topk", [mass, k], 2, OnnxGraph.Int("axis", 0))[1];
        string firing = g.Op(
            "ReduceSum",
            p + ".firing",
            [
                g.Op(
                    "Cast",
                    p + ".fires",
                    [g.Op("Greater", p + ".positive", [mass, g.Scalar(p + ".zero", 0f)])],
                    OnnxGraph.Int("to", (long)TensorProto.Types.DataType.Float)
                ),
                g.Longs(p + ".units_axis", [1], 0),
            ]
        );
        string kFloat = g.Op("Cast", p + ".k_float", [k], OnnxGraph.Int("to", (long)TensorProto.Types.DataType.Float));
        string overflow = g.Named("Greater", OverflowPrefix + site.Layer, [firing, kFloat]);
        g.Graph.Output.Add(OnnxGraph.Value(overflow, TensorProto.Types.DataType.Bool, 1));
        return active;
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
        var copy = new TensorProto
        {
            Name = name,
            DataType = stored.DataType,
            RawData = Google.Protobuf.ByteString.CopyFrom(
                stored.DataType == (int)TensorProto.Types.DataType.Float
                    ? Transposed(Surgery.ReadFloats(stored), rows, columns)
                    : Transposed(Surgery.ReadHalves(stored), rows, columns)
            ),
        };
        copy.Dims.AddRange([columns, rows]);
        g.Graph.Initializer.Add(copy);
        g.Fresh(name);
        return name;
    }

    static byte[] Transposed<T>(T[] values, long rows, long columns)
        where T : unmanaged
    {
        var transposed = new T[values.Length];
        for (long r = 0; r < rows; r++)
        for (long c = 0; c < columns; c++)
            transposed[c * rows + r] = values[r * columns + c];
        return System.Runtime.InteropServices.MemoryMarshal.AsBytes(transposed.AsSpan()).ToArray();
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
