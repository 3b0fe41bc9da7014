using Onnx;
using Sparsity.Training;

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
/// <param name="Output">The measured tensor: the down-projection's input, after the activation and after any mask or Top-k.</param>
/// <param name="DFf">Hidden units.</param>
/// <param name="Layout">"batch_seq_dff" ([batch, seq, d_ff]) or "tokens_dff" (flattened [batch·seq, d_ff]).</param>
/// <param name="Up">Up-projection (d_model → d_ff).</param>
/// <param name="Down">Down-projection (d_ff → d_model).</param>
public sealed record MlpSite(int Layer, string Node, string Output, int DFf, string Layout, Projection Up, Projection Down);

/// <summary>
/// Finds MLP blocks in any ONNX graph: an activation (Relu, or other op types by option) whose output
/// reaches, through shape and elementwise ops only, the data input of a MatMul or Gemm with an
/// initializer weight (the down-projection), and whose input comes from MatMul(+Add) or Gemm with an
/// initializer weight (the up-projection). A weight may also reach the MatMul through an unfolded 2-D
/// Transpose (exports without constant folding); the initializer is then [out, in], like Gemm transB = 1. Handles torch.onnx's Gemm → Relu → Gemm on 2-D tensors and
/// MatMul → Add → Relu → MatMul → Add on 3-D tensors, and this project's own masks and Top-k.
/// </summary>
public static class MlpSites
{
    // Ops allowed between the activation and the down-projection: reshapes, casts, masks, Top-k.
    static readonly HashSet<string> PassThrough = ["Reshape", "Flatten", "Cast", "Identity", "Dropout", "Mul", "TopK", "Shape", "ConstantOfShape", "ScatterElements"];
    static readonly HashSet<string> Flattening = ["Reshape", "Flatten"];

    /// <summary>The MLP sites in graph order; a user error when there is none.</summary>
    public static IReadOnlyList<MlpSite> Find(ModelProto model, IReadOnlyCollection<string>? activationOps = null)
    {
        activationOps ??= ["Relu"];
        var graph = model.Graph;
        var initializers = graph.Initializer.ToDictionary(i => i.Name);
        var producer = new Dictionary<string, NodeProto>();
        var consumers = new Dictionary<string, List<NodeProto>>();
        foreach (var node in graph.Node)
        {
            foreach (string o in node.Output) producer[o] = node;
            foreach (string i in node.Input.Where(i => i != ""))
                (consumers.TryGetValue(i, out var list) ? list : consumers[i] = []).Add(node);
        }

        var sites = new List<MlpSite>();
        foreach (var activation in graph.Node.Where(n => activationOps.Contains(n.OpType)))
        {
            var down = FindDown(activation.Output[0], consumers, producer, initializers, out bool flattened);
            var up = FindUp(activation.Input[0], producer, initializers);
            if (down == null || up == null) continue;
            var (downNode, downProjection) = down.Value;
            var weight = initializers[downProjection.Weight];
            int dFf = (int)(downProjection.TransB == 1 ? weight.Dims[1] : weight.Dims[0]);
            string layout = downNode.OpType == "Gemm" || flattened ? "tokens_dff" : "batch_seq_dff";
            sites.Add(new MlpSite(sites.Count, activation.Name, downNode.Input[0], dFf, layout, up, downProjection));
        }
        if (sites.Count == 0)
            throw new UserInputException($"No MLP activation found: no {string.Join("/", activationOps)} node feeds a MatMul or Gemm with an initializer weight " +
                                         "(through Reshape/Cast/Identity) after a MatMul or Gemm. Use --activation for other activation op types.");
        return sites;
    }

    /// <summary>Nodes between a site's activation and its down-projection (masks, Top-k, reshapes).</summary>
    public static IReadOnlyList<NodeProto> PathNodes(ModelProto model, MlpSite site)
    {
        var consumers = model.Graph.Node.SelectMany(n => n.Input.Select(i => (i, n))).ToLookup(p => p.i, p => p.n);
        var activation = model.Graph.Node.First(n => n.Name == site.Node);
        var path = new List<NodeProto>();
        var queue = new Queue<string>(activation.Output);
        var seen = new HashSet<string>();
        while (queue.Count > 0)
        {
            string t = queue.Dequeue();
            if (!seen.Add(t)) continue;
            foreach (var node in consumers[t].Where(n => PassThrough.Contains(n.OpType) && n.Name != site.Down.Node && !path.Contains(n)))
            {
                path.Add(node);
                if (path.Count < 32) foreach (string o in node.Output) queue.Enqueue(o);
            }
        }
        return path;
    }

    static (NodeProto, Projection)? FindDown(string tensor, Dictionary<string, List<NodeProto>> consumers, Dictionary<string, NodeProto> producer, Dictionary<string, TensorProto> initializers, out bool flattened)
    {
        // Breadth-first over pass-through ops: the nearest MatMul/Gemm taking the path as its data input.
        var queue = new Queue<(string Tensor, bool Flattened, int Depth)>([(tensor, false, 0)]);
        var seen = new HashSet<string>();
        while (queue.Count > 0)
        {
            var (t, flat, depth) = queue.Dequeue();
            if (!seen.Add(t) || !consumers.TryGetValue(t, out var nodes)) continue;
            foreach (var node in nodes)
            {
                if ((node.OpType is "MatMul" or "Gemm") && node.Input[0] == t && node.Input.Count > 1 && Weight(node, producer, initializers) is var (weight, transB) && weight != null)
                {
                    flattened = flat;
                    return (node, new Projection(node.OpType, node.Name, weight, BiasOf(node, consumers, initializers), transB));
                }
                if (depth < 8 && PassThrough.Contains(node.OpType))
                    foreach (string o in node.Output) queue.Enqueue((o, flat || Flattening.Contains(node.OpType), depth + 1));
            }
        }
        flattened = false;
        return null;
    }

    static Projection? FindUp(string tensor, Dictionary<string, NodeProto> producer, Dictionary<string, TensorProto> initializers)
    {
        if (!producer.TryGetValue(tensor, out var node)) return null;
        if (node.OpType == "Gemm" && Weight(node, producer, initializers) is (string gemmWeight, int gemmTransB))
            return new Projection("Gemm", node.Name, gemmWeight, node.Input.Count > 2 && initializers.ContainsKey(node.Input[2]) ? node.Input[2] : null, gemmTransB);
        if (node.OpType == "MatMul" && Weight(node, producer, initializers) is (string weight, int transB))
            return new Projection("MatMul", node.Name, weight, null, transB);
        if (node.OpType == "Add")
        {
            int bias = initializers.ContainsKey(node.Input[1]) ? 1 : initializers.ContainsKey(node.Input[0]) ? 0 : -1;
            if (bias < 0 || !producer.TryGetValue(node.Input[1 - bias], out var matmul) || matmul.OpType != "MatMul") return null;
            return Weight(matmul, producer, initializers) is (string w, int t) ? new Projection("MatMul", matmul.Name, w, node.Input[bias], t) : null;
        }
        return null;
    }

    // The weight initializer of a MatMul/Gemm and its layout: direct ([in, out], or Gemm's transB), or through a
    // 2-D Transpose left unfolded by the exporter, which makes the stored initializer [out, in] (transB = 1 in effect).
    static (string? Weight, int TransB) Weight(NodeProto node, Dictionary<string, NodeProto> producer, Dictionary<string, TensorProto> initializers)
    {
        string input = node.Input[1];
        if (initializers.ContainsKey(input)) return (input, TransB(node));
        if (producer.TryGetValue(input, out var transpose) && transpose.OpType == "Transpose" && initializers.TryGetValue(transpose.Input[0], out var stored)
            && stored.Dims.Count == 2 && TransB(node) == 0)
        {
            var perm = transpose.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints;
            if (perm == null || perm.SequenceEqual([1L, 0L])) return (stored.Name, 1);
        }
        return (null, 0);
    }

    static string? BiasOf(NodeProto node, Dictionary<string, List<NodeProto>> consumers, Dictionary<string, TensorProto> initializers)
    {
        if (node.OpType == "Gemm") return node.Input.Count > 2 && initializers.ContainsKey(node.Input[2]) ? node.Input[2] : null;
        var add = consumers.GetValueOrDefault(node.Output[0])?.FirstOrDefault(n => n.OpType == "Add");
        return add?.Input.FirstOrDefault(i => i != node.Output[0] && initializers.ContainsKey(i));
    }

    static int TransB(NodeProto node) => (int)(node.Attribute.FirstOrDefault(a => a.Name == "transB")?.I ?? 0);
}
