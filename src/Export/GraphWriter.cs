using Onnx;

namespace Sparsity.Export;

/// <summary>
/// Appends nodes and initializers to an ONNX graph under unique names, so subgraphs (attention,
/// Top-k, statistics) can be written as a few lines each. Used on fresh graphs and on loaded ones.
/// </summary>
public sealed class GraphWriter(GraphProto graph)
{
    readonly HashSet<string> _names = graph
        .Node.SelectMany(n => n.Output.Append(n.Name))
        .Concat(graph.Initializer.Select(i => i.Name))
        .Concat(graph.Input.Select(i => i.Name))
        .ToHashSet();

    /// <summary>The graph written to.</summary>
    public GraphProto Graph => graph;

    /// <summary>A name not used yet in the graph, based on <paramref name="hint"/>.</summary>
    public string Fresh(string hint)
    {
        string name = hint;
        for (int i = 1; !_names.Add(name); i++)
            name = $"{hint}_{i}";
        return name;
    }

    /// <summary>Adds a single-output node; returns its output name.</summary>
    public string Op(string op, string hint, string[] inputs, params AttributeProto[] attributes) =>
        Ops(op, hint, inputs, 1, attributes)[0];

    /// <summary>Adds a node with <paramref name="outputs"/> outputs; returns their names.</summary>
    public string[] Ops(string op, string hint, string[] inputs, int outputs, params AttributeProto[] attributes)
    {
        var names = Enumerable.Range(0, outputs).Select(i => Fresh(outputs == 1 ? hint : $"{hint}.{i}")).ToArray();
        graph.Node.Add(OnnxGraph.Node(op, Fresh(hint + "/" + op), inputs, names, attributes));
        return names;
    }

    /// <summary>
    /// Adds a node of ONNX Runtime's contrib domain (<see cref="ContribDomain"/>, e.g. MultiHeadAttention); the model
    /// that holds the graph must import that domain (version 1).
    /// </summary>
    public string ContribOp(string op, string hint, string[] inputs, params AttributeProto[] attributes)
    {
        string output = Op(op, hint, inputs, attributes);
        graph.Node[^1].Domain = ContribDomain;
        return output;
    }

    /// <summary>ONNX Runtime's contrib operator domain.</summary>
    public const string ContribDomain = "com.microsoft";

    /// <summary>Adds a node whose single output has exactly the given name (graph outputs with stable names).</summary>
    public string Named(string op, string output, string[] inputs, params AttributeProto[] attributes)
    {
        _names.Add(output);
        graph.Node.Add(OnnxGraph.Node(op, Fresh(output + "/" + op), inputs, [output], attributes));
        return output;
    }

    /// <summary>When set, large float initializers are written straight into this side file instead of the
    /// graph.</summary>
    public ExternalData.SideFile? Spill { get; init; }

    /// <summary>
    /// Makes <paramref name="tensor"/> a float32 cast of itself: its producer and readers move to a fresh name (from
    /// <paramref name="hint"/>) in the producer's own type, and a Cast writes the float32 value under the old name, so
    /// a graph output keeps its name and type whatever the graph computes in.
    /// </summary>
    public void CastToFloatUnderOwnName(string tensor, string hint)
    {
        string typed = Fresh(hint);
        foreach (var node in graph.Node)
            for (int i = 0; i < node.Output.Count; i++)
                if (node.Output[i] == tensor)
                    node.Output[i] = typed;
        GraphIndex.RenameReads(graph, tensor, typed);
        Named("Cast", tensor, [typed], OnnxGraph.Int("to", (long)Onnx.TensorProto.Types.DataType.Float));
    }

    /// <summary>Adds a float32 initializer (into <see cref="Spill"/> when it is set and the tensor is large).</summary>
    public string Floats(string hint, long[] dims, ReadOnlySpan<float> values)
    {
        string name = Fresh(hint);
        graph.Initializer.Add(
            Spill != null && values.Length * sizeof(float) >= ExternalData.SmallTensor
                ? Spill.Add(name, dims, values)
                : OnnxGraph.FloatTensor(name, dims, values)
        );
        return name;
    }

    /// <summary>Adds a float16 initializer.</summary>
    public string Halfs(string hint, long[] dims, ReadOnlySpan<Half> values)
    {
        string name = Fresh(hint);
        graph.Initializer.Add(
            new TensorProto
            {
                Name = name,
                DataType = (int)Onnx.TensorProto.Types.DataType.Float16,
                Dims = { dims },
                RawData = Google.Protobuf.ByteString.CopyFrom(
                    System.Runtime.InteropServices.MemoryMarshal.AsBytes(values)
                ),
            }
        );
        return name;
    }

    /// <summary>Adds an int64 initializer.</summary>
    public string Longs(string hint, long[] dims, params long[] values)
    {
        string name = Fresh(hint);
        graph.Initializer.Add(OnnxGraph.Int64Tensor(name, dims, values));
        return name;
    }

    /// <summary>Adds a float32 scalar initializer.</summary>
    public string Scalar(string hint, float value) => Floats(hint, [], [value]);

    /// <summary>
    /// Adds a scalar initializer of <paramref name="type"/> (float32, float16 or bfloat16) holding the largest value of
    /// that type not above <paramref name="value"/>: for any x of that type, x &gt; it exactly when x &gt; value.
    /// </summary>
    public string ScalarBelow(string hint, float value, Onnx.TensorProto.Types.DataType type)
    {
        if (type == Onnx.TensorProto.Types.DataType.Float)
            return Scalar(hint, value);
        ushort bits = type switch
        {
            Onnx.TensorProto.Types.DataType.Float16 => HalfBelow(value),
            Onnx.TensorProto.Types.DataType.Bfloat16 => BFloat16Below(value),
            _ => throw new ArgumentException($"No scalar of type {type}.", nameof(type)),
        };
        string name = Fresh(hint);
        graph.Initializer.Add(
            new TensorProto
            {
                Name = name,
                DataType = (int)type,
                RawData = Google.Protobuf.ByteString.CopyFrom(BitConverter.GetBytes(bits)),
            }
        );
        return name;
    }

    static ushort HalfBelow(float value)
    {
        var h = (Half)value; // round to nearest, then one step down if that went above
        if ((float)h > value)
            h = Half.BitDecrement(h);
        return BitConverter.HalfToUInt16Bits(h);
    }

    static ushort BFloat16Below(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        var truncated = (ushort)(bits >> 16); // toward zero: below for positive values, above for negative ones unless exact
        if (value < 0 && (bits & 0xFFFF) != 0)
            truncated++;
        return truncated;
    }

    /// <summary>
    /// Top-k thresholding of the last axis, as <c>Mlp.Hidden</c> trains it: the k largest entries
    /// of each row keep their value, all others become 0 (ScatterElements of ones at TopK's indices);
    /// <paramref name="type"/> is the input's element type.
    /// </summary>
    public string TopKMask(
        string input,
        long k,
        string hint,
        TensorProto.Types.DataType type = TensorProto.Types.DataType.Float
    )
    {
        string indices = Ops(
            "TopK",
            hint + "/topk",
            [input, Longs(hint + "/k", [1], k)],
            2,
            OnnxGraph.Int("axis", -1),
            OnnxGraph.Int("largest", 1),
            OnnxGraph.Int("sorted", 0)
        )[1];
        string zeros = Op(
            "ConstantOfShape",
            hint + "/zeros",
            [Op("Shape", hint + "/shape", [input])],
            OnnxGraph.TensorAttribute("value", OnnxGraph.FloatTensor("value", [1], [0f]))
        );
        string ones = Op(
            "ConstantOfShape",
            hint + "/ones",
            [Op("Shape", hint + "/kshape", [indices])],
            OnnxGraph.TensorAttribute("value", OnnxGraph.FloatTensor("value", [1], [1f]))
        );
        string keep = Op("ScatterElements", hint + "/keep", [zeros, indices, ones], OnnxGraph.Int("axis", -1));
        if (type != TensorProto.Types.DataType.Float)
            keep = Op("Cast", hint + "/keep_typed", [keep], OnnxGraph.Int("to", (long)type)); // 0/1: exact in any float type
        return Op("Mul", hint + "/topk_out", [input, keep]);
    }
}
