using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Sparsity.Training.Model;

/// <summary>Multi-head causal self-attention. Weight keys: c_attn (d → 3d, q|k|v), c_proj (d → d).</summary>
public sealed class CausalSelfAttention : nn.Module<Tensor, Tensor>
{
    private readonly Linear c_attn;
    private readonly Linear c_proj;
    private readonly int heads;

    public CausalSelfAttention(int dModel, int heads) : base(nameof(CausalSelfAttention))
    {
        c_attn = nn.Linear(dModel, 3 * dModel);
        c_proj = nn.Linear(dModel, dModel);
        this.heads = heads;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1], c = x.shape[2], hs = c / heads;
        var qkv = c_attn.forward(x).split(c, dim: 2);
        var q = qkv[0].view(b, t, heads, hs).transpose(1, 2); // (B, H, T, hs)
        var k = qkv[1].view(b, t, heads, hs).transpose(1, 2);
        var v = qkv[2].view(b, t, heads, hs).transpose(1, 2);
        var att = q.matmul(k.transpose(-2, -1)) * (1.0 / Math.Sqrt(hs)); // (B, H, T, T)
        var future = ones(t, t, dtype: ScalarType.Bool, device: x.device).triu(1);
        att = nn.functional.softmax(att.masked_fill(future, float.NegativeInfinity), dim: -1);
        var y = att.matmul(v).transpose(1, 2).contiguous().view(b, t, c); // (B, T, C)
        return c_proj.forward(y).MoveToOuterDisposeScope();
    }
}
