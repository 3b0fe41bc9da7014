namespace Sparsity.Training.Model;

/// <summary>
/// Shape of a decoder-only ReLU transformer. Stored as config.json in every checkpoint. The defaults describe the
/// model <c>train</c> builds (GPT-2 style); the architecture fields let the same model hold OPT and Llama/Mistral
/// checkpoints (<see cref="HuggingFaceCheckpoint"/>).
/// </summary>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="DModel">Residual width.</param>
/// <param name="Heads">Attention (query) heads; must divide <paramref name="DModel"/> unless <paramref name="HeadDim"/>
/// is set.</param>
/// <param name="DFf">MLP hidden units per layer (the units whose sparsity is measured).</param>
/// <param name="SeqLen">Longest context (rows of the learned position table, or of the rotary tables).</param>
/// <param name="VocabSize">Token ids 0..VocabSize−1.</param>
/// <param name="TiedEmbeddings">Output projection shares the token embedding matrix.</param>
/// <param name="TopK">Keep only the k largest MLP activations per token; 0 or d_ff = unmodified.</param>
/// <param name="RmsNorm">RMSNorm (weight only) instead of LayerNorm (weight and bias).</param>
/// <param name="NormEpsilon">Epsilon of every normalization.</param>
/// <param name="RopeTheta">Rotary position embeddings with this base (Llama); 0 = learned absolute positions (GPT-2,
/// OPT).</param>
/// <param name="KvHeads">Key/value heads (grouped-query attention); 0 = <paramref name="Heads"/>.</param>
/// <param name="HeadDim">Width of one head; 0 = DModel / Heads.</param>
/// <param name="GatedMlp">MLP down(relu(gate(x)) ⊙ up(x)) (Llama family); the units are relu(gate(x)).</param>
/// <param name="AttentionBias">Attention projections have biases.</param>
/// <param name="MlpBias">MLP projections have biases.</param>
public sealed record ModelConfig(
    int Layers,
    int DModel,
    int Heads,
    int DFf,
    int SeqLen,
    int VocabSize,
    bool TiedEmbeddings = true,
    int TopK = 0,
    bool RmsNorm = false,
    double NormEpsilon = 1e-5,
    double RopeTheta = 0,
    int KvHeads = 0,
    int HeadDim = 0,
    bool GatedMlp = false,
    bool AttentionBias = true,
    bool MlpBias = true
)
{
    /// <summary>Throws <see cref="UserInputException"/> naming the first invalid field.</summary>
    public void Validate()
    {
        if (Layers < 1)
            throw new UserInputException("layers must be at least 1.");
        if (DModel < 1 || Heads < 1 || (HeadDim == 0 && DModel % Heads != 0))
            throw new UserInputException($"d_model ({DModel}) must be a positive multiple of heads ({Heads}).");
        if (HeadDim < 0)
            throw new UserInputException($"head_dim must be positive; got {HeadDim}.");
        if (KvHeads < 0 || Heads % KeyValueHeads != 0)
            throw new UserInputException($"heads ({Heads}) must be a multiple of key/value heads ({KvHeads}).");
        if (RopeTheta < 0 || (RopeTheta > 0 && HeadSize % 2 != 0))
            throw new UserInputException(
                $"rotary embeddings need a positive base and an even head size (base {RopeTheta}, head size {HeadSize})."
            );
        if (!(NormEpsilon > 0))
            throw new UserInputException($"the normalization epsilon must be positive; got {NormEpsilon}.");
        if (DFf < 1)
            throw new UserInputException("d_ff must be at least 1.");
        if (SeqLen < 1)
            throw new UserInputException("seq_len must be at least 1.");
        if (VocabSize < 2)
            throw new UserInputException("vocab_size must be at least 2.");
        if (TopK < 0 || TopK > DFf)
            throw new UserInputException($"top_k must be in 0..d_ff ({DFf}); got {TopK}.");
    }

    /// <summary>True when Top-k changes the activations (0 &lt; k &lt; d_ff).</summary>
    public bool UsesTopK => TopK > 0 && TopK < DFf;

    /// <summary>Width of one attention head.</summary>
    public int HeadSize => HeadDim > 0 ? HeadDim : DModel / Heads;

    /// <summary>Key/value heads (equal to <see cref="Heads"/> without grouped-query attention).</summary>
    public int KeyValueHeads => KvHeads > 0 ? KvHeads : Heads;

    /// <summary>True when positions enter through rotary embeddings rather than a learned table.</summary>
    public bool Rotary => RopeTheta > 0;
}
