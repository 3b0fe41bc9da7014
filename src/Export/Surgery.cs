using System.Text.Json;
using Google.Protobuf;
using Onnx;
using Sparsity.Analysis;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Export;

/// <summary>The sidecar written beside an instrumented or exported model (model.mlp.json).</summary>
/// <param name="Model">File name of the model it describes.</param>
/// <param name="Producer">Tool that wrote it.</param>
/// <param name="Layers">MLP sites in layer order.</param>
public sealed record MlpSidecar(string Model, string Producer, IReadOnlyList<MlpSite> Layers)
{
    /// <summary>Sidecar path of a model path: model.onnx → model.mlp.json.</summary>
    public static string PathFor(string modelPath) => Path.ChangeExtension(modelPath, ".mlp.json");

    /// <summary>Writes the sidecar atomically beside <paramref name="modelPath"/>.</summary>
    public static void Write(string modelPath, IReadOnlyList<MlpSite> sites) =>
        AtomicFile.WriteAllText(
            PathFor(modelPath),
            JsonSerializer.Serialize(
                new MlpSidecar(Path.GetFileName(modelPath), Tool.Producer, sites),
                ProjectJson.Options
            )
        );
}

/// <summary>Graph surgery on MLP sites: expose activations, slice pruned units, insert Top-k.</summary>
public static class Surgery
{
    /// <summary>Adds each site's measured tensor as a float graph output in layer order, shaped [batch, seq, d_ff] or
    /// [tokens, d_ff] by its layout.</summary>
    public static ModelProto Instrument(ModelProto model, IReadOnlyList<MlpSite> sites)
    {
        var result = model.Clone();
        var outputs = result.Graph.Output.Select(o => o.Name).ToHashSet();
        var initializers = result.Graph.Initializer.ToDictionary(t => t.Name);
        var g = new GraphWriter(result.Graph);
        foreach (var site in sites.Where(s => !outputs.Contains(s.Output)))
        {
            // A half-precision graph's activations are exposed as float32 through a Cast: the ReLU keeps its own type
            // (declaring its output float32 made ONNX Runtime refuse fp16-converted graphs), the readers move with it.
            if (
                initializers.TryGetValue(site.Down.Weight, out var w)
                && w.DataType is (int)DataType.Float16 or (int)DataType.Bfloat16
            )
                g.CastToFloatUnderOwnName(site.Output, site.Output + ".typed");
            result.Graph.Output.Add(
                site.Layout == "tokens_dff"
                    ? OnnxGraph.Value(site.Output, DataType.Float, "tokens", site.DFf)
                    : OnnxGraph.Value(site.Output, DataType.Float, "batch", "seq", site.DFf)
            );
        }
        return result;
    }

    /// <summary>What pruning removed.</summary>
    public sealed record PruneReport(
        long ParametersBefore,
        long ParametersAfter,
        long BytesBefore,
        long BytesAfter,
        int[] UnitsBefore,
        int[] UnitsAfter
    );

    /// <summary>
    /// Removes the units the mask drops: columns of the up-projection weight (rows for Gemm transB=1)
    /// and its bias, rows of the down-projection weight (columns for transB=1), per-unit masks on the
    /// path, and clamps Top-k's k to the units left. Returns the pruned model and sites.
    /// </summary>
    public static (ModelProto Model, IReadOnlyList<MlpSite> Sites, PruneReport Report) Prune(
        ModelProto model,
        IReadOnlyList<MlpSite> sites,
        UnitMask mask
    )
    {
        mask.Validate(sites.Select(s => s.DFf).ToList());
        if (mask.Layers.All(l => l.Kept.Length == l.DFf))
            throw new UserInputException("The mask keeps every unit: pruning would write an unchanged model.");

        var result = model.Clone();
        var g = new GraphWriter(result.Graph);
        var index = new GraphIndex(result.Graph);
        var initializers = result.Graph.Initializer.ToDictionary(i => i.Name);
        var uses = result.Graph.Node.SelectMany(n => n.Input).GroupBy(i => i).ToDictionary(g => g.Key, g => g.Count());
        var pruned = sites.ToList();
        foreach (var layer in mask.Layers.Where(l => l.Kept.Length < l.DFf))
        {
            var site = sites[layer.Layer];
            int[] kept = layer.Kept.Order().ToArray();
            // The initializer `tensor` names (directly or through Identity) as `consumer`'s own, to slice: in place
            // when only this node reads it, else a copy for this layer (torch.onnx shares identical initializers, e.g.
            // zero biases, across layers, and each layer keeps other units).
            TensorProto Own(string tensor, NodeProto consumer)
            {
                string name = index.InitializerThroughIdentity(tensor)
                    ?? throw new UserInputException(
                        $"{tensor} of layer {site.Layer} is computed in the graph, not stored; it cannot be pruned."
                    );
                if (name == tensor && uses.GetValueOrDefault(name) <= 1)
                    return initializers[name];
                var copy = initializers[name].Clone();
                copy.Name = g.Fresh($"{name}.layer{site.Layer}");
                result.Graph.Initializer.Add(copy);
                initializers[copy.Name] = copy;
                for (int i = 0; i < consumer.Input.Count; i++)
                    if (consumer.Input[i] == tensor)
                        consumer.Input[i] = copy.Name;
                return copy;
            }
            NodeProto Node(string name) => result.Graph.Node.First(n => n.Name == name);
            // Who reads a projection's weight (the projection, or the Transpose before it) and its bias (Gemm, or its
            // Add).
            NodeProto WeightReader(Projection p) =>
                Node(p.Node).Input[1] == p.Weight ? Node(p.Node) : index.Producer(Node(p.Node).Input[1])!;
            NodeProto BiasReader(Projection p) =>
                p.Op == "Gemm"
                    ? Node(p.Node)
                    : index
                        .Consumers(Node(p.Node).Output[0])
                        .First(n => n.OpType == "Add" && n.Input.Contains(p.Bias!));

            foreach (var up in new[] { site.Up, site.Gate }.OfType<Projection>())
            {
                SliceAxis(Own(up.Weight, WeightReader(up)), up.TransB == 1 ? 0 : 1, kept);
                if (up.Bias != null)
                    SliceAxis(Own(up.Bias, BiasReader(up)), 0, kept);
            }
            SliceAxis(Own(site.Down.Weight, WeightReader(site.Down)), site.Down.TransB == 1 ? 1 : 0, kept);
            foreach (var node in MlpSites.Region(result, site))
            {
                foreach (string input in node.Input.Where(i => index.InitializerThroughIdentity(i) != null).ToList())
                {
                    var t = initializers[index.InitializerThroughIdentity(input)!];
                    if (node.OpType == "Mul" && t.Dims.Count == 1 && t.Dims[0] == site.DFf)
                        SliceAxis(Own(input, node), 0, kept);
                    if (node.OpType == "TopK" && input == node.Input[1])
                        ClampK(t, kept.Length);
                }
                if (node.OpType == "Reshape")
                    NarrowReshape(node, index, g, site.DFf, kept.Length);
            }
            pruned[layer.Layer] = site with { DFf = kept.Length };
            foreach (
                var output in result.Graph.Output.Where(o =>
                    o.Name == site.Output && o.Type?.TensorType?.Shape?.Dim.Count > 0
                )
            )
                output.Type.TensorType.Shape.Dim[^1].DimValue = kept.Length;
        }
        // Exporters annotate intermediate shapes (torch.onnx dynamo writes value_info); the widths changed, so drop
        // them.
        result.Graph.ValueInfo.Clear();
        OnnxGraph.RemoveDeadNodes(result.Graph);
        var report = new PruneReport(
            Parameters(model),
            Parameters(result),
            model.CalculateSize(),
            result.CalculateSize(),
            sites.Select(s => s.DFf).ToArray(),
            pruned.Select(s => s.DFf).ToArray()
        );
        return (result, pruned, report);
    }

    /// <summary>
    /// Inserts Top-k thresholding at each site's measured tensor (before the down-projection), keeping
    /// the tensor's name so exposed outputs report the thresholded activations.
    /// </summary>
    public static ModelProto InsertTopK(ModelProto model, IReadOnlyList<MlpSite> sites, IReadOnlyList<int> k)
    {
        if (k.Count != 1 && k.Count != sites.Count)
            throw new UserInputException($"Give one k or one per layer ({sites.Count}); got {k.Count}.");
        var result = model.Clone();
        var g = new GraphWriter(result.Graph);
        foreach (var site in sites)
        {
            int layerK = k.Count == 1 ? k[0] : k[site.Layer];
            if (layerK < 1 || layerK > site.DFf)
                throw new UserInputException($"k = {layerK} is outside 1..{site.DFf} (d_ff of layer {site.Layer}).");
            var producer = result.Graph.Node.First(n => n.Output.Contains(site.Output));
            string raw = g.Fresh(site.Output + ".before_topk");
            producer.Output[producer.Output.IndexOf(site.Output)] = raw;
            int before = result.Graph.Node.Count;
            var type = (DataType)result.Graph.Initializer.First(t => t.Name == site.Down.Weight).DataType; // the activations' type (fp16 graphs)
            string thresholded = g.TopKMask(raw, layerK, $"h.{site.Layer}.topk", type);
            g.Named("Identity", site.Output, [thresholded]);
            // Keep the node list topologically sorted: the new nodes go right after the producer.
            var added = result.Graph.Node.Skip(before).ToList();
            for (int i = 0; i < added.Count; i++)
                result.Graph.Node.RemoveAt(result.Graph.Node.Count - 1);
            int at = result.Graph.Node.IndexOf(producer) + 1;
            for (int i = 0; i < added.Count; i++)
                result.Graph.Node.Insert(at + i, added[i]);
        }
        return result;
    }

    // A reshape inside the MLP whose target ends in d_ff (a constant, or a Concat ending in one) now ends in the units
    // kept. Exporters share one shape Concat among layers, so the reshape gets its own copy before it is changed.
    static void NarrowReshape(NodeProto reshape, GraphIndex index, GraphWriter g, int dFf, int kept)
    {
        string shape = reshape.Input[1];
        if (index.Int64s(shape) is { Length: > 0 } dims && dims[^1] == dFf)
            reshape.Input[1] = g.Longs(shape + ".pruned", [dims.Length], [.. dims[..^1], kept]);
        else if (
            index.Producer(shape) is { OpType: "Concat" } concat
            && index.Int64s(concat.Input[^1]) is [var last]
            && last == dFf
        )
        {
            var copy = concat.Clone();
            copy.Name = g.Fresh(concat.Name + ".pruned");
            copy.Output[0] = g.Fresh(shape + ".pruned");
            copy.Input[copy.Input.Count - 1] = g.Longs(concat.Input[^1] + ".pruned", [1], kept);
            g.Graph.Node.Insert(g.Graph.Node.IndexOf(concat) + 1, copy);
            reshape.Input[1] = copy.Output[0];
        }
    }

    /// <summary>
    /// Adds every site's unit counts (<see cref="StatsReduction"/>) to a graph bound by <see cref="GraphInputs.Bind"/>
    /// and makes them its only outputs, so ONNX Runtime computes nothing the counts do not need and only compact
    /// tensors leave it. An attention_mask input is added when the model has none (it then serves only the counts).
    /// <paramref name="topExamples"/> K &gt; 0 adds each unit's top windows of the batch and its activation histogram
    /// (fixed shapes on every device;
    /// <paramref name="histogramOnHost"/>: the histogram's sample instead, for the host to bin).
    /// </summary>
    public static ModelProto InstrumentStats(
        ModelProto bound,
        IReadOnlyList<MlpSite> sites,
        float threshold,
        int topExamples = 0,
        bool histogramOnHost = false,
        bool halfCounts = false,
        int? windowsPerBatch = null
    )
    {
        var result = bound.Clone();
        var g = new GraphWriter(result.Graph);
        if (!result.Graph.Input.Any(i => i.Name == GraphInputs.MaskInput))
            result.Graph.Input.Add(OnnxGraph.Value(GraphInputs.MaskInput, DataType.Int64, "batch", "seq"));
        // An encoder-decoder's layers count the positions of their own side of the pair: source or target.
        bool pairs = EncoderDecoder.IsBoundPairs(result);
        string real = StatsReduction.RealTokens(g, pairs ? EncoderDecoder.SourceMask : GraphInputs.MaskInput);
        string batchSeq = g.Op("Shape", "stats/batch_seq", [pairs ? EncoderDecoder.SourceIds : GraphInputs.TokenInput]);
        var (targetReal, targetBatchSeq) =
            pairs && sites.Any(s => s.Stack == ModelStack.Decoder)
                ? (
                    StatsReduction.RealTokens(g, EncoderDecoder.TargetMask),
                    g.Op("Shape", "stats/target_batch_seq", [EncoderDecoder.TargetInputIds])
                )
                : (real, batchSeq);
        var initializers = result.Graph.Initializer.ToDictionary(t => t.Name);
        var outputs = sites
            .SelectMany(s =>
                StatsReduction.Add(
                    g,
                    s.Output,
                    s.Stack == ModelStack.Decoder ? targetReal : real,
                    s.Stack == ModelStack.Decoder ? targetBatchSeq : batchSeq,
                    threshold,
                    s.Layer,
                    s.DFf,
                    (DataType)initializers[s.Down.Weight].DataType,
                    topExamples,
                    result.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 18,
                    histogramOnHost,
                    halfCounts,
                    windowsPerBatch
                )
            )
            .ToList();
        result.Graph.Output.Clear();
        result.Graph.Output.AddRange(outputs);
        OnnxGraph.RemoveDeadNodes(result.Graph);
        StatsReduction.SetThreshold(result, threshold);
        return result;
    }

    /// <summary>Parameters held in initializers.</summary>
    public static long Parameters(ModelProto model) =>
        model.Graph.Initializer.Sum(t => t.Dims.Aggregate(1L, (a, d) => a * d));

    // Keeps the given rows (axis 0) or columns (last axis) of a float32, fp16 or bf16 initializer, byte for byte.
    static void SliceAxis(TensorProto t, int axis, int[] kept)
    {
        int size = t.DataType switch
        {
            (int)DataType.Float => 4,
            (int)DataType.Float16 or (int)DataType.Bfloat16 => 2,
            _ => throw new UserInputException(
                $"Initializer {t.Name} is {(DataType)t.DataType}; only float32, float16 and bfloat16 weights can be pruned."
            ),
        };
        byte[] values =
            t.FloatData.Count > 0
                ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.FloatData.ToArray().AsSpan()).ToArray()
            : t.Int32Data.Count > 0 ? t.Int32Data.SelectMany(v => BitConverter.GetBytes((ushort)v)).ToArray() // 16-bit types outside raw_data
            : t.RawData.ToByteArray();
        long[] dims = t.Dims.ToArray();
        long count = values.Length / size,
            cols = dims.Length == 1 ? 1 : dims[^1],
            rows = axis == 0 ? dims[0] : count / cols;
        byte[] sliced;
        if (axis == 0)
        {
            sliced = new byte[kept.Length * cols * size];
            for (int r = 0; r < kept.Length; r++)
                Array.Copy(values, kept[r] * cols * size, sliced, r * cols * size, cols * size);
            dims[0] = kept.Length;
        }
        else
        {
            sliced = new byte[rows * kept.Length * size];
            for (long r = 0; r < rows; r++)
            for (int c = 0; c < kept.Length; c++)
                Array.Copy(values, (r * cols + kept[c]) * size, sliced, (r * kept.Length + c) * size, size);
            dims[^1] = kept.Length;
        }
        t.Dims.Clear();
        t.Dims.AddRange(dims);
        t.FloatData.Clear();
        t.Int32Data.Clear();
        t.RawData = ByteString.CopyFrom(sliced);
    }

    static void ClampK(TensorProto t, int units)
    {
        long k = t.Int64Data.Count > 0 ? t.Int64Data[0] : BitConverter.ToInt64(t.RawData.Span);
        if (k <= units)
            return;
        t.Int64Data.Clear();
        t.ClearRawData(); // proto2: an empty raw_data still counts as present
        t.Int64Data.Add(units);
    }

    /// <summary>The 16-bit elements (float16 or bfloat16 bits) of an initializer stored as raw_data or
    /// int32_data.</summary>
    /// <exception cref="UserInputException">The initializer is of another type.</exception>
    public static ushort[] ReadHalves(TensorProto t)
    {
        if (t.DataType is not ((int)DataType.Float16 or (int)DataType.Bfloat16))
            throw new UserInputException(
                $"Initializer {t.Name} is {(DataType)t.DataType}; only float32, float16 and bfloat16 weights can be rewritten."
            );
        return t.Int32Data.Count > 0
            ? t.Int32Data.Select(v => (ushort)v).ToArray()
            : System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(t.RawData.Span).ToArray();
    }

    /// <summary>Float32 values of an initializer stored as raw_data or float_data.</summary>
    public static float[] ReadFloats(TensorProto t)
    {
        if (t.FloatData.Count > 0)
            return t.FloatData.ToArray();
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray();
    }
}
