namespace Sparsity.Corpora;

/// <summary>The kinds of tokenizer a spec can name (its part before the colon).</summary>
public enum TokenizerKind
{
    /// <summary><c>bytes</c>: UTF-8 bytes as ids 0–255.</summary>
    Bytes,

    /// <summary><c>ids</c>: the text already holds whitespace-separated ids.</summary>
    Ids,

    /// <summary><c>tiktoken:cl100k_base</c> or <c>tiktoken:o200k_base</c>.</summary>
    Tiktoken,

    /// <summary><c>bpe:&lt;vocab.json&gt;,&lt;merges.txt&gt;</c>: GPT-2 byte-level BPE.</summary>
    Bpe,

    /// <summary><c>sentencepiece:&lt;file.model&gt;</c>.</summary>
    SentencePiece,

    /// <summary><c>wordpiece:&lt;vocab.txt&gt;</c>.</summary>
    WordPiece,

    /// <summary><c>hf:&lt;folder&gt;</c>: a Hugging Face checkpoint's own tokenizer.</summary>
    HuggingFace,
}

/// <summary>
/// A tokenizer spec parsed once, where it is given (<c>--tokenizer</c>, stats.json, a checkpoint): its kind and its
/// argument. <see cref="ToString"/> gives back the spec as written, which is what files store.
/// </summary>
public sealed record TokenizerSpec(TokenizerKind Kind, string Argument)
{
    static readonly (string Name, TokenizerKind Kind)[] Names =
    [
        ("bytes", TokenizerKind.Bytes),
        ("ids", TokenizerKind.Ids),
        ("tiktoken", TokenizerKind.Tiktoken),
        ("bpe", TokenizerKind.Bpe),
        ("sentencepiece", TokenizerKind.SentencePiece),
        ("wordpiece", TokenizerKind.WordPiece),
        ("hf", TokenizerKind.HuggingFace),
    ];

    /// <summary>UTF-8 bytes as ids.</summary>
    public static readonly TokenizerSpec Bytes = new(TokenizerKind.Bytes, "");

    /// <summary>Parses <c>kind[:argument]</c>, checking the argument's shape for the kind (files are not
    /// opened).</summary>
    /// <exception cref="UserInputException">An unknown kind, or an argument the kind does not take.</exception>
    public static TokenizerSpec Parse(string spec)
    {
        string[] parts = spec.Split(':', 2);
        string argument = parts.Length == 2 ? parts[1] : "";
        var kind = Names.Where(n => n.Name == parts[0]).Select(n => (TokenizerKind?)n.Kind).FirstOrDefault();
        bool shaped = kind switch
        {
            TokenizerKind.Bytes or TokenizerKind.Ids => parts.Length == 1,
            TokenizerKind.Tiktoken => argument is "cl100k_base" or "o200k_base",
            TokenizerKind.Bpe => argument.Split(',').Length == 2,
            null => false,
            _ => argument != "",
        };
        return shaped
            ? new TokenizerSpec(kind!.Value, argument)
            : throw new UserInputException(
                $"Unknown tokenizer spec '{spec}': use tiktoken:cl100k_base, tiktoken:o200k_base, "
                    + "bpe:<vocab.json>,<merges.txt>, sentencepiece:<file.model>, wordpiece:<vocab.txt>, "
                    + "hf:<checkpoint folder>, bytes or ids."
            );
    }

    /// <summary>The spec as written: <c>kind</c> or <c>kind:argument</c>.</summary>
    public override string ToString()
    {
        string name = Names.First(n => n.Kind == Kind).Name;
        return Kind is TokenizerKind.Bytes or TokenizerKind.Ids ? name : $"{name}:{Argument}";
    }
}
