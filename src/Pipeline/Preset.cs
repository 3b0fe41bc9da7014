using System.Text.Json;
using Sparsity.Analysis;
using Sparsity.Training;
using Sparsity.Training.Model;

namespace Sparsity.Pipeline;

/// <summary>A named training recipe (models/presets/NAME.json): model shape, training options, tokenizer
/// size.</summary>
/// <param name="Description">What the preset is for.</param>
/// <param name="TokenizerVocabSize">Vocabulary size to learn for the default corpus.</param>
/// <param name="Model">Architecture; vocab_size comes from the tokenizer.</param>
/// <param name="Training">Training options.</param>
public sealed record Preset(string Description, int TokenizerVocabSize, ModelConfig Model, TrainOptions Training)
{
    /// <summary>Loads a preset by name (shipped beside the binary) or by path to a JSON file.</summary>
    public static Preset Load(string nameOrPath)
    {
        string path = File.Exists(nameOrPath)
            ? nameOrPath
            : Path.Combine(AppContext.BaseDirectory, "presets", nameOrPath + ".json");
        if (!File.Exists(path))
        {
            string shipped = Path.Combine(AppContext.BaseDirectory, "presets");
            IEnumerable<string?> known = Directory.Exists(shipped)
                ? Directory.GetFiles(shipped, "*.json").Select(Path.GetFileNameWithoutExtension).Order()
                : [];
            throw new UserInputException(
                $"Unknown preset '{nameOrPath}': use one of {string.Join(", ", known)} or a path to a preset JSON file."
            );
        }
        try
        {
            return JsonSerializer.Deserialize<Preset>(File.ReadAllText(path), ProjectJson.Options)
                ?? throw new UserInputException($"Preset {path} is empty.");
        }
        catch (JsonException e)
        {
            throw new UserInputException($"Preset {path} is not valid: {e.Message}");
        }
    }
}
