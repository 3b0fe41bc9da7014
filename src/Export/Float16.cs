using Google.Protobuf;
using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Export;

/// <summary>
/// Converts a graph's float32 weights and compute to float16 or bfloat16 for GPU analysis (<c>--precision
/// fp16|bf16</c>): float initializers and constants change type (fp16 clamped to ±65,504, so masks built from float32's
/// minimum stay finite; bf16 rounded to nearest even, finite values kept finite), casts to float32 cast to the new
/// type, and float outputs are cast back to float32; integer inputs and outputs keep their types. A graph whose weights
/// are already in the asked type is returned as it is (converting it again would change its own casts, and so its
/// results). Analysis instruments the converted graph; its counts compare in the new type and sum in float32.
/// </summary>
public static class Float16
{
    const float Max = 65504f;

    /// <summary>
    /// A copy of <paramref name="model"/> computing in <paramref name="type"/> (Float16 or Bfloat16; Float returns the
    /// model itself); shape annotations are dropped (their types changed).
    /// </summary>
    public static ModelProto Convert(ModelProto model, DataType type = DataType.Float16)
    {
        if (type == DataType.Float)
            return model;
        if (type is not (DataType.Float16 or DataType.Bfloat16))
            throw new ArgumentException($"No conversion to {type}.", nameof(type));
        var weights = model
            .Graph.Initializer.Where(t => t.Dims.Aggregate(1L, (a, d) => a * d) > 1)
            .GroupBy(t => (DataType)t.DataType)
            .ToDictionary(g => g.Key, g => g.Count());
        if (!weights.ContainsKey(DataType.Float))
        {
            if (weights.ContainsKey(type))
                return model; // already in that type (e.g. a torch.onnx export in fp16)
            var other = type == DataType.Float16 ? DataType.Bfloat16 : DataType.Float16;
            if (weights.ContainsKey(other))
                throw new UserInputException(
                    $"The graph's weights are {Name(other)} already; --precision {Name(type)} converts float32 graphs: use --precision {Name(other)}."
                );
        }
        var result = model.Clone();
        var graph = result.Graph;
        var (indexNodes, indexConstants) = IndexArithmetic(graph);
        foreach (
            var t in graph.Initializer.Where(t => t.DataType == (int)DataType.Float && !indexConstants.Contains(t.Name))
        )
            ToHalf(t, type);
        foreach (var node in graph.Node.Where(n => !indexNodes.Contains(n)))
        foreach (var a in node.Attribute)
        {
            if (a.T != null && a.T.DataType == (int)DataType.Float)
                ToHalf(a.T, type); // Constant, ConstantOfShape
            if (node.OpType == "Cast" && a.Name == "to" && a.I == (long)DataType.Float)
                a.I = (long)type;
        }
        if (
            graph.Node.Any(n =>
                n.OpType == "Constant" && n.Attribute.Any(a => a.Name is "value_float" or "value_floats")
            )
        )
            throw new UserInputException(
                $"The graph holds Constant nodes with value_float attributes, which --precision {Name(type)} does not convert; use fp32."
            );
        var g = new GraphWriter(graph);
        if (type == DataType.Bfloat16)
            KeepFloat32(graph, g, indexNodes);
        foreach (var output in graph.Output.Where(o => o.Type?.TensorType?.ElemType == (int)DataType.Float).ToList())
        {
            g.CastToFloatUnderOwnName(output.Name, output.Name + "." + Name(type)); // the producer now writes the new type
        }
        graph.ValueInfo.Clear();
        return result;
    }

    // Float ops that turn integers into an integer again (T5's relative-position buckets: ⌊log(d / 8) / log(16) · 8⌋)
    // stay float32: in half precision they round across an integer (d = 16 gives bucket 9, not 10, in fp16 and bf16).
    static readonly HashSet<string> IndexOps =
    [
        "Mul",
        "Div",
        "Add",
        "Sub",
        "Log",
        "Exp",
        "Sqrt",
        "Pow",
        "Floor",
        "Ceil",
        "Round",
        "Abs",
        "Neg",
        "Min",
        "Max",
        "Identity",
    ];
    static readonly HashSet<long> IntegerTypes =
    [
        (long)DataType.Int64,
        (long)DataType.Int32,
        (long)DataType.Int16,
        (long)DataType.Int8,
        (long)DataType.Uint64,
        (long)DataType.Uint32,
        (long)DataType.Uint16,
        (long)DataType.Uint8,
    ];

    // The nodes and constants of every float computation that starts at casts of integers to float and ends in a cast
    // back to an integer, through elementwise ops and constants only.
    static (HashSet<NodeProto> Nodes, HashSet<string> Constants) IndexArithmetic(GraphProto graph)
    {
        var index = new GraphIndex(graph);
        var initializers = graph.Initializer.Select(t => t.Name).ToHashSet();
        var nodes = new HashSet<NodeProto>();
        var constants = new HashSet<string>();
        bool ToInteger(NodeProto n) =>
            n.OpType == "Cast" && n.Attribute.Any(a => a.Name == "to" && IntegerTypes.Contains(a.I));
        bool ToFloat(NodeProto n) =>
            n.OpType == "Cast" && n.Attribute.Any(a => a.Name == "to" && a.I == (long)DataType.Float);
        foreach (var end in graph.Node.Where(ToInteger))
        {
            var region = new HashSet<NodeProto>();
            var regionConstants = new HashSet<string>();
            var pending = new Stack<string>([end.Input[0]]);
            bool integral = true,
                fromInteger = false;
            while (integral && pending.TryPop(out var tensor))
            {
                var producer = index.Producer(tensor);
                if (producer == null)
                {
                    if (initializers.Contains(tensor))
                        regionConstants.Add(tensor);
                    else
                        integral = false; // a graph input: not index arithmetic
                    continue;
                }
                if (!region.Add(producer))
                    continue;
                if (ToFloat(producer))
                {
                    // Where integers enter (a Range, a Shape, an index computation): not a cast of a model's float
                    // values.
                    fromInteger = true;
                    if (
                        index.Producer(producer.Input[0]) is { } source
                        && (
                            ToFloat(source)
                            || source.OpType is "MatMul" or "Gemm" or "Softmax"
                            || source.OpType == "Gather" && !IsIntegerGather(source)
                        )
                    )
                        integral = false;
                    continue;
                }
                if (producer.OpType == "Constant")
                    continue;
                if (!IndexOps.Contains(producer.OpType))
                {
                    integral = false;
                    continue;
                }
                foreach (string i in producer.Input.Where(i => i.Length > 0))
                    pending.Push(i);
            }
            if (!integral || !fromInteger)
                continue;
            nodes.UnionWith(region);
            constants.UnionWith(regionConstants);
        }
        return (nodes, constants);

        // A Gather of positions (an integer table) is integer; one of an embedding table is not.
        bool IsIntegerGather(NodeProto gather) =>
            index.Constant(gather.Input[0]) is { } table && IntegerTypes.Contains(table.DataType);
    }

    // Ops without bfloat16: in ONNX's type constraints (rotary embeddings' Sin and Cos, a float Range), or in ONNX
    // Runtime's kernels on both providers (Reciprocal, RMSNorm's rsqrt; Log; found on an H200): float32 between two
    // casts.
    static readonly HashSet<string> NoBFloat16 =
    [
        "Sin",
        "Cos",
        "Tan",
        "Asin",
        "Acos",
        "Atan",
        "Sinh",
        "Cosh",
        "Asinh",
        "Acosh",
        "Atanh",
        "Range",
        "Reciprocal",
        "Log",
    ];

    static void KeepFloat32(GraphProto graph, GraphWriter g, HashSet<NodeProto> float32Already)
    {
        var index = new GraphIndex(graph);
        foreach (
            var node in graph
                .Node.Where(n =>
                    n.Domain is "" or "ai.onnx" && NoBFloat16.Contains(n.OpType) && !float32Already.Contains(n)
                )
                .ToList()
        )
        {
            if (node.OpType == "Range" && !node.Input.Any(i => IsBFloat16(graph, index, i)))
                continue; // an integer Range
            int at = graph.Node.IndexOf(node);
            for (int i = 0; i < node.Input.Count; i++)
            {
                var cast = new NodeProto
                {
                    OpType = "Cast",
                    Name = g.Fresh(node.Name + ".in_f32"),
                    Input = { node.Input[i] },
                    Output = { g.Fresh(node.Input[i] + ".f32") },
                    Attribute = { OnnxGraph.Int("to", (long)DataType.Float) },
                };
                graph.Node.Insert(at++, cast);
                node.Input[i] = cast.Output[0];
            }
            string output = node.Output[0];
            node.Output[0] = g.Fresh(output + ".f32");
            graph.Node.Insert(
                at + 1,
                new NodeProto
                {
                    OpType = "Cast",
                    Name = g.Fresh(node.Name + ".out_bf16"),
                    Input = { node.Output[0] },
                    Output = { output },
                    Attribute = { OnnxGraph.Int("to", (long)DataType.Bfloat16) },
                }
            );
        }
    }

    // Whether a Range's bound is a float (now bf16) tensor: an initializer or Constant of that type.
    static bool IsBFloat16(GraphProto graph, GraphIndex index, string tensor) =>
        index.Constant(tensor) is { DataType: (int)DataType.Bfloat16 };

    static string Name(DataType type) => type == DataType.Bfloat16 ? "bf16" : "fp16";

    static void ToHalf(TensorProto t, DataType type)
    {
        float[] values = Surgery.ReadFloats(t);
        var bits = new ushort[values.Length];
        for (int i = 0; i < values.Length; i++)
            bits[i] =
                type == DataType.Float16
                    ? BitConverter.HalfToUInt16Bits((Half)Math.Clamp(values[i], -Max, Max))
                    : ToBFloat16(values[i]);
        t.FloatData.Clear();
        t.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan()));
        t.DataType = (int)type;
    }

    /// <summary>
    /// float32 → bfloat16, rounded to nearest even; finite values beyond bf16's largest finite one (±3.39e38) become
    /// it, as fp16 clamps, so a mask built from float32's minimum stays finite (−∞ · 0 would be NaN). NaN stays NaN.
    /// </summary>
    public static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
            return (ushort)((bits >> 16) | 0x40);
        var rounded = (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
        return float.IsFinite(value) && (rounded & 0x7FFF) == 0x7F80 ? (ushort)(rounded - 1) : rounded; // ±∞ → ±largest finite
    }
}
