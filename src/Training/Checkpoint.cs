using System.Text.Json;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Training.Model;
using static TorchSharp.torch;

namespace Sparsity.Training;

/// <summary>What config.json of a checkpoint holds.</summary>
/// <param name="Model">Architecture.</param>
/// <param name="Training">Options the weights were trained with.</param>
/// <param name="Tokenizer">Tokenizer spec, file names relative to the checkpoint folder.</param>
/// <param name="Steps">Optimizer steps taken.</param>
/// <param name="Producer">Tool and version that wrote it.</param>
public sealed record CheckpointInfo(
    ModelConfig Model,
    TrainOptions Training,
    string Tokenizer,
    int Steps,
    string Producer
);

/// <summary>
/// A checkpoint folder: config.json, model.safetensors (tensor names as in <see cref="ReluTransformer"/>),
/// the tokenizer files, and the training logs sparsity.jsonl and unit_death.json.
/// </summary>
public static class Checkpoint
{
    /// <summary>Model and training configuration.</summary>
    public const string ConfigFile = "config.json";

    /// <summary>Weights in safetensors format.</summary>
    public const string WeightsFile = "model.safetensors";

    /// <summary>Sparsity and loss, one JSON object per tracked step.</summary>
    public const string LogFile = "sparsity.jsonl";

    /// <summary>Last active step and death step of every unit.</summary>
    public const string DeathFile = "unit_death.json";

    /// <summary>Writes config, weights and tokenizer files into <paramref name="dir"/> (which must exist).</summary>
    public static void Save(string dir, ReluTransformer model, TextTokenizer tokenizer, TrainOptions options, int steps)
    {
        foreach (string file in tokenizer.Files)
            File.Copy(file, Path.Combine(dir, Path.GetFileName(file)), overwrite: true);
        string kind = tokenizer.Spec.Split(':')[0];
        string spec =
            tokenizer.Files.Count == 0
                ? tokenizer.Spec
                : kind + ":" + string.Join(',', tokenizer.Files.Select(Path.GetFileName));
        var info = new CheckpointInfo(model.Config, options, spec, steps, Tool.Producer);
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), JsonSerializer.Serialize(info, ProjectJson.Options));
        SaveWeights(model, Path.Combine(dir, WeightsFile));
    }

    /// <summary>Loads a checkpoint folder written by <see cref="Save"/> (or by PyTorch with the same names).</summary>
    /// <exception cref="UserInputException">The folder is not a checkpoint or its weights do not fit its
    /// config.</exception>
    public static (ReluTransformer Model, TextTokenizer Tokenizer, CheckpointInfo Info) Load(string dir)
    {
        string configPath = Path.Combine(dir, ConfigFile);
        if (!File.Exists(configPath))
            throw new UserInputException(
                $"{dir} is not a checkpoint: {ConfigFile} is missing (train one with `train`)."
            );
        CheckpointInfo info;
        try
        {
            info = JsonSerializer.Deserialize<CheckpointInfo>(File.ReadAllText(configPath), ProjectJson.Options)!;
        }
        catch (JsonException e)
        {
            throw new UserInputException($"{configPath} is not a valid checkpoint config: {e.Message}");
        }
        if (info?.Model == null || info.Tokenizer == null)
            throw new UserInputException(
                $"{configPath} is neither a relu-sparsity checkpoint config nor a Hugging Face config (it has no model_type)."
            );
        var tokenizer = TextTokenizer.FromSpec(info.Tokenizer, dir);
        var model = new ReluTransformer(info.Model);
        LoadWeights(model, Path.Combine(dir, WeightsFile));
        return (model, tokenizer, info);
    }

    /// <summary>Writes every parameter and buffer under its state-dict name.</summary>
    public static void SaveWeights(ReluTransformer model, string path) =>
        Safetensors.Save(
            path,
            model
                .named_parameters()
                .Select(p => (p.name, (Tensor)p.parameter))
                .Concat(model.named_buffers().Select(b => (b.name, b.buffer))),
            new Dictionary<string, string> { ["producer"] = Tool.Producer }
        );

    /// <summary>
    /// Copies weights by name. Every parameter must be present with its shape; the unit_mask buffers
    /// are optional (absent = all units kept), so weights from PyTorch load as they are.
    /// </summary>
    public static void LoadWeights(ReluTransformer model, string path)
    {
        var tensors = Safetensors.Load(path);
        try
        {
            using var _ = no_grad();
            foreach (
                var (name, target) in model
                    .named_parameters()
                    .Select(p => (p.name, (Tensor)p.parameter))
                    .Concat(model.named_buffers().Select(b => (b.name, b.buffer)))
            )
            {
                if (!tensors.TryGetValue(name, out var source))
                {
                    if (name.EndsWith("unit_mask"))
                        continue;
                    throw new UserInputException(
                        $"{path} has no tensor {name}: the weights do not match the config's architecture."
                    );
                }
                if (!source.shape.SequenceEqual(target.shape))
                    throw new UserInputException(
                        $"{path}: {name} has shape [{string.Join(", ", source.shape)}], the config needs [{string.Join(", ", target.shape)}]."
                    );
                target.copy_(source);
            }
        }
        finally
        {
            foreach (var t in tensors.Values)
                t.Dispose();
        }
    }
}
