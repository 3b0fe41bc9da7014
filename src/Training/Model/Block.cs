using TorchSharp;
using static TorchSharp.torch;

namespace Sparsity.Training.Model;

/// <summary>Pre-norm block: x + attn(ln_1(x)), then + mlp(ln_2(x)). LayerNorm or RMSNorm, as configured.</summary>
public sealed class Block : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> ln_1;
    private readonly CausalSelfAttention attn;
    private readonly nn.Module<Tensor, Tensor> ln_2;
    private readonly Mlp mlp;

    /// <summary>A pre-norm block of <paramref name="config"/>'s shape: attention, then the MLP, each around a
    /// residual.</summary>
    public Block(ModelConfig config)
        : base(nameof(Block))
    {
        ln_1 = Norm(config);
        attn = new CausalSelfAttention(config);
        ln_2 = Norm(config);
        mlp = new Mlp(config.DModel, config.DFf, config.TopK, config.GatedMlp, config.MlpBias);
        RegisterComponents();
    }

    /// <summary>The configured normalization over d_model.</summary>
    public static nn.Module<Tensor, Tensor> Norm(ModelConfig config) =>
        config.RmsNorm
            ? new RmsNorm(config.DModel, config.NormEpsilon)
            : nn.LayerNorm(config.DModel, config.NormEpsilon);

    /// <summary>The block's MLP.</summary>
    public Mlp Mlp => mlp;

    /// <summary>[batch, seq, d_model] → the same shape.</summary>
    public override Tensor forward(Tensor x) => Forward(x, out _, keepHidden: false);

    /// <summary>Runs the block and returns the MLP hidden activations (B, T, d_ff) too.</summary>
    public Tensor Forward(Tensor x, out Tensor? hidden, bool keepHidden = true)
    {
        using var scope = NewDisposeScope();
        x = x + attn.forward(ln_1.forward(x));
        var normed = ln_2.forward(x);
        var h = mlp.Hidden(normed);
        x = x + mlp.Output(normed, h);
        hidden = keepHidden ? h.MoveToOuterDisposeScope() : null;
        return x.MoveToOuterDisposeScope();
    }
}
