using Onnx;

namespace Sparsity.Export;

/// <summary>
/// Rewrites causal self-attention as torch.onnx's exporters write it (Hugging Face OPT, GPT-2, Llama and kin) into
/// one ONNX Runtime <c>com.microsoft.MultiHeadAttention</c> node (<c>unidirectional</c>): Softmax over
/// MatMul(Transpose(Reshape(Q)), Transpose(Reshape(K))) with constant scales on either side and an additive mask, an
/// optional NaN guard, MatMul with Transpose(Reshape(V)), transposed back and reshaped to [batch, seq, d_model]; or, as
/// Llama's are, queries and keys rotated in [batch, heads, seq, head_size] and keys and values repeated per group of
/// heads, which enter as four-dimensional (BNSH) keys and values, the queries merged back to [batch, seq, d_model]. The
/// mask is replaced by the operator's causal masking, which equals it on real tokens when padding is at the end of a
/// window (the caller checks the rewritten graph's logits against the original). Anything else is left unchanged and
/// reported with the reason.
/// </summary>
public static class AttentionFusion
{
    /// <summary>The rewritten model, how many attention blocks were fused, and why the others were not.</summary>
    public sealed record Result(ModelProto Model, int Fused, IReadOnlyList<string> Skipped);

    /// <summary>Fuses every recognised attention block of a copy of <paramref name="model"/>.</summary>
    public static Result Fuse(ModelProto model)
    {
        var copy = model.Clone();
        var graph = copy.Graph;
        var skipped = new List<string>();
        int fused = 0;
        foreach (var softmax in graph.Node.Where(n => n.OpType == "Softmax").ToList())
        {
            var index = new GraphIndex(graph); // the graph changes with every fusion
            if (Match(index, softmax) is { } reason)
                skipped.Add($"Softmax '{softmax.Name}': {reason}");
            else
                fused++;
        }
        if (fused > 0)
        {
            if (!copy.OpsetImport.Any(o => o.Domain == GraphWriter.ContribDomain))
                copy.OpsetImport.Add(new OperatorSetIdProto { Domain = GraphWriter.ContribDomain, Version = 1 });
            OnnxGraph.RemoveDeadNodes(graph);
            graph.ValueInfo.Clear(); // shapes of removed tensors
        }
        return new Result(copy, fused, skipped);
    }

    // Replaces one attention block by a MultiHeadAttention node, or says why it does not match.
    static string? Match(GraphIndex index, NodeProto softmax)
    {
        if (softmax.Attribute.FirstOrDefault(a => a.Name == "axis") is { } axis && axis.I != -1 && axis.I != 3)
            return "softmax not over the last axis";
        if (index.Producer(softmax.Input[0]) is not { OpType: "Add" } add)
            return "no additive mask before the softmax (not a causal decoder's attention)";
        int scoresSide = index.Producer(add.Input[0]) is { OpType: "MatMul" or "Mul" or "Div" } ? 0 : 1;
        double scale = 1;
        string scores = Unscale(index, add.Input[scoresSide], ref scale);
        if (index.Producer(scores) is not { OpType: "MatMul" } qk)
            return "the scores are not a MatMul of queries and keys";
        string queries = Unscale(index, qk.Input[0], ref scale);
        var q = Heads(index, queries, [0, 2, 1, 3]);
        string keys = Unscale(index, qk.Input[1], ref scale);
        var k = Heads(index, keys, [0, 2, 3, 1])
            ?? Heads(index, Unscale(index, FlattenedTranspose(index, keys) ?? "", ref scale), [0, 2, 1, 3]);
        // Llama-family: queries and keys rotated in [batch, heads, seq, head_size] (rotary embeddings), keys and values
        // repeated per group of heads; they enter as four-dimensional (BNSH) tensors, the queries merged back to
        // [batch, seq, d_model] first.
        string? queriesBnsh = null,
            keysBnsh = null;
        if (q == null && Rotated(index, queries) is { } rotatedQ)
            (q, queriesBnsh) = (rotatedQ, queries);
        if (k == null && q != null)
        {
            string? transposed = FlattenedTranspose(index, keys)
                ?? (
                    index.Producer(keys) is { OpType: "Transpose" } swap && Perm(swap, [0, 1, 3, 2])
                        ? swap.Input[0]
                        : null
                );
            if (transposed != null)
                (keysBnsh, k) = (Unscale(index, transposed, ref scale), (transposed, q.Value.Heads));
        }
        if (q == null || k == null)
            return "queries or keys are not Reshape → Transpose of [batch, seq, d_model] tensors, nor rotated ones";

        string probs = softmax.Output[0];
        var readers = index.Consumers(probs);
        // torch's guard for fully masked rows: Where(IsNaN(p), 0, p).
        if (
            readers.Count == 2
            && readers.FirstOrDefault(n => n.OpType == "IsNaN") is { } isNaN
            && readers.FirstOrDefault(n => n.OpType == "Where") is { } guard
            && guard.Input[0] == isNaN.Output[0]
            && guard.Input[2] == probs
        )
        {
            probs = guard.Output[0];
            readers = index.Consumers(probs);
        }
        if (readers is not [{ OpType: "MatMul" } av] || av.Input[0] != probs)
            return "the attention weights are read by something other than one MatMul with the values";
        var v = keysBnsh == null ? Heads(index, av.Input[1], [0, 2, 1, 3]) : (av.Input[1], q.Value.Heads);
        if (v == null)
            return "the values are not Reshape → Transpose of a [batch, seq, d_model] tensor";
        // Merging the heads back: Transpose then Reshape (a Shape of the transposed tensor may feed the new shape).
        if (
            index.Consumers(av.Output[0]) is not [{ OpType: "Transpose" } back]
            || !Perm(back, [0, 2, 1, 3])
            || index.Consumers(back.Output[0]).Where(n => n.OpType != "Shape").ToList()
                is not [{ OpType: "Reshape" } merge]
        )
            return "the attention output is not transposed back and reshaped to [batch, seq, d_model]";
        if (q.Value.Heads != k.Value.Heads || q.Value.Heads != v.Value.Heads)
            return "queries, keys and values disagree on the number of heads";
        if ((queriesBnsh == null) != (keysBnsh == null))
            return "queries and keys are not both rotated, or both not";

        // The node goes where the final Reshape is (every input is computed before it). Its [batch, seq, d_model]
        // output replaces the Reshape's when that reshapes to three axes; otherwise (GPT-2's dynamo export flattens to
        // [batch·seq, d_model]) the Reshape stays and reads it.
        var graph = index.Graph;
        bool toModelShape =
            (
                index.Int64s(merge.Input[1])?.Length
                ?? (index.Producer(merge.Input[1]) is { OpType: "Concat" } c ? c.Input.Count : 0)
            ) == 3;
        string output = toModelShape ? merge.Output[0] : merge.Output[0] + "/fused_attention";
        string query = q.Value.Input;
        if (queriesBnsh != null)
        {
            // [batch, heads, seq, head_size] → [batch, seq, d_model]; keys and values stay four-dimensional.
            var g = new GraphWriter(graph);
            int at = graph.Node.IndexOf(merge);
            var transpose = OnnxGraph.Node(
                "Transpose",
                merge.Name + "/fused_query_bsnh",
                [queriesBnsh],
                [g.Fresh(merge.Name + "/fused_query_bsnh")],
                OnnxGraph.Ints("perm", 0, 2, 1, 3)
            );
            string shape = g.Longs(merge.Name + "/fused_query_shape", [3], 0, 0, -1);
            var reshape = OnnxGraph.Node(
                "Reshape",
                merge.Name + "/fused_query",
                [transpose.Output[0], shape],
                [g.Fresh(merge.Name + "/fused_query")]
            );
            graph.Node.Insert(at, reshape);
            graph.Node.Insert(at, transpose);
            query = reshape.Output[0];
        }
        var mha = OnnxGraph.Node(
            "MultiHeadAttention",
            merge.Name + "/fused_attention",
            [query, keysBnsh ?? k.Value.Input, keysBnsh == null ? v.Value.Input : av.Input[1]],
            [output],
            OnnxGraph.Int("num_heads", q.Value.Heads),
            OnnxGraph.Int("unidirectional", 1),
            OnnxGraph.Float("scale", (float)scale)
        );
        mha.Domain = GraphWriter.ContribDomain;
        if (toModelShape)
            graph.Node[graph.Node.IndexOf(merge)] = mha;
        else
        {
            graph.Node.Insert(graph.Node.IndexOf(merge), mha);
            merge.Input[0] = output;
        }
        return null;
    }

    // Rotary embeddings, as transformers writes them: x·cos + rotate_half(x)·sin, x = Transpose(Reshape(projection));
    // x's heads.
    static (string Input, long Heads)? Rotated(GraphIndex index, string tensor)
    {
        if (index.Producer(tensor) is not { OpType: "Add" } add)
            return null;
        foreach (string side in add.Input)
            if (index.Producer(side) is { OpType: "Mul" } mul)
                foreach (string factor in mul.Input)
                    if (
                        Heads(index, factor, [0, 2, 1, 3]) is { } heads
                        && index.Consumers(factor).Any(n => n.OpType == "Slice")
                    )
                        return heads;
        return null;
    }

    // Follows a tensor back through Mul/Div by a constant scalar, multiplying the scale.
    static string Unscale(GraphIndex index, string tensor, ref double scale)
    {
        for (int i = 0; i < 4 && index.Producer(tensor) is { OpType: "Mul" or "Div" } node; i++)
        {
            int constant =
                Scalar(index, node.Input[1]) != null ? 1
                : node.OpType == "Mul" && Scalar(index, node.Input[0]) != null ? 0
                : -1;
            if (constant < 0)
                break;
            double c = Scalar(index, node.Input[constant])!.Value;
            scale = node.OpType == "Mul" ? scale * c : scale / c;
            tensor = node.Input[1 - constant];
        }
        return tensor;
    }

    static double? Scalar(GraphIndex index, string tensor) =>
        index.Constant(tensor) is { } t
        && t.Dims.Aggregate(1L, (a, d) => a * d) == 1
        && t.DataType == (int)TensorProto.Types.DataType.Float
            ? Surgery.ReadFloats(t)[0]
            : null;

    // The dynamo exporter transposes the keys' last two axes through three dimensions: Reshape → Transpose(0, 2, 1) →
    // Reshape back; returns the four-dimensional tensor before it.
    static string? FlattenedTranspose(GraphIndex index, string tensor) =>
        index.Producer(tensor) is { OpType: "Reshape" } back
        && index.Producer(back.Input[0]) is { OpType: "Transpose" } swap
        && Perm(swap, [0, 2, 1])
        && index.Producer(swap.Input[0]) is { OpType: "Reshape" } flat
            ? flat.Input[0]
            : null;

    static bool Perm(NodeProto transpose, long[] perm) =>
        transpose.Attribute.FirstOrDefault(a => a.Name == "perm") is { } p && p.Ints.SequenceEqual(perm);

    // Transpose(Reshape(x, [batch, seq, heads, head_size]), perm): x and the number of heads.
    static (string Input, long Heads)? Heads(GraphIndex index, string tensor, long[] perm)
    {
        if (index.Producer(tensor) is not { OpType: "Transpose" } transpose || !Perm(transpose, perm))
            return null;
        if (index.Producer(transpose.Input[0]) is not { OpType: "Reshape" } reshape)
            return null;
        long[]? dims =
            index.Int64s(reshape.Input[1]) is { Length: 4 } shape ? shape
            : index.Producer(reshape.Input[1]) is { OpType: "Concat" } concat
            && concat.Input.Count == 4
            && index.Int64s(concat.Input[2]) is [var h]
            && index.Int64s(concat.Input[3]) is [var hs]
                ? [0, 0, h, hs]
            : null;
        if (dims == null)
            return null;
        // [batch, seq, -1, head_size] (GPT-2): heads = d_model / head_size, d_model from the projection's weight.
        long heads =
            dims[2] > 0 ? dims[2]
            : dims[3] > 0 && Width(index, reshape.Input[0]) is long width && width % dims[3] == 0 ? width / dims[3]
            : -1;
        return heads > 0 ? (reshape.Input[0], heads) : null;
    }

    // The width of a projection's output: through reshapes, a bias Add and an equal Split, to a MatMul or Gemm with a
    // weight initializer.
    static long? Width(GraphIndex index, string tensor)
    {
        int parts = 1;
        for (int i = 0; i < 6 && index.Producer(tensor) is { } node; i++)
        {
            switch (node.OpType)
            {
                case "Split":
                    parts = node.Output.Count;
                    tensor = node.Input[0];
                    break;
                case var op when GraphIndex.IsReshaping(node):
                    tensor = node.Input[0];
                    break;
                case "Add":
                    tensor = index.Producer(node.Input[0]) is { OpType: "MatMul" or "Gemm" }
                        ? node.Input[0]
                        : node.Input[1];
                    break;
                case "MatMul" when index.Initializers.TryGetValue(node.Input[1], out var w) && w.Dims.Count == 2:
                    return w.Dims[1] / parts;
                case "Gemm" when index.Initializers.TryGetValue(node.Input[1], out var w) && w.Dims.Count == 2:
                    return (node.Attribute.Any(a => a.Name == "transB" && a.I == 1) ? w.Dims[0] : w.Dims[1]) / parts;
                default:
                    return null;
            }
        }
        return null;
    }
}
