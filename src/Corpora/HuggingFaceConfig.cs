using System.Text.Json;
using System.Text.Json.Nodes;

namespace Sparsity.Corpora;

/// <summary>The token ids a Hugging Face folder's config.json names (its tokenizer's end-of-text; a checkpoint's special ids).</summary>
public static class HuggingFaceConfig
{
    /// <summary>The end-of-text id config.json in <paramref name="folder"/> names (the first of a list); null when there is none or no readable config.</summary>
    public static int? EndOfTextId(string folder)
    {
        try { return JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json"))) is JsonObject j ? TokenId(j, "eos_token_id") : null; }
        catch (Exception e) when (e is JsonException or IOException) { return null; }
    }

    /// <summary>A token id of a config: a number, or the first of a list; null when absent.</summary>
    public static int? TokenId(JsonObject j, string key) => j[key] switch
    {
        JsonArray { Count: > 0 } a when a[0] is JsonValue v && v.TryGetValue(out int first) => first,
        JsonValue v when v.TryGetValue(out int id) => id,
        _ => null,
    };
}
