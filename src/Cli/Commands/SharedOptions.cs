using System.CommandLine;

namespace Sparsity.Pipeline.Commands;

/// <summary>Options and readings several commands share, so no command reaches into another.</summary>
public static class SharedOptions
{
    /// <summary><c>--out</c>, required, described by <paramref name="what"/>.</summary>
    public static Option<string> OutOption(string what) => new("--out") { Description = what, Required = true };

    /// <summary><c>--model</c>: an input ONNX graph.</summary>
    public static Option<string> ModelOption() =>
        new("--model")
        {
            Description = "Input ONNX model (this project's export or any torch.onnx/Optimum export).",
            Required = true,
        };

    /// <summary><c>--activation</c>: the op types that mark MLP hidden layers.</summary>
    public static Option<string[]> ActivationOption() =>
        new("--activation")
        {
            Description =
                "Activation op types that mark MLP hidden layers (default Relu; e.g. --activation Relu Gelu).",
            DefaultValueFactory = _ => ["Relu"],
            AllowMultipleArgumentsPerToken = true,
        };

    /// <summary>The command line as typed, for model cards and reports (arguments with spaces quoted).</summary>
    public static string CommandLine(ParseResult p) =>
        "relu-sparsity " + string.Join(' ', p.Tokens.Select(t => t.Value.Contains(' ') ? $"\"{t.Value}\"" : t.Value));

    /// <summary>Training text, held-out text and tokenizer: as given, or the built-in Brown ones (said in one
    /// line).</summary>
    public static (string Train, string HeldOut, string Tokenizer) TrainingText(
        TextWriter output,
        string? corpus,
        string? heldOut,
        string? tokenizer
    )
    {
        var v = BrownDefaults.Apply(
            output,
            ("--corpus", corpus, BrownDefaults.Kind.TrainingText),
            ("--heldout", heldOut, BrownDefaults.Kind.HeldOutText),
            ("--tokenizer", tokenizer, BrownDefaults.Kind.Tokenizer)
        );
        return (v[0], v[1], v[2]);
    }
}
