using System.Text.Json;
using System.Text.Json.Nodes;

namespace Sparsity.Corpora;

/// <summary>What a Hugging Face folder's config.json says of it: its model type, and token ids (its tokenizer's
/// end-of-text; a checkpoint's special ids).</summary>
public static class HuggingFaceConfig
{
    /// <summary>config.json's model_type in <paramref name="folder"/> (its text, whatever its JSON type); null when
    /// there is none or no readable config: not a Hugging Face folder.</summary>
    public static string? ModelType(string folder) =>
        Read(folder)?["model_type"] is JsonNode type
            ? (type.GetValueKind() == JsonValueKind.String ? type.GetValue<string>() : type.ToJsonString())
            : null;

    /// <summary>The end-of-text id config.json in <paramref name="folder"/> names (the first of a list); null when
    /// there is none or no readable config.</summary>
    public static int? EndOfTextId(string folder) => Read(folder) is { } j ? TokenId(j, "eos_token_id") : null;

    static JsonObject? Read(string folder)
    {
        string config = Path.Combine(folder, "config.json");
        if (!File.Exists(config))
            return null;
        try
        {
            return JsonNode.Parse(File.ReadAllText(config)) as JsonObject;
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            return null;
        }
    }

    /// <summary>A token id of a config: a number, or the first of a list; null when absent.</summary>
    public static int? TokenId(JsonObject j, string key) =>
        j[key] switch
        {
            JsonArray { Count: > 0 } a when a[0] is JsonValue v && v.TryGetValue(out int first) => first,
            JsonValue v when v.TryGetValue(out int id) => id,
            _ => null,
        };
}
