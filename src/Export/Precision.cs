using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Export;

/// <summary>The type a graph computes in: <c>--precision fp32|fp16|bf16</c>.</summary>
public enum Precision
{
    /// <summary>float32, as exported.</summary>
    Fp32,

    /// <summary>IEEE float16 (range ±65,504).</summary>
    Fp16,

    /// <summary>bfloat16 (float32's range, 8 bits of mantissa): for families whose activations overflow fp16, T5 the
    /// known one.</summary>
    Bf16,
}

/// <summary>Names and ONNX types of <see cref="Precision"/>.</summary>
public static class Precisions
{
    /// <summary>The option's spelling: fp32, fp16, bf16.</summary>
    public static string Name(this Precision p) => p.ToString().ToLowerInvariant();

    /// <summary>The ONNX element type.</summary>
    public static DataType Type(this Precision p) =>
        p switch
        {
            Precision.Fp16 => DataType.Float16,
            Precision.Bf16 => DataType.Bfloat16,
            _ => DataType.Float,
        };

    /// <summary>Reads <c>--precision</c>; anything else is one line naming the choices.</summary>
    public static Precision Parse(string option) =>
        option switch
        {
            "fp32" => Precision.Fp32,
            "fp16" => Precision.Fp16,
            "bf16" => Precision.Bf16,
            _ => throw new UserInputException($"--precision {option}: use fp32, fp16 or bf16."),
        };
}
