using Google.Protobuf;
using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Export;

/// <summary>What <see cref="GraphInputs.Bind"/> did to a graph's inputs, for messages and model cards.</summary>
/// <param name="HasAttentionMask">The bound graph takes <c>attention_mask</c> [batch, seq] int64 (1 = real
/// token).</param>
/// <param name="Computed">Inputs now computed inside the graph, each with how (e.g. "position_ids = 0..T−1").</param>
public sealed record BoundInputs(bool HasAttentionMask, IReadOnlyList<string> Computed);

/// <summary>
/// Turns the inputs exporters give a language model into the two this tool feeds: <c>input_ids</c> int64 [batch, seq]
/// and, when the model reads one, <c>attention_mask</c> int64 [batch, seq] (windows are right-padded). Inputs that
/// follow from these are computed in the graph: <c>position_ids</c> as positions 0..T−1, <c>token_type_ids</c> as
/// zeros, <c>past_key_values.*</c> / <c>past*</c> as empty caches (past length 0). Any other input is refused by name.
/// </summary>
public static class GraphInputs
{
    /// <summary>Name of the token input of every bound graph.</summary>
    public const string TokenInput = "input_ids";

    /// <summary>Name of the padding-mask input of bound graphs.</summary>
    public const string MaskInput = "attention_mask";

    /// <summary>Inputs a runtime must feed: graph inputs that are not initializers (IR &lt; 4 lists initializers as
    /// inputs).</summary>
    public static IReadOnlyList<ValueInfoProto> Required(ModelProto model)
    {
        var initializers = model.Graph.Initializer.Select(i => i.Name).ToHashSet();
        return model.Graph.Input.Where(i => !initializers.Contains(i.Name)).ToList();
    }

    /// <summary>A copy of <paramref name="model"/> whose inputs are input_ids and, if the model reads one,
    /// attention_mask.</summary>
    public static (ModelProto Model, BoundInputs Inputs) Bind(ModelProto model)
    {
        if (EncoderDecoder.Is(model))
        {
            var pairs = new List<string>();
            return (EncoderDecoder.BindPairs(model, pairs), new BoundInputs(true, pairs));
        }
        var result = model.Clone();
        var graph = result.Graph;
        var index = new GraphIndex(graph);
        var token = TokenInputOf(result, index);
        var g = new GraphWriter(graph);
        int before = graph.Node.Count;
        var computed = new List<string>();
        bool hasMask = false;

        string ids = TokenInput;
        if (token.Name != TokenInput || ElemType(token) != DataType.Int64)
        {
            // The exporter's token input is renamed or not int64: compute it from ours.
            if (token.Name == TokenInput)
                GraphIndex.RenameReads(graph, TokenInput, ids = g.Fresh(TokenInput + ".original"));
            else
                ids = token.Name;
            graph.Input.Remove(token);
            g.Named("Cast", ids, [TokenInput], OnnxGraph.Int("to", (long)ElemType(token)));
            graph.Input.Insert(0, OnnxGraph.Value(TokenInput, DataType.Int64, "batch", "seq"));
            computed.Add($"{token.Name} = input_ids");
        }
        string shape = g.Op("Shape", "bind/ids_shape", [TokenInput]);

        foreach (var input in Required(model).Where(i => i.Name != token.Name))
        {
            var type = ElemType(input);
            var graphInput = graph.Input.First(i => i.Name == input.Name);
            if (input.Name == MaskInput)
            {
                hasMask = true;
                if (type == DataType.Int64)
                    continue;
                string original = g.Fresh(MaskInput + ".original");
                GraphIndex.RenameReads(graph, MaskInput, original);
                graph.Input.Remove(graphInput);
                graph.Input.Add(OnnxGraph.Value(MaskInput, DataType.Int64, "batch", "seq"));
                g.Named("Cast", original, [MaskInput], OnnxGraph.Int("to", (long)type));
                continue;
            }
            graph.Input.Remove(graphInput);
            if (input.Name == "position_ids")
            {
                string seq = g.Op("Gather", "bind/seq", [shape, g.Longs("bind/one", [], 1)], OnnxGraph.Int("axis", 0));
                string range = g.Op(
                    "Range",
                    "bind/positions",
                    [g.Longs("bind/zero", [], 0), seq, g.Longs("bind/step", [], 1)]
                );
                string row = g.Op("Unsqueeze", "bind/positions_row", [range, g.Longs("bind/axis0", [1], 0)]);
                Produce(g, input.Name, g.Op("Expand", "bind/positions_bt", [row, shape]), type);
                computed.Add("position_ids = 0..T−1");
            }
            else if (input.Name == "token_type_ids")
            {
                Produce(
                    g,
                    input.Name,
                    g.Op(
                        "ConstantOfShape",
                        "bind/zeros",
                        [shape],
                        OnnxGraph.TensorAttribute("value", Zero(DataType.Int64))
                    ),
                    type
                );
                computed.Add("token_type_ids = 0");
            }
            else if (input.Name.StartsWith("past", StringComparison.Ordinal))
            {
                g.Named(
                    "ConstantOfShape",
                    input.Name,
                    [EmptyCacheShape(g, input, shape)],
                    OnnxGraph.TensorAttribute("value", Zero(type))
                );
                computed.Add($"{input.Name} = empty (past length 0)");
            }
            else
                throw new UserInputException(
                    $"The model needs input '{input.Name}' ({Describe(input)}), which relu-sparsity cannot feed: it feeds input_ids, "
                        + "attention_mask, position_ids, token_type_ids and empty past_key_values.*. Export the model without it."
                );
        }

        // The new nodes read only graph inputs and constants: move them to the front to keep the graph sorted.
        var added = graph.Node.Skip(before).ToList();
        for (int i = 0; i < added.Count; i++)
            graph.Node.RemoveAt(graph.Node.Count - 1);
        for (int i = 0; i < added.Count; i++)
            graph.Node.Insert(i, added[i]);
        return (result, new BoundInputs(hasMask, computed));
    }

    /// <summary>
    /// The vocabulary size: the last dimension of an output named logits, else the rows of the embedding the token
    /// input gathers from, else the last dimension of the only float output of rank 3; null when none is found. A
    /// decoder exported without its vocabulary projection (Optimum's feature extraction: last_hidden_state) has an
    /// output of width d_model, which is not its vocabulary.
    /// </summary>
    public static long? VocabularySize(ModelProto model)
    {
        static long? Width(ValueInfoProto? output) =>
            output?.Type.TensorType.Shape?.Dim is { Count: > 0 } dims && dims[^1].DimValue > 0
                ? dims[^1].DimValue
                : null;
        if (Width(model.Graph.Output.FirstOrDefault(o => o.Name == "logits")) is long named)
            return named;
        var index = new GraphIndex(model.Graph);
        var token = Required(model).FirstOrDefault(i => i.Name == TokenInput) ?? TryTokenInput(model, index);
        return (token == null ? null : EmbeddingRows(index, token.Name)) ?? Width(LogitsOutput(model));
    }

    /// <summary>
    /// Longest sequence the model takes: rows of this project's learned position table or rotary tables, or of the
    /// table a graph from elsewhere gathers its <c>position_ids</c> input from (a cache graph exported by torch.onnx);
    /// null when the graph does not say (rotary positions computed, or positions made from the mask). Past it, the
    /// CPU provider fails on the gather and the CUDA provider reads out of bounds.
    /// </summary>
    public static long? MaxPositions(ModelProto model) =>
        model.Graph.Initializer.FirstOrDefault(t => t.Name is "wpe.weight" or "rope.cos")?.Dims[0]
        ?? (
            model.Graph.Input.Any(i => i.Name == "position_ids")
                ? EmbeddingRows(new GraphIndex(model.Graph), "position_ids")
                : null
        );

    /// <summary>The output holding next-token logits: "logits", else the only float output of rank 3; null when there
    /// is none.</summary>
    public static ValueInfoProto? LogitsOutput(ModelProto model)
    {
        var named = model.Graph.Output.FirstOrDefault(o => o.Name == "logits");
        if (named != null)
            return named;
        var candidates = model
            .Graph.Output.Where(o =>
                o.Type?.TensorType?.ElemType == (int)DataType.Float && o.Type.TensorType.Shape?.Dim.Count == 3
            )
            .ToList();
        return candidates.Count == 1 ? candidates[0] : null;
    }

    /// <summary>
    /// A copy of <paramref name="model"/> whose only output is the tensor its vocabulary projection reads (the
    /// decoder's last hidden state): from the logits output up through casts, bias adds and identities to the MatMul or
    /// Gemm with a weight (an initializer, or computed from initializers alone); null when the logits are not made so.
    /// Its type is the weight's, the type the projection computes in.
    /// </summary>
    public static ModelProto? WithDecoderOutput(ModelProto model)
    {
        if (LogitsOutput(model) is not { } logits)
            return null;
        var index = new GraphIndex(model.Graph);
        var initializers = model.Graph.Initializer.ToDictionary(t => t.Name);
        var weights = initializers.Keys.ToHashSet(); // and what is computed from them alone (a transposed tied embedding)
        foreach (var node in model.Graph.Node)
            if (node.Input.Where(i => i.Length > 0).All(weights.Contains))
                foreach (var o in node.Output)
                    weights.Add(o);
        string tensor = logits.Name;
        for (int step = 0; step < 8 && index.Producer(tensor) is { } node; step++)
        {
            var data = node.Input.Where(i => i.Length > 0 && !weights.Contains(i)).ToList();
            if (node.OpType is "MatMul" or "Gemm")
            {
                if (data.Count != 1)
                    return null;
                string weight = node.Input.First(i => weights.Contains(i));
                for (
                    int up = 0;
                    up < 8 && !initializers.ContainsKey(weight) && index.Producer(weight) is { Input.Count: > 0 } p;
                    up++
                )
                    weight = p.Input[0];
                if (!initializers.TryGetValue(weight, out var w))
                    return null;
                var result = model.Clone();
                result.Graph.Output.Clear();
                result.Graph.Output.Add(OnnxGraph.Value(data[0], (DataType)w.DataType, "batch", "seq", "d_model"));
                OnnxGraph.RemoveDeadNodes(result.Graph);
                return result;
            }
            if (node.OpType is not ("Cast" or "Add" or "Identity") || data.Count != 1)
                return null;
            tensor = data[0];
        }
        return null;
    }

    static ValueInfoProto TokenInputOf(ModelProto model, GraphIndex index) =>
        Required(model).FirstOrDefault(i => i.Name == TokenInput && IsInteger(i))
        ?? TryTokenInput(model, index)
        ?? throw new UserInputException(
            $"Cannot tell which input holds the token ids: no integer input named input_ids, and not exactly one integer input reaches a token embedding "
                + $"(inputs: {string.Join(", ", Required(model).Select(i => $"{i.Name} ({Describe(i)})"))})."
        );

    // The one integer input that reaches an embedding Gather (through Reshape/Cast/…).
    static ValueInfoProto? TryTokenInput(ModelProto model, GraphIndex index)
    {
        var found = Required(model).Where(i => IsInteger(i) && EmbeddingRows(index, i.Name) != null).ToList();
        return found.Count == 1 ? found[0] : null;
    }

    static long? EmbeddingRows(GraphIndex index, string input)
    {
        var frontier = new Queue<(string Tensor, int Depth)>([(input, 0)]);
        while (frontier.Count > 0)
        {
            var (t, depth) = frontier.Dequeue();
            foreach (var node in index.Consumers(t))
            {
                if (
                    node.OpType == "Gather"
                    && node.Input.Count > 1
                    && node.Input[1] == t
                    && index.Constant(node.Input[0]) is { Dims.Count: 2 } table
                )
                    return table.Dims[0];
                if (depth < 6 && GraphIndex.IsReshaping(node) && node.Input[0] == t)
                    frontier.Enqueue((node.Output[0], depth + 1));
            }
        }
        return null;
    }

    static string EmptyCacheShape(GraphWriter g, ValueInfoProto input, string idsShape)
    {
        var dims = input.Type?.TensorType?.Shape?.Dim
            ?? throw new UserInputException(
                $"The cache input '{input.Name}' has no shape; cannot build an empty cache for it."
            );
        var rest = new List<long>();
        int symbolic = 0;
        foreach (var d in dims.Skip(1))
        {
            if (d.HasDimValue && d.DimValue > 0)
                rest.Add(d.DimValue);
            else
            {
                rest.Add(0);
                symbolic++;
            }
        }
        if (dims.Count < 2 || symbolic != 1)
            throw new UserInputException(
                $"The cache input '{input.Name}' has shape {Describe(input)}: expected [batch, …, past, …] with exactly one dynamic dimension after batch (the past length)."
            );
        string batch = g.Op("Slice", "bind/batch", [idsShape, g.Longs("bind/s0", [1], 0), g.Longs("bind/s1", [1], 1)]);
        return g.Op(
            "Concat",
            "bind/" + input.Name + ".shape",
            [batch, g.Longs("bind/" + input.Name + ".dims", [rest.Count], [.. rest])],
            OnnxGraph.Int("axis", 0)
        );
    }

    static void Produce(GraphWriter g, string name, string int64Value, DataType type)
    {
        if (type == DataType.Int64)
            g.Named("Identity", name, [int64Value]);
        else
            g.Named("Cast", name, [int64Value], OnnxGraph.Int("to", (long)type));
    }

    static TensorProto Zero(DataType type)
    {
        int size = type switch
        {
            DataType.Float or DataType.Int32 => 4,
            DataType.Float16 or DataType.Bfloat16 => 2,
            DataType.Double or DataType.Int64 => 8,
            DataType.Bool or DataType.Int8 or DataType.Uint8 => 1,
            _ => throw new UserInputException($"Inputs of element type {type} cannot be filled in."),
        };
        var t = new TensorProto
        {
            Name = "value",
            DataType = (int)type,
            RawData = ByteString.CopyFrom(new byte[size]),
        };
        t.Dims.Add(1);
        return t;
    }

    static DataType ElemType(ValueInfoProto v) => (DataType)(v.Type?.TensorType?.ElemType ?? 0);

    static bool IsInteger(ValueInfoProto v) => ElemType(v) is DataType.Int64 or DataType.Int32;

    static string Describe(ValueInfoProto v) =>
        $"{ElemType(v).ToString().ToLowerInvariant()} [{string.Join(", ", v.Type?.TensorType?.Shape?.Dim.Select(d => d.HasDimValue ? d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture) : d.DimParam) ?? [])}]";
}
