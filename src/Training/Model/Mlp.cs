using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Sparsity.Training.Model;

/// <summary>
/// MLP block f(x) = down(h) with h = mask ⊙ TopK(ReLU(up(x))), or, gated (Llama family), f(x) = down(h ⊙ up(x)) with
/// h = mask ⊙ TopK(ReLU(gate(x))). <see cref="Hidden"/> is h, the activation map the project measures. Weight keys:
/// up.*, gate.* (gated only), down.*, unit_mask (1 = unit kept, 0 = masked for the rest of training).
/// </summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    private readonly Linear up;
    private readonly Linear? gate;
    private readonly Linear down;
    private readonly int topK;

    /// <summary>An MLP of the given widths (see the class summary for the flags).</summary>
    public Mlp(int dModel, int dFf, int topK, bool gated = false, bool bias = true)
        : base(nameof(Mlp))
    {
        up = nn.Linear(dModel, dFf, hasBias: bias);
        gate = gated ? nn.Linear(dModel, dFf, hasBias: bias) : null;
        down = nn.Linear(dFf, dModel, hasBias: bias);
        this.topK = topK > 0 && topK < dFf ? topK : 0;
        RegisterComponents();
        register_buffer("unit_mask", ones(dFf));
    }

    /// <summary>The up-projection (d_model → d_ff).</summary>
    public Linear Up => up;

    /// <summary>The down-projection (d_ff → d_model).</summary>
    public Linear Down => down;

    /// <summary>Per-unit keep flags [d_ff]: 1 = active allowed, 0 = masked.</summary>
    public Tensor UnitMask => get_buffer("unit_mask")!;

    /// <summary>Post-activation hidden layer (B, T, d_ff), after mask and Top-k: the units.</summary>
    public Tensor Hidden(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.relu((gate ?? up).forward(x)) * UnitMask; // (B, T, d_ff)
        if (topK > 0)
        {
            // Exactly k kept per token: scatter ones at the k largest (ties broken by index order).
            var (values, indices) = h.topk(topK, dim: -1);
            h = h * zeros_like(h).scatter_(-1, indices, ones_like(values));
        }
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>The block's output for the normalized input <paramref name="x"/> whose units are
    /// <paramref name="hidden"/>.</summary>
    public Tensor Output(Tensor x, Tensor hidden)
    {
        using var scope = NewDisposeScope();
        return down.forward(gate is null ? hidden : hidden * up.forward(x)).MoveToOuterDisposeScope();
    }

    /// <summary>[…, d_model] → the same shape, through the ReLU hidden layer.</summary>
    public override Tensor forward(Tensor x) => Output(x, Hidden(x));

    /// <summary>Sets which units may fire: true = kept.</summary>
    public void SetUnitMask(bool[] keep)
    {
        using var _ = no_grad();
        UnitMask.copy_(tensor(keep.Select(k => k ? 1f : 0f).ToArray()));
    }
}
