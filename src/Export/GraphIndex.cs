using Onnx;

namespace Sparsity.Export;

/// <summary>Producers, consumers, initializers and constants of a graph: what pattern matching on it looks
/// up.</summary>
public sealed class GraphIndex
{
    readonly Dictionary<string, NodeProto> _producer = [];
    readonly Dictionary<string, List<NodeProto>> _consumers = [];

    /// <summary>Indexes <paramref name="graph"/> as it is now (rebuild after rewriting it).</summary>
    public GraphIndex(GraphProto graph)
    {
        Graph = graph;
        Initializers = graph.Initializer.ToDictionary(i => i.Name);
        foreach (var node in graph.Node)
        {
            foreach (string o in node.Output)
                _producer[o] = node;
            foreach (string i in node.Input.Where(i => i != ""))
                (_consumers.TryGetValue(i, out var list) ? list : _consumers[i] = []).Add(node);
        }
    }

    /// <summary>The indexed graph.</summary>
    public GraphProto Graph { get; }

    /// <summary>Initializers by name.</summary>
    public IReadOnlyDictionary<string, TensorProto> Initializers { get; }

    /// <summary>The node writing <paramref name="tensor"/>; null for graph inputs and initializers.</summary>
    public NodeProto? Producer(string tensor) => _producer.GetValueOrDefault(tensor);

    /// <summary>Nodes reading <paramref name="tensor"/>.</summary>
    public IReadOnlyList<NodeProto> Consumers(string tensor) =>
        _consumers.TryGetValue(tensor, out var list) ? list : [];

    /// <summary>The value of a constant tensor: an initializer or the output of a Constant node; null
    /// otherwise.</summary>
    public TensorProto? Constant(string tensor) =>
        Initializers.TryGetValue(tensor, out var t) ? t
        : Producer(tensor) is { OpType: "Constant" } c ? c.Attribute.FirstOrDefault(a => a.Name == "value")?.T
        : null;

    /// <summary>An int64 constant's values; null when the tensor is not an int64 constant.</summary>
    public long[]? Int64s(string tensor)
    {
        var t = Constant(tensor);
        if (t == null || t.DataType != (int)TensorProto.Types.DataType.Int64)
            return null;
        return t.Int64Data.Count > 0
            ? t.Int64Data.ToArray()
            : System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(t.RawData.Span).ToArray();
    }

    /// <summary>
    /// The initializer <paramref name="tensor"/> is, directly or through Identity nodes (torch.onnx reads an
    /// initializer it found identical in several places through Identity, e.g. every layer's zero bias); null when it
    /// is computed.
    /// </summary>
    public string? InitializerThroughIdentity(string tensor)
    {
        for (
            int i = 0;
            i < 8 && !Initializers.ContainsKey(tensor) && Producer(tensor) is { OpType: "Identity" } node;
            i++
        )
            tensor = node.Input[0];
        return Initializers.ContainsKey(tensor) ? tensor : null;
    }

    /// <summary>Follows <paramref name="tensor"/> back through single-input reshaping ops to where its values were
    /// computed.</summary>
    public string Source(string tensor)
    {
        for (int i = 0; i < 8 && Producer(tensor) is { } node && IsReshaping(node); i++)
            tensor = node.Input[0];
        return tensor;
    }

    /// <summary>Ops that move values without changing them: Reshape, Flatten, Squeeze, Unsqueeze, Identity, Cast,
    /// Dropout.</summary>
    public static bool IsReshaping(NodeProto node) =>
        node.OpType is "Reshape" or "Flatten" or "Squeeze" or "Unsqueeze" or "Identity" or "Cast" or "Dropout";

    /// <summary>Makes every node that reads <paramref name="from"/> read <paramref name="to"/> instead.</summary>
    public static void RenameReads(GraphProto graph, string from, string to)
    {
        foreach (var node in graph.Node)
            for (int i = 0; i < node.Input.Count; i++)
                if (node.Input[i] == from)
                    node.Input[i] = to;
    }
}
