using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Sparsity.Pipeline.Commands;

/// <summary>
/// The rules every number and path given on the command line obeys, in one place, checked while parsing (so a bad
/// value is a parse error: one line, exit 2, before any work): numbers are finite, counts and sizes positive, indices
/// and thread counts non-negative, paths and values non-empty. Each command's own limits (k ≤ d_ff, K ≤ a batch) are
/// checked where the data is known.
/// </summary>
public static class OptionRules
{
    // Counts and sizes: 0 would mean "nothing" and is never what a user wants.
    static readonly HashSet<string> AtLeastOne =
    [
        "--seq-len",
        "--batch-size",
        "--max-tokens",
        "--shard-count",
        "--runs",
        "--repeats",
        "--steps",
        "--layers",
        "--d-ff",
        "--eval-every",
        "--track-every",
        "--seeds",
        "--vocab-size",
        "--new-tokens",
        "--prompt-tokens",
        "--max-new-tokens",
        "--memory-factor",
        "--mask-window",
    ];

    // Where 0 means "off", "all" or "the first".
    static readonly HashSet<string> AtLeastZero =
    [
        "--threads",
        "--top-examples",
        "--top-k",
        "--unit",
        "--layer",
        "--mask-unused-at",
        "--external-data-above",
        "--seed",
    ];

    /// <summary>Attaches the rules to every option of <paramref name="command"/> and its subcommands.</summary>
    public static void Apply(Command command)
    {
        foreach (var option in command.Options)
            option.Validators.Add(result => Check(option, result));
        foreach (var sub in command.Subcommands)
            Apply(sub);
    }

    static void Check(Option option, OptionResult result)
    {
        if (result.Implicit || result.Tokens.Count == 0)
            return; // defaults are ours
        object? value;
        try
        {
            value = typeof(OptionResult)
                .GetMethod(nameof(OptionResult.GetValueOrDefault))!
                .MakeGenericMethod(option.ValueType)
                .Invoke(result, null);
        }
        catch (System.Reflection.TargetInvocationException)
        {
            return;
        } // unparsable: the parser reports it
        string name = option.Name;
        switch (value)
        {
            case float f when !float.IsFinite(f):
            case double d when !double.IsFinite(d):
                result.AddError($"{name} {result.Tokens[0].Value}: give a finite number.");
                break;
            case int or long when AtLeastOne.Contains(name) && Convert.ToInt64(value, CultureInfo.InvariantCulture) < 1:
                result.AddError($"{name} {value}: must be at least 1.");
                break;
            case int
            or long when AtLeastZero.Contains(name) && Convert.ToInt64(value, CultureInfo.InvariantCulture) < 0:
                result.AddError($"{name} {value}: must be 0 or more.");
                break;
            case string s when string.IsNullOrWhiteSpace(s):
                result.AddError($"{name} is empty: give a value.");
                break;
            case string[] list when list.Any(string.IsNullOrWhiteSpace):
                result.AddError($"{name} holds an empty value.");
                break;
        }
    }
}
