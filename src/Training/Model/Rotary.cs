using static TorchSharp.torch;

namespace Sparsity.Training.Model;

/// <summary>
/// Rotary position embeddings as Llama computes them (in float32: inverse frequencies base^(−2i/d), angles = position ×
/// frequency, the halves of a head rotated against each other). The exporter stores the same tables as initializers.
/// </summary>
public static class Rotary
{
    /// <summary>cos and sin of the angles for positions 0..count−1, each [count, head size].</summary>
    public static (Tensor Cos, Tensor Sin) Tables(ModelConfig c, long count, Device? device = null)
    {
        using var scope = NewDisposeScope();
        int d = c.HeadSize;
        var exponents = arange(0, d, 2, dtype: ScalarType.Int64, device: device).to_type(ScalarType.Float32) / d;
        var inverse = 1.0f / tensor((float)c.RopeTheta, device: device).pow(exponents); // [d/2]
        var angles = outer(arange(count, dtype: ScalarType.Int64, device: device).to_type(ScalarType.Float32), inverse); // [count, d/2]
        var both = cat([angles, angles], dim: -1);
        return (both.cos().MoveToOuterDisposeScope(), both.sin().MoveToOuterDisposeScope());
    }

    /// <summary>x (B, H, T, d) rotated by the tables' first T rows: x·cos + rotate_half(x)·sin.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var halves = x.chunk(2, dim: -1);
        var rotated = cat([-halves[1], halves[0]], dim: -1);
        return (x * cos + rotated * sin).MoveToOuterDisposeScope();
    }
}
