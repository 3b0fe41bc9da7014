using Google.Protobuf;
using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Export;

/// <summary>
/// Converts a graph's float32 weights and compute to float16 for GPU analysis (<c>--precision fp16</c>): float
/// initializers and constants become fp16 (clamped to ±65,504, so masks built from float32's minimum stay finite),
/// casts to float32 cast to fp16, and float outputs are cast back to float32; integer inputs and outputs keep their
/// types. Analysis instruments the converted graph, and its counts cast the activations back to float32 first.
/// </summary>
public static class Float16
{
    const float Max = 65504f;

    /// <summary>A float16 copy of <paramref name="model"/>; shape annotations are dropped (their types changed).</summary>
    public static ModelProto Convert(ModelProto model)
    {
        var result = model.Clone();
        var graph = result.Graph;
        foreach (var t in graph.Initializer.Where(t => t.DataType == (int)DataType.Float)) ToHalf(t);
        foreach (var node in graph.Node)
            foreach (var a in node.Attribute)
            {
                if (a.T != null && a.T.DataType == (int)DataType.Float) ToHalf(a.T); // Constant, ConstantOfShape
                if (node.OpType == "Cast" && a.Name == "to" && a.I == (long)DataType.Float) a.I = (long)DataType.Float16;
            }
        if (graph.Node.Any(n => n.OpType == "Constant" && n.Attribute.Any(a => a.Name is "value_float" or "value_floats")))
            throw new UserInputException("The graph holds Constant nodes with value_float attributes, which --precision fp16 does not convert; use fp32.");
        var g = new GraphWriter(graph);
        foreach (var output in graph.Output.Where(o => o.Type?.TensorType?.ElemType == (int)DataType.Float).ToList())
        {
            // The producer now writes fp16 under a new name; a Cast restores the float32 output under its own name.
            string half = g.Fresh(output.Name + ".fp16");
            foreach (var node in graph.Node)
                for (int i = 0; i < node.Output.Count; i++)
                    if (node.Output[i] == output.Name) node.Output[i] = half;
            GraphIndex.RenameReads(graph, output.Name, half);
            g.Named("Cast", output.Name, [half], OnnxGraph.Int("to", (long)DataType.Float));
        }
        graph.ValueInfo.Clear();
        return result;
    }

    static void ToHalf(TensorProto t)
    {
        float[] values = Surgery.ReadFloats(t);
        var halves = new Half[values.Length];
        for (int i = 0; i < values.Length; i++) halves[i] = (Half)Math.Clamp(values[i], -Max, Max);
        t.FloatData.Clear();
        t.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(halves.AsSpan()));
        t.DataType = (int)DataType.Float16;
    }
}
