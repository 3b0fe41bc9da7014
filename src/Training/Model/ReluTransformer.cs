using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Sparsity.Training.Model;

/// <summary>
/// Decoder-only ReLU transformer: token embeddings (+ learned positions, or rotary ones in attention), pre-norm
/// blocks, final norm, output projection (tied to wte unless configured otherwise). Weight keys follow GPT-2 naming:
/// wte.weight, wpe.weight (learned positions only), h.{i}.ln_1.*, h.{i}.attn.c_attn.*, h.{i}.attn.c_proj.*,
/// h.{i}.ln_2.*, h.{i}.mlp.up.*, h.{i}.mlp.gate.* (gated only), h.{i}.mlp.down.*, h.{i}.mlp.unit_mask, ln_f.*,
/// lm_head.weight (untied only).
/// </summary>
public sealed class ReluTransformer : nn.Module<Tensor, Tensor>
{
    private readonly Embedding wte;
    private readonly Embedding? wpe;
    private readonly ModuleList<Block> h;
    private readonly nn.Module<Tensor, Tensor> ln_f;
    private readonly Linear? lm_head;

    /// <summary>The model <paramref name="config"/> describes, freshly initialised.</summary>
    public ReluTransformer(ModelConfig config)
        : base(nameof(ReluTransformer))
    {
        config.Validate();
        Config = config;
        wte = nn.Embedding(config.VocabSize, config.DModel);
        wpe = config.Rotary ? null : nn.Embedding(config.SeqLen, config.DModel);
        h = nn.ModuleList(Enumerable.Range(0, config.Layers).Select(_ => new Block(config)).ToArray());
        ln_f = Block.Norm(config);
        lm_head = config.TiedEmbeddings ? null : nn.Linear(config.DModel, config.VocabSize, hasBias: false);
        RegisterComponents();
        Initialize();
    }

    /// <summary>The configuration this model was built from.</summary>
    public ModelConfig Config { get; }

    /// <summary>The MLP of each layer, in order.</summary>
    public IReadOnlyList<Mlp> Mlps => h.Select(b => b.Mlp).ToList();

    /// <summary>Token ids [batch, seq] → logits [batch, seq, vocabulary].</summary>
    public override Tensor forward(Tensor ids) => Forward(ids, keepHidden: false).Logits;

    /// <summary>
    /// Logits (B, T, vocab) for token ids (B, T), and when <paramref name="keepHidden"/> the MLP
    /// hidden activations (B, T, d_ff) of every layer.
    /// </summary>
    public (Tensor Logits, Tensor[] Hidden) Forward(Tensor ids, bool keepHidden = true)
    {
        using var scope = NewDisposeScope();
        long t = ids.shape[1];
        if (t > Config.SeqLen)
            throw new ArgumentException($"Sequence of {t} tokens exceeds the model's seq_len {Config.SeqLen}.");
        var x = wte.forward(ids); // (B, T, C)
        if (wpe != null)
            x = x + wpe.forward(arange(t, dtype: ScalarType.Int64, device: ids.device));
        var hidden = new Tensor[keepHidden ? Config.Layers : 0];
        for (int i = 0; i < Config.Layers; i++)
        {
            x = ((Block)h[i]).Forward(x, out var layerHidden, keepHidden);
            if (keepHidden)
                hidden[i] = layerHidden!.MoveToOuterDisposeScope();
        }
        x = ln_f.forward(x);
        var logits = lm_head is null ? x.matmul(wte.weight!.t()) : lm_head.forward(x); // (B, T, vocab)
        return (logits.MoveToOuterDisposeScope(), hidden);
    }

    // Small normal init as GPT-2; LeCun normal (std = 1/sqrt(fan_in)) for MLP kernels as Wild & Anderson,
    // which with unit-variance LN inputs starts about half the units active on each token.
    private void Initialize()
    {
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith(".bias"))
                nn.init.zeros_(p);
            else if (name.Contains("ln_"))
                nn.init.ones_(p);
            else if (name.Contains(".mlp."))
                nn.init.normal_(p, 0, 1.0 / Math.Sqrt(p.shape[1]));
            else
                nn.init.normal_(p, 0, 0.02);
        }
    }
}
