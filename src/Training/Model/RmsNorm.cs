using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Sparsity.Training.Model;

/// <summary>Root-mean-square normalization (Llama): x / sqrt(mean(x²) + eps) · weight. Weight key: weight.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly double epsilon;

    /// <summary>RMS normalisation over the last <paramref name="size"/> values, with <paramref name="epsilon"/> added
    /// to the mean square.</summary>
    public RmsNorm(int size, double epsilon)
        : base(nameof(RmsNorm))
    {
        weight = nn.Parameter(ones(size));
        this.epsilon = epsilon;
        RegisterComponents();
    }

    /// <summary>x · (mean(x²) + ε)^−½ · weight, over the last axis.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return (x * (x * x).mean([-1], keepdim: true).add(epsilon).rsqrt() * weight).MoveToOuterDisposeScope();
    }
}
