using Onnx;

namespace Sparsity.Export;

/// <summary>A matrix multiplication of an MLP block: its node, weight and bias initializers.</summary>
/// <param name="Op">MatMul or Gemm.</param>
/// <param name="Node">Node name.</param>
/// <param name="Weight">Weight initializer.</param>
/// <param name="Bias">Bias initializer (Gemm C or the Add after a MatMul); null when there is none.</param>
/// <param name="TransB">Gemm transB (MatMul: 0). With 0 the weight is [in, out], with 1 [out, in].</param>
public sealed record Projection(string Op, string Node, string Weight, string? Bias, int TransB);

/// <summary>One MLP activation site of a graph, as written to the sidecar JSON.</summary>
/// <param name="Layer">Layer index, in graph order.</param>
/// <param name="Node">Activation node (Relu by default).</param>
/// <param name="Output">
/// The measured tensor, one value per unit: the activation's output after any mask or Top-k, where it enters the
/// down-projection (plain MLP) or the gating product (gated MLP: relu(gate) before it is multiplied by up).
/// </param>
/// <param name="DFf">Hidden units.</param>
/// <param name="Layout">"batch_seq_dff" ([batch, seq, d_ff]) or "tokens_dff" (flattened [batch·seq, d_ff],
/// batch-major).</param>
/// <param name="Up">Up-projection (d_model → d_ff): the activation's input, or in a gated MLP the projection multiplied
/// with it.</param>
/// <param name="Down">Down-projection (d_ff → d_model).</param>
/// <param name="Gate">Gated MLPs (Llama family, <c>down(relu(gate(x)) * up(x))</c>): the projection the activation
/// reads; null otherwise.</param>
/// <param name="Stack">Encoder-decoder models: the stack it sits in (encoder sites are numbered first); <c>None</c>
/// otherwise.</param>
/// <param name="StackIndex">Its index within its stack (equal to <paramref name="Layer"/> without stacks).</param>
public sealed record MlpSite(
    int Layer,
    string Node,
    string Output,
    int DFf,
    string Layout,
    Projection Up,
    Projection Down,
    Projection? Gate = null,
    ModelStack Stack = ModelStack.None,
    int StackIndex = 0
)
{
    /// <summary>The layer's name where a user gives one: its index, or <c>encoder.3</c> / <c>decoder.3</c> in an
    /// encoder-decoder model.</summary>
    public string DisplayName =>
        Stack == ModelStack.None
            ? Layer.ToString(System.Globalization.CultureInfo.InvariantCulture)
            : Sparsity.Analysis.LayerCounts.LabelOf(Stack.Name(), StackIndex, Layer);
}

/// <summary>
/// Finds MLP blocks in any ONNX graph: an activation (Relu, or other op types by option) fed by a MatMul(+Add) or
/// Gemm with an initializer weight (through reshapes), whose output reaches the data input of another such
/// projection (the down-projection) through reshapes, casts, per-unit masks, this project's Top-k, and at most one
/// gating product with a projection of the same input (gated MLPs). A weight may reach its MatMul through an
/// unfolded 2-D Transpose; the initializer is then [out, in], like Gemm transB = 1. Any other op between the
/// activation and the down-projection is refused by name: measuring the wrong tensor is worse than refusing.
/// </summary>
public static class MlpSites
{
    // Where a walk from the activation stops without finding an MLP: normalization, reductions, attention.
    static readonly HashSet<string> Boundary =
    [
        "LayerNormalization",
        "SimplifiedLayerNormalization",
        "RMSNormalization",
        "Softmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "Concat",
        "Gather",
        "Attention",
        "MultiHeadAttention",
        "GroupQueryAttention",
        "MatMul",
        "Gemm",
        "Transpose",
        "Split",
    ];

    /// <summary>The MLP sites in graph order; a user error when there is none, or when an activation's path is not
    /// understood.</summary>
    public static IReadOnlyList<MlpSite> Find(ModelProto model, IReadOnlyCollection<string>? activationOps = null)
    {
        activationOps ??= ["Relu"];
        var index = new GraphIndex(model.Graph);
        var sites = new List<MlpSite>();
        var activationNodes = new List<NodeProto>();
        foreach (var activation in model.Graph.Node.Where(n => activationOps.Contains(n.OpType)))
        {
            if (FindProjection(index, activation.Input[0]) is not { } up)
                continue; // not fed by a projection: not an MLP
            if (WalkToDown(index, activation, up) is not { } found)
                continue;
            var (downNode, down, measured, flattened, upBranch) = found;
            var weight = index.Initializers[down.Weight];
            int dFf = (int)(down.TransB == 1 ? weight.Dims[1] : weight.Dims[0]);
            bool tokens = flattened || (upBranch == null ? downNode.OpType == "Gemm" : up.Op == "Gemm");
            string layout = tokens ? "tokens_dff" : "batch_seq_dff";
            activationNodes.Add(activation);
            sites.Add(
                upBranch == null
                    ? new MlpSite(sites.Count, activation.Name, measured, dFf, layout, up, down)
                    : new MlpSite(sites.Count, activation.Name, measured, dFf, layout, upBranch, down, Gate: up)
            ); // the activation reads the gate
        }
        if (
            sites.Count > 0
            && EncoderDecoder.Stacks(model, activationNodes) is var stacks
            && stacks[0] != ModelStack.None
        )
        {
            // Encoder layers first, then the decoder's, each numbered within its stack too.
            var ordered = sites
                .Select((s, i) => s with { Stack = stacks[i] })
                .OrderBy(s => s.Stack)
                .ThenBy(s => s.Layer)
                .ToList();
            sites = ordered
                .Select((s, i) => s with { Layer = i, StackIndex = ordered.Take(i).Count(o => o.Stack == s.Stack) })
                .ToList();
        }
        else
            sites = sites.Select(s => s with { StackIndex = s.Layer }).ToList();
        if (sites.Count == 0)
            throw new UserInputException(
                $"No MLP activation found: no {string.Join("/", activationOps)} node feeds a MatMul or Gemm with an initializer weight "
                    + "(through Reshape/Cast/Identity, a mask or a gating product) after a MatMul or Gemm. Use --activation for other activation op types."
            );
        return sites;
    }

    /// <summary>
    /// Nodes that carry a site's d_ff-wide values: from the up (and gate) projection outputs to the down-projection,
    /// shape computations excluded. Pruning rewrites the masks, Top-k and reshape constants among them.
    /// </summary>
    public static IReadOnlyList<NodeProto> Region(ModelProto model, MlpSite site)
    {
        var index = new GraphIndex(model.Graph);
        var starts = new[] { site.Up, site.Gate }
            .Where(p => p != null)
            .Select(p => model.Graph.Node.First(n => n.Name == p!.Node).Output[0]);
        var region = new List<NodeProto>();
        var queue = new Queue<(string Tensor, int Depth)>(starts.Select(s => (s, 0)));
        var seen = new HashSet<string>();
        while (queue.Count > 0)
        {
            var (t, depth) = queue.Dequeue();
            if (!seen.Add(t))
                continue;
            foreach (
                var node in index
                    .Consumers(t)
                    .Where(n => n.OpType != "Shape" && n.Name != site.Down.Node && !region.Contains(n))
            )
            {
                region.Add(node);
                if (depth < 16 && !Boundary.Contains(node.OpType))
                    foreach (string o in node.Output)
                        queue.Enqueue((o, depth + 1));
            }
        }
        return region;
    }

    // UpBranch: in a gated MLP, the projection multiplied with the activation.
    sealed record Found(NodeProto DownNode, Projection Down, string Measured, bool Flattened, Projection? UpBranch);

    // Breadth-first along the data path from the activation to the nearest projection reading it. Returns null when
    // the path ends without one (not an MLP); throws when it reaches one through an op it does not understand.
    static Found? WalkToDown(GraphIndex index, NodeProto activation, Projection up)
    {
        var queue = new Queue<(
            string Tensor,
            bool Flattened,
            string? Measured,
            Projection? Gate,
            NodeProto? Unknown,
            int Depth
        )>([(activation.Output[0], false, null, null, null, 0)]);
        var seen = new HashSet<string>();
        while (queue.Count > 0)
        {
            var (t, flat, measured, gate, unknown, depth) = queue.Dequeue();
            if (!seen.Add(t))
                continue;
            foreach (var node in index.Consumers(t))
            {
                if (node.OpType is "Shape" or "TopK")
                    continue; // shape arithmetic, and our Top-k's index branch: not values
                if (
                    (node.OpType is "MatMul" or "Gemm")
                    && node.Input[0] == t
                    && node.Input.Count > 1
                    && Weight(node, index) is (string weight, int transB)
                )
                {
                    if (unknown != null)
                        throw new UserInputException(
                            $"MLP of {activation.OpType} node '{activation.Name}': a {unknown.OpType} node ('{unknown.Name}') sits between the activation and its "
                                + $"down-projection '{node.Name}'. relu-sparsity does not know which tensor holds the units there, so it refuses this graph rather than measure the wrong one."
                        );
                    return new Found(
                        node,
                        new Projection(node.OpType, node.Name, weight, BiasOf(node, index), transB),
                        measured ?? t,
                        flat,
                        gate
                    );
                }
                if (Boundary.Contains(node.OpType) || depth >= 12)
                    continue;
                var next = (
                    Flattened: flat || node.OpType is "Reshape" or "Flatten",
                    Measured: measured,
                    Gate: gate,
                    Unknown: unknown
                );
                if (GraphIndex.IsReshaping(node) && node.Input[0] != t)
                    continue; // t is a shape or axes operand
                if (node.OpType == "Mul" && unknown == null)
                {
                    string other = node.Input[0] == t ? node.Input[1] : node.Input[0];
                    var maskProducer = index.Producer(other);
                    if (maskProducer?.OpType == "Cast")
                        maskProducer = index.Producer(maskProducer.Input[0]); // the keep mask in a half-precision graph's type
                    if (index.Constant(other) != null || maskProducer?.OpType == "ScatterElements") { } // per-unit mask, or our Top-k's keep mask
                    else if (
                        gate == null
                        && FindProjection(index, other) is { } upBranch
                        && upBranch.Node != up.Node
                        && index.Source(DataInput(index, upBranch)) == index.Source(DataInput(index, up))
                    )
                        next = next with { Measured = t, Gate = upBranch }; // gated MLP: the units are relu(gate), measured before the product
                    else
                        next = next with { Unknown = node };
                }
                else if (!GraphIndex.IsReshaping(node) && node.OpType != "Mul")
                    next = next with { Unknown = unknown ?? node };
                foreach (string o in node.Output)
                    queue.Enqueue((o, next.Flattened, next.Measured, next.Gate, next.Unknown, depth + 1));
            }
        }
        return null;
    }

    /// <summary>The projection computing <paramref name="tensor"/> (through reshapes): Gemm, MatMul, or MatMul + bias
    /// Add.</summary>
    static Projection? FindProjection(GraphIndex index, string tensor)
    {
        if (index.Producer(index.Source(tensor)) is not { } node)
            return null;
        if (node.OpType == "Gemm" && Weight(node, index) is (string gemmWeight, int gemmTransB))
            return new Projection("Gemm", node.Name, gemmWeight, BiasOf(node, index), gemmTransB);
        if (node.OpType == "MatMul" && Weight(node, index) is (string weight, int transB))
            return new Projection("MatMul", node.Name, weight, null, transB);
        if (node.OpType == "Add")
        {
            int bias =
                index.InitializerThroughIdentity(node.Input[1]) != null ? 1
                : index.InitializerThroughIdentity(node.Input[0]) != null ? 0
                : -1;
            if (bias < 0 || index.Producer(index.Source(node.Input[1 - bias])) is not { OpType: "MatMul" } matmul)
                return null;
            return Weight(matmul, index) is (string w, int t)
                ? new Projection("MatMul", matmul.Name, w, node.Input[bias], t)
                : null;
        }
        return null;
    }

    static string DataInput(GraphIndex index, Projection p) => index.Graph.Node.First(n => n.Name == p.Node).Input[0];

    // The weight initializer of a MatMul/Gemm and its layout: direct ([in, out], or Gemm's transB), or through a
    // 2-D Transpose left unfolded by the exporter, which makes the stored initializer [out, in] (transB = 1 in effect).
    static (string Weight, int TransB)? Weight(NodeProto node, GraphIndex index)
    {
        string input = node.Input[1];
        if (index.Initializers.TryGetValue(input, out var direct) && direct.Dims.Count == 2)
            return (input, TransB(node));
        if (
            index.Producer(input) is { OpType: "Transpose" } transpose
            && index.Initializers.TryGetValue(transpose.Input[0], out var stored)
            && stored.Dims.Count == 2
            && TransB(node) == 0
        )
        {
            var perm = transpose.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints;
            if (perm == null || perm.SequenceEqual([1L, 0L]))
                return (stored.Name, 1);
        }
        return null;
    }

    // The bias as the projection (Gemm's C) or its Add reads it: an initializer, or one read through Identity.
    static string? BiasOf(NodeProto node, GraphIndex index)
    {
        if (node.OpType == "Gemm")
            return node.Input.Count > 2 && index.InitializerThroughIdentity(node.Input[2]) != null
                ? node.Input[2]
                : null;
        var add = index.Consumers(node.Output[0]).FirstOrDefault(n => n.OpType == "Add");
        return add?.Input.FirstOrDefault(i => i != node.Output[0] && index.InitializerThroughIdentity(i) != null);
    }

    static int TransB(NodeProto node) => (int)(node.Attribute.FirstOrDefault(a => a.Name == "transB")?.I ?? 0);
}
