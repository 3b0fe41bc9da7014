using Sparsity.Export;
using static TorchSharp.torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Training;

// Mlp (Model/Mlp.cs): relu(up(x)) — gated: relu(gate(x)) · up(x) — through the unit mask and Top-k, exposed (dense
// variant) or counted in the graph (stats variant), then down.
sealed partial class ModelEmitter
{
    string Mlp(string normed, int i, string? statsMask)
    {
        string p = $"h.{i}";
        string h = g.Op(
            "Relu",
            p + ".mlp.relu",
            [Linear(normed, p + (c.GatedMlp ? ".mlp.gate" : ".mlp.up"), c.DModel, c.DFf, c.MlpBias)]
        ); // (B, T, d_ff)
        using (var scope = NewDisposeScope())
        {
            float[]? unitMask = weight(p + ".mlp.unit_mask")?.cpu().data<float>().ToArray();
            if (unitMask != null && unitMask.Any(m => m != 1f))
                h = g.Op("Mul", p + ".mlp.masked", [h, g.Floats(p + ".mlp.unit_mask", [c.DFf], unitMask)]);
        }
        if (c.UsesTopK)
            h = g.TopKMask(h, c.TopK, p + ".mlp");
        h = g.Named(
            "Identity",
            variant == ExportVariant.Dense ? ModelExporter.HiddenOutput(i) : g.Fresh(p + ".mlp.hidden"),
            [h]
        );
        if (variant == ExportVariant.Dense)
            outputs.Add(OnnxGraph.Value(ModelExporter.HiddenOutput(i), DataType.Float, "batch", "seq", c.DFf));
        else
            outputs.AddRange(StatsReduction.Add(g, h, statsMask!, null, threshold, i, c.DFf));
        string units = c.GatedMlp
            ? g.Op("Mul", p + ".mlp.gated", [h, Linear(normed, p + ".mlp.up", c.DModel, c.DFf, c.MlpBias)])
            : h;
        return Linear(units, p + ".mlp.down", c.DFf, c.DModel, c.MlpBias);
    }
}
