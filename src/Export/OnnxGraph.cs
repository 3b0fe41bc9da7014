using Google.Protobuf;
using Onnx;

namespace Sparsity.Export;

/// <summary>
/// Small helpers for writing ONNX graphs with the protoc-generated types: nodes, initializers,
/// typed inputs/outputs, and the model wrapper with producer, version and opset.
/// </summary>
public static class OnnxGraph
{
    /// <summary>Default ONNX opset of graphs this project writes (LayerNormalization needs 17).</summary>
    public const long Opset = 17;

    /// <summary>A node with optional attributes.</summary>
    public static NodeProto Node(
        string op,
        string name,
        IEnumerable<string> inputs,
        IEnumerable<string> outputs,
        params AttributeProto[] attributes
    )
    {
        var node = new NodeProto { OpType = op, Name = name };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        return node;
    }

    /// <summary>An integer attribute.</summary>
    public static AttributeProto Int(string name, long value) =>
        new()
        {
            Name = name,
            Type = AttributeProto.Types.AttributeType.Int,
            I = value,
        };

    /// <summary>A string attribute.</summary>
    public static AttributeProto String(string name, string value) =>
        new()
        {
            Name = name,
            Type = AttributeProto.Types.AttributeType.String,
            S = Google.Protobuf.ByteString.CopyFromUtf8(value),
        };

    /// <summary>A float attribute.</summary>
    public static AttributeProto Float(string name, float value) =>
        new()
        {
            Name = name,
            Type = AttributeProto.Types.AttributeType.Float,
            F = value,
        };

    /// <summary>An integer-list attribute.</summary>
    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    /// <summary>A tensor attribute (Constant, ConstantOfShape).</summary>
    public static AttributeProto TensorAttribute(string name, TensorProto value) =>
        new()
        {
            Name = name,
            Type = AttributeProto.Types.AttributeType.Tensor,
            T = value,
        };

    /// <summary>A float32 tensor stored as raw little-endian data.</summary>
    public static TensorProto FloatTensor(string name, long[] dims, ReadOnlySpan<float> values)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        t.Dims.AddRange(dims);
        t.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
        return t;
    }

    /// <summary>An int64 tensor.</summary>
    public static TensorProto Int64Tensor(string name, long[] dims, params long[] values)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        t.Dims.AddRange(dims);
        t.Int64Data.AddRange(values);
        return t;
    }

    /// <summary>A graph input or output of an element type with named (dynamic) or fixed dimensions.</summary>
    public static ValueInfoProto Value(string name, TensorProto.Types.DataType type, params object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (object d in dims)
            shape.Dim.Add(
                d is string param
                    ? new TensorShapeProto.Types.Dimension { DimParam = param }
                    : new TensorShapeProto.Types.Dimension { DimValue = Convert.ToInt64(d) }
            );
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto
            {
                TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape },
            },
        };
    }

    /// <summary>Wraps a graph into a model with IR version 8, the opset, producer name and version.</summary>
    public static ModelProto Model(GraphProto graph, string producerVersion, long opset = Opset, string docString = "")
    {
        var model = new ModelProto
        {
            IrVersion = 8,
            ProducerName = "relu-sparsity",
            ProducerVersion = producerVersion,
            Graph = graph,
            DocString = docString,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        return model;
    }

    /// <summary>Reads a model file; a file that is not ONNX is a user error naming it.</summary>
    public static ModelProto Load(string path)
    {
        if (Directory.Exists(path))
            throw new UserInputException(
                $"Model {path} is a folder; give the .onnx file in it"
                    + (
                        Directory.EnumerateFiles(path, "*.onnx").Select(Path.GetFileName).FirstOrDefault() is { } onnx
                            ? $" (e.g. {Path.Combine(path, onnx)})."
                            : " (it holds no .onnx file)."
                    )
            );
        if (!File.Exists(path))
            throw new UserInputException($"Model {path} does not exist.");
        try
        {
            using var stream = File.OpenRead(path);
            var model = ModelProto.Parser.ParseFrom(stream);
            if (model.Graph != null && model.Graph.Node.Count > 0)
            {
                ExternalData.Inline(model, path); // rewritten graphs are written elsewhere: carry the weights with them
                SortTopologically(model.Graph);
                return model;
            }
        }
        catch (InvalidProtocolBufferException) { }
        throw new UserInputException(
            $"{path} is not an ONNX model (it does not parse as an ONNX ModelProto with a graph)."
        );
    }

    /// <summary>A copy of the model whose only output is <paramref name="output"/>: what is deployed, and what latency
    /// is timed on.</summary>
    public static ModelProto WithOnlyOutput(ModelProto model, string output) => WithOnlyOutputs(model, [output]);

    /// <summary>
    /// A copy whose graph outputs are only <paramref name="outputs"/>, in that order. ONNX Runtime then skips every
    /// node the remaining outputs do not need (e.g. the vocabulary projection when only MLP activations are read).
    /// </summary>
    public static ModelProto WithOnlyOutputs(ModelProto model, IReadOnlyList<string> outputs)
    {
        var copy = model.Clone();
        var keep = outputs
            .Select(name =>
                copy.Graph.Output.FirstOrDefault(o => o.Name == name)
                ?? throw new UserInputException(
                    $"The model has no output {name} (its outputs: {string.Join(", ", model.Graph.Output.Select(o => o.Name))})."
                )
            )
            .ToList();
        copy.Graph.Output.Clear();
        copy.Graph.Output.AddRange(keep);
        RemoveDeadNodes(copy.Graph);
        return copy;
    }

    /// <summary>
    /// Removes nodes no graph output depends on, and initializers nothing reads. ONNX Runtime still runs a node whose
    /// outputs nobody reads (measured: an analysis graph keeping a dead 4,096-way logits projection ran 1.3× slower).
    /// </summary>
    public static void RemoveDeadNodes(GraphProto graph)
    {
        var needed = graph.Output.Select(o => o.Name).ToHashSet();
        var live = new HashSet<NodeProto>();
        for (int i = graph.Node.Count - 1; i >= 0; i--) // nodes are topologically sorted: walk back from the outputs
        {
            var node = graph.Node[i];
            if (!node.Output.Any(needed.Contains))
                continue;
            live.Add(node);
            foreach (string input in Reads(node))
                needed.Add(input);
        }
        foreach (var node in graph.Node.Where(n => !live.Contains(n)).ToList())
            graph.Node.Remove(node);
        var used = graph.Node.SelectMany(Reads).Concat(graph.Output.Select(o => o.Name)).ToHashSet();
        foreach (var t in graph.Initializer.Where(t => !used.Contains(t.Name)).ToList())
            graph.Initializer.Remove(t);
    }

    /// <summary>
    /// Puts <paramref name="graph"/>'s nodes in topological order, as ONNX requires and every rewrite here assumes;
    /// stable, so a sorted graph is left as it is. ONNX Runtime's float16 converter appends the casts of the graph's
    /// inputs after the nodes that read them (ONNX Runtime sorts on load, so such graphs run). A node whose inputs
    /// nothing produces keeps its place at the end, for ONNX Runtime to name.
    /// </summary>
    public static void SortTopologically(GraphProto graph)
    {
        var ready = graph
            .Input.Select(i => i.Name)
            .Concat(graph.Initializer.Select(t => t.Name))
            .Append("")
            .ToHashSet();
        var order = new List<NodeProto>(graph.Node.Count);
        var waiting = new Dictionary<string, List<NodeProto>>();
        var missing = new Dictionary<NodeProto, int>();
        bool moved = false;
        foreach (var node in graph.Node)
        {
            var absent = node.Input.Where(i => !ready.Contains(i)).Distinct().ToList();
            if (absent.Count > 0)
            {
                missing[node] = absent.Count;
                foreach (string i in absent)
                    (waiting.TryGetValue(i, out var list) ? list : waiting[i] = []).Add(node);
                moved = true;
                continue;
            }
            var emitted = new Queue<NodeProto>([node]);
            while (emitted.TryDequeue(out var done))
            {
                order.Add(done);
                foreach (string o in done.Output)
                    if (ready.Add(o) && waiting.Remove(o, out var readers))
                        foreach (var reader in readers)
                            if (--missing[reader] == 0)
                            {
                                missing.Remove(reader);
                                emitted.Enqueue(reader);
                            }
            }
        }
        if (!moved)
            return;
        order.AddRange(graph.Node.Where(missing.ContainsKey));
        graph.Node.Clear();
        graph.Node.AddRange(order);
    }

    // What a node reads: its inputs, and for control flow (If, Loop, Scan) every name its subgraphs read, outer values
    // among them (subgraph-local names are unique in the model, so they match nothing outside).
    static IEnumerable<string> Reads(NodeProto node) =>
        node.Input.Concat(
            node.Attribute.SelectMany(a => a.G != null ? [a.G] : a.Graphs)
                .SelectMany(graph => graph.Node.SelectMany(Reads).Concat(graph.Output.Select(o => o.Name)))
        );

    /// <summary>
    /// Writes a model atomically (temporary name, then rename); a model over <see cref="ExternalData.InlineLimit"/>
    /// bytes of weights (or <paramref name="inlineLimit"/>) keeps its large tensors in <c>&lt;file&gt;.data</c> beside
    /// it.
    /// </summary>
    public static void Save(ModelProto model, string path, long inlineLimit = ExternalData.InlineLimit)
    {
        var (written, _) = ExternalData.Externalize(model, path, inlineLimit);
        AtomicFile.Write(path, temp =>
        {
            using var stream = File.Create(temp);
            written.WriteTo(stream);
        });
    }
}
