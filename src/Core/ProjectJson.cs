using System.Text.Json;
using System.Text.Json.Serialization;

namespace Sparsity.Core;

/// <summary>The JSON conventions of every file the project writes: snake_case names, indented, NaN as a
/// string.</summary>
public static class ProjectJson
{
    /// <summary>Options for files meant to be read by people and other tools.</summary>
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Options for JSON Lines: one object per line.</summary>
    public static readonly JsonSerializerOptions Lines = new(Options) { WriteIndented = false };
}
