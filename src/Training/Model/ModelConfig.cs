namespace Sparsity.Training.Model;

/// <summary>Shape of a decoder-only ReLU transformer. Stored as config.json in every checkpoint.</summary>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="DModel">Residual width.</param>
/// <param name="Heads">Attention heads; must divide <paramref name="DModel"/>.</param>
/// <param name="DFf">MLP hidden units per layer (the units whose sparsity is measured).</param>
/// <param name="SeqLen">Longest context (learned positional embeddings).</param>
/// <param name="VocabSize">Token ids 0..VocabSize−1.</param>
/// <param name="TiedEmbeddings">Output projection shares the token embedding matrix.</param>
/// <param name="TopK">Keep only the k largest MLP activations per token; 0 or d_ff = unmodified.</param>
public sealed record ModelConfig(int Layers, int DModel, int Heads, int DFf, int SeqLen, int VocabSize,
    bool TiedEmbeddings = true, int TopK = 0)
{
    /// <summary>Throws <see cref="UserInputException"/> naming the first invalid field.</summary>
    public void Validate()
    {
        if (Layers < 1) throw new UserInputException("layers must be at least 1.");
        if (DModel < 1 || Heads < 1 || DModel % Heads != 0) throw new UserInputException($"d_model ({DModel}) must be a positive multiple of heads ({Heads}).");
        if (DFf < 1) throw new UserInputException("d_ff must be at least 1.");
        if (SeqLen < 1) throw new UserInputException("seq_len must be at least 1.");
        if (VocabSize < 2) throw new UserInputException("vocab_size must be at least 2.");
        if (TopK < 0 || TopK > DFf) throw new UserInputException($"top_k must be in 0..d_ff ({DFf}); got {TopK}.");
    }

    /// <summary>True when Top-k changes the activations (0 &lt; k &lt; d_ff).</summary>
    public bool UsesTopK => TopK > 0 && TopK < DFf;
}
