using Sparsity.Export;

namespace Sparsity.Training;

// RmsNorm (Model/RmsNorm.cs): x · 1/sqrt(mean(x²) + eps) · w (opset 17 has no RMSNormalization); or LayerNormalization.
sealed partial class ModelEmitter
{
    string Norm(string input, string prefix)
    {
        string w = g.Floats(prefix + ".weight", [c.DModel], W(prefix + ".weight"));
        if (!c.RmsNorm)
            return g.Op(
                "LayerNormalization",
                prefix,
                [input, w, g.Floats(prefix + ".bias", [c.DModel], W(prefix + ".bias"))],
                OnnxGraph.Int("axis", -1),
                OnnxGraph.Float("epsilon", (float)c.NormEpsilon)
            );
        string meanSquare = g.Op(
            "ReduceMean",
            prefix + ".ms",
            [g.Op("Mul", prefix + ".sq", [input, input])],
            OnnxGraph.Ints("axes", -1),
            OnnxGraph.Int("keepdims", 1)
        );
        string inverse = g.Op(
            "Reciprocal",
            prefix + ".inv",
            [
                g.Op(
                    "Sqrt",
                    prefix + ".rms",
                    [g.Op("Add", prefix + ".eps", [meanSquare, g.Scalar(prefix + ".epsilon", (float)c.NormEpsilon)])]
                ),
            ]
        );
        return g.Op("Mul", prefix, [g.Op("Mul", prefix + ".normed", [input, inverse]), w]);
    }
}
