using System.Text.Json;

namespace Sparsity.Analysis;

/// <summary>The units kept in one layer.</summary>
/// <param name="Layer">Layer index (graph order of MLP sites).</param>
/// <param name="DFf">Units the layer has before pruning.</param>
/// <param name="Kept">Indices of the units kept, ascending.</param>
public sealed record LayerKeep(int Layer, int DFf, int[] Kept);

/// <summary>
/// Which MLP units to keep, per layer (mask.json). Layers not listed keep every unit.
/// <code>{ "rule": "dead units", "source": "stats of heldout.txt", "layers": [ { "layer": 0, "d_ff": 512, "kept": [0,
/// 1, 3] } ] }</code>
/// </summary>
/// <param name="Rule">How the units were chosen (e.g. "dead units", "frequency ≥ 0.01").</param>
/// <param name="Source">Where the statistics came from (model, corpus, tokens).</param>
/// <param name="Layers">Kept units per layer.</param>
public sealed record UnitMask(string Rule, string Source, IReadOnlyList<LayerKeep> Layers)
{
    /// <summary>Reads a mask.json; a missing or malformed file is an <see cref="UserInputException"/> naming
    /// it.</summary>
    public static UnitMask Load(string path)
    {
        if (!File.Exists(path))
            throw new UserInputException($"Mask {path} does not exist.");
        try
        {
            return JsonSerializer.Deserialize<UnitMask>(File.ReadAllText(path), ProjectJson.Options)
                ?? throw new UserInputException($"Mask {path} is empty.");
        }
        catch (JsonException e)
        {
            throw new UserInputException($"Mask {path} is not valid mask JSON: {e.Message}");
        }
    }

    /// <summary>Serialises to the documented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, ProjectJson.Options);

    /// <summary>
    /// Checks the mask against layers of the given sizes: every layer exists, sizes agree, indices are
    /// within 0..d_ff−1 without repeats, and no layer loses every unit. Throws <see cref="UserInputException"/>.
    /// </summary>
    public void Validate(IReadOnlyList<int> layerSizes)
    {
        foreach (var layer in Layers)
        {
            if (layer.Layer < 0 || layer.Layer >= layerSizes.Count)
                throw new UserInputException(
                    $"The mask names layer {layer.Layer}; the model has MLP layers 0..{layerSizes.Count - 1}."
                );
            int dFf = layerSizes[layer.Layer];
            if (layer.DFf != dFf)
                throw new UserInputException(
                    $"The mask says layer {layer.Layer} has {layer.DFf} units; the model's has {dFf}."
                );
            if (layer.Kept.Length == 0)
                throw new UserInputException($"The mask removes every unit of layer {layer.Layer}: keep at least one.");
            if (layer.Kept.Any(i => i < 0 || i >= dFf))
                throw new UserInputException(
                    $"The mask keeps unit {layer.Kept.First(i => i < 0 || i >= dFf)} of layer {layer.Layer}, which has units 0..{dFf - 1}."
                );
            if (layer.Kept.Distinct().Count() != layer.Kept.Length)
                throw new UserInputException($"The mask lists a unit of layer {layer.Layer} twice.");
        }
        if (Layers.Select(l => l.Layer).Distinct().Count() != Layers.Count)
            throw new UserInputException("The mask lists a layer twice.");
    }
}
