using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Sparsity.Training.Model;

/// <summary>Pre-LayerNorm block: x + attn(ln_1(x)), then + mlp(ln_2(x)).</summary>
public sealed class Block : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm ln_1;
    private readonly CausalSelfAttention attn;
    private readonly LayerNorm ln_2;
    private readonly Mlp mlp;

    public Block(ModelConfig config) : base(nameof(Block))
    {
        ln_1 = nn.LayerNorm(config.DModel);
        attn = new CausalSelfAttention(config.DModel, config.Heads);
        ln_2 = nn.LayerNorm(config.DModel);
        mlp = new Mlp(config.DModel, config.DFf, config.TopK);
        RegisterComponents();
    }

    /// <summary>The block's MLP.</summary>
    public Mlp Mlp => mlp;

    public override Tensor forward(Tensor x) => Forward(x, out _, keepHidden: false);

    /// <summary>Runs the block and returns the MLP hidden activations (B, T, d_ff) too.</summary>
    public Tensor Forward(Tensor x, out Tensor? hidden, bool keepHidden = true)
    {
        using var scope = NewDisposeScope();
        x = x + attn.forward(ln_1.forward(x));
        var h = mlp.Hidden(ln_2.forward(x));
        x = x + mlp.Down.forward(h);
        hidden = keepHidden ? h.MoveToOuterDisposeScope() : null;
        return x.MoveToOuterDisposeScope();
    }
}
