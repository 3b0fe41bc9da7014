namespace Sparsity.Pipeline;

/// <summary>
/// What --corpus, --heldout and --tokenizer default to: the Brown corpus and the tokenizer learned on it, when they
/// have been built in <c>data/brown</c> under the current folder (<c>dotnet cake --target=Tokenizer</c> builds both).
/// A default in use is said in one line; a missing one names the option and the command that builds it.
/// </summary>
public static class BrownDefaults
{
    /// <summary>Where the Cake targets build the corpus and its tokenizer, relative to the current folder.</summary>
    public const string Folder = "data/brown";

    /// <summary>Which built-in file an omitted option stands for.</summary>
    public enum Kind
    {
        /// <summary>Brown's training text.</summary>
        TrainingText,

        /// <summary>Brown's held-out text.</summary>
        HeldOutText,

        /// <summary>The BPE tokenizer learned on Brown.</summary>
        Tokenizer,
    }

    /// <summary>The given values, with the built-in ones in place of those omitted; one line to <paramref name="note"/>
    /// when any was.</summary>
    public static string[] Apply(TextWriter note, params (string Option, string? Given, Kind Kind)[] options)
    {
        var used = new List<string>();
        var values = options
            .Select(o =>
            {
                if (o.Given != null)
                    return o.Given;
                string value = BuiltIn(o.Option, o.Kind);
                used.Add($"{o.Option} {value}");
                return value;
            })
            .ToArray();
        if (used.Count > 0)
            note.WriteLine($"Using the built-in Brown corpus: {string.Join(", ", used)}.");
        return values;
    }

    static string BuiltIn(string option, Kind kind)
    {
        string Require(string path, string what) =>
            File.Exists(path)
                ? path
                : throw new UserInputException(
                    $"{option} was not given and the built-in Brown {what} is not built here ({path} is missing): give {option}, or build it with `dotnet cake --target=Tokenizer` in a clone of relu-sparsity."
                );
        return kind switch
        {
            Kind.TrainingText => Require(Path.Combine(Folder, "train.txt"), "corpus"),
            Kind.HeldOutText => Require(Path.Combine(Folder, "heldout.txt"), "corpus"),
            _ =>
                $"bpe:{Require(Path.Combine(Folder, "tokenizer", "vocab.json"), "tokenizer")},{Require(Path.Combine(Folder, "tokenizer", "merges.txt"), "tokenizer")}",
        };
    }

    /// <summary>Whether the corpus and tokenizer are built here (for <c>doctor</c>).</summary>
    public static bool Built =>
        new[] { "train.txt", "heldout.txt", "tokenizer/vocab.json", "tokenizer/merges.txt" }.All(f =>
            File.Exists(Path.Combine(Folder, f))
        );
}
