using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Training;

// Block: x + attention(norm(x)), then + mlp(norm(x)), as Model/Block.cs.
sealed partial class ModelEmitter
{
    string Block(string x, int i, AttentionInputs attention, string? statsMask)
    {
        string p = $"h.{i}";
        x = g.Op("Add", p + ".resid_attn", [x, Attention(Norm(x, p + ".ln_1"), i, attention)]);
        return g.Op("Add", p + ".resid_mlp", [x, Mlp(Norm(x, p + ".ln_2"), i, statsMask)]);
    }
}
