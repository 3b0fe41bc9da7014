using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Sparsity.Training.Model;

/// <summary>
/// Causal self-attention: multi-head, or grouped-query when the config has fewer key/value heads (each shared by
/// Heads / KvHeads query heads), with learned or rotary positions. Weight keys: c_attn (d → (H + 2·KV)·hs, q|k|v),
/// c_proj (H·hs → d).
/// </summary>
public sealed class CausalSelfAttention : nn.Module<Tensor, Tensor>
{
    private readonly Linear c_attn;
    private readonly Linear c_proj;
    private readonly ModelConfig config;

    /// <summary>Causal multi-head self-attention of <paramref name="config"/>'s shape.</summary>
    public CausalSelfAttention(ModelConfig config)
        : base(nameof(CausalSelfAttention))
    {
        int hs = config.HeadSize,
            kv = config.KeyValueHeads;
        c_attn = nn.Linear(config.DModel, (config.Heads + 2 * kv) * hs, hasBias: config.AttentionBias);
        c_proj = nn.Linear(config.Heads * hs, config.DModel, hasBias: config.AttentionBias);
        this.config = config;
        RegisterComponents();
    }

    /// <summary>[batch, seq, d_model] → the same shape; each position attends to itself and earlier ones.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0],
            t = x.shape[1];
        int heads = config.Heads,
            kv = config.KeyValueHeads,
            hs = config.HeadSize;
        var qkv = c_attn.forward(x).split([heads * hs, kv * hs, kv * hs], dim: 2);
        var q = qkv[0].view(b, t, heads, hs).transpose(1, 2); // (B, H, T, hs)
        var k = qkv[1].view(b, t, kv, hs).transpose(1, 2); // (B, KV, T, hs)
        var v = qkv[2].view(b, t, kv, hs).transpose(1, 2);
        if (config.Rotary)
        {
            var (cos, sin) = Rotary.Tables(config, t, x.device);
            (q, k) = (Rotary.Apply(q, cos, sin), Rotary.Apply(k, cos, sin));
        }
        if (kv != heads)
            (k, v) = (k.repeat_interleave(heads / kv, dim: 1), v.repeat_interleave(heads / kv, dim: 1));
        var att = q.matmul(k.transpose(-2, -1)) * (1.0 / Math.Sqrt(hs)); // (B, H, T, T)
        var future = ones(t, t, dtype: ScalarType.Bool, device: x.device).triu(1);
        att = nn.functional.softmax(att.masked_fill(future, float.NegativeInfinity), dim: -1);
        var y = att.matmul(v).transpose(1, 2).contiguous().view(b, t, heads * hs); // (B, T, H·hs)
        return c_proj.forward(y).MoveToOuterDisposeScope();
    }
}
