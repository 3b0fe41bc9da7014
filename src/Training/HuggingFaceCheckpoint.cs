using System.Text.Json;
using System.Text.Json.Nodes;
using Sparsity.Corpora;
using Sparsity.Training.Model;
using static TorchSharp.torch;

namespace Sparsity.Training;

/// <summary>
/// A Hugging Face checkpoint folder (config.json with a <c>model_type</c>, safetensors weights in one file or sharded
/// with model.safetensors.index.json) read as a <see cref="ReluTransformer"/>: OPT (ReLU fc1/fc2, learned positions
/// offset by 2) and Llama/Mistral (RMSNorm, rotary, grouped-query attention, gated ReLU MLP). Every header is checked
/// when the folder is opened; tensors are read one at a time, widened to float32, under this model's names.
/// </summary>
public sealed class HuggingFaceCheckpoint
{
    /// <summary>Model types this reader understands.</summary>
    public static readonly IReadOnlyList<string> ModelTypes = ["opt", "llama", "mistral"];

    // One of our tensors: the checkpoint tensors it is made of, and how (concatenated rows, a row range, or as is).
    sealed record Source(string[] Names, long[] Shape, long SkipRows = 0);

    readonly Dictionary<string, Safetensors.Entry> _entries;
    readonly Dictionary<string, Source> _sources;

    HuggingFaceCheckpoint(
        string folder,
        string modelType,
        ModelConfig config,
        Dictionary<string, Safetensors.Entry> entries,
        Dictionary<string, Source> sources,
        string note,
        JsonObject json
    )
    {
        Folder = folder;
        int eos = HuggingFaceConfig.TokenId(json, "eos_token_id") ?? 0;
        TokenIds = (
            eos,
            HuggingFaceConfig.TokenId(json, "bos_token_id") ?? eos,
            HuggingFaceConfig.TokenId(json, "pad_token_id") ?? eos
        );
        ModelType = modelType;
        Config = config;
        _entries = entries;
        _sources = sources;
        StoredDtypes = entries.Values.Select(e => e.Dtype).Distinct().Order().ToList();
        Note = note;
    }

    /// <summary>The folder.</summary>
    public string Folder { get; }

    /// <summary>config.json's model_type.</summary>
    public string ModelType { get; }

    /// <summary>The architecture as this project's model.</summary>
    public ModelConfig Config { get; }

    /// <summary>Safetensors dtypes of the weights (F32, F16, BF16); all are computed in float32.</summary>
    public IReadOnlyList<string> StoredDtypes { get; }

    /// <summary>What the reader changed or limited (e.g. a sliding window capping the context), or "".</summary>
    public string Note { get; }

    /// <summary>config.json's end-of-text, beginning-of-text and padding ids (the first of a list; missing ones fall
    /// back to end-of-text, then 0).</summary>
    public (int EndOfText, int BeginningOfText, int Padding) TokenIds { get; }

    /// <summary>Bytes of the weights once widened to float32.</summary>
    public long Float32Bytes => _sources.Values.Sum(s => s.Shape.Aggregate(4L, (a, d) => a * d));

    /// <summary>One line for model cards and command output.</summary>
    public string Description =>
        $"Hugging Face {ModelType} checkpoint {Path.GetFileName(Path.GetFullPath(Folder).TrimEnd('/'))} ({string.Join("/", StoredDtypes)} weights, computed in float32 on the CPU)"
        + (Note == "" ? "" : "; " + Note);

    /// <summary>True when <paramref name="folder"/> holds a config.json with a model_type (a Hugging Face folder, not
    /// one of ours).</summary>
    public static bool IsOne(string folder) => HuggingFaceConfig.ModelType(folder) != null;

    /// <summary>Reads config.json and every safetensors header of <paramref name="folder"/>; no weights are
    /// read.</summary>
    /// <exception cref="UserInputException">Unsupported model type, activation or variant; missing shard or tensor; a
    /// corrupt header; a shape that disagrees with the config.</exception>
    public static HuggingFaceCheckpoint Open(string folder)
    {
        string configPath = Path.Combine(folder, "config.json");
        JsonObject json;
        try
        {
            json =
                JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? throw new JsonException("not an object");
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            throw new UserInputException($"{configPath} is not a valid Hugging Face config: {e.Message}");
        }
        string type = Text(json, "model_type") ?? "";
        if (!ModelTypes.Contains(type))
            throw new UserInputException(
                $"{folder}: model_type '{type}' is not supported; relu-sparsity reads {string.Join(", ", ModelTypes)} checkpoints (or export the model to ONNX and use `instrument`)."
            );
        var entries = Weights(folder);
        var (config, sources, note) = type == "opt" ? Opt(json, folder, entries) : Llama(json, folder, type, entries);
        try
        {
            config.Validate();
        }
        catch (UserInputException e)
        {
            throw new UserInputException($"{configPath}: {e.Message}");
        }
        foreach (var (name, source) in sources)
        {
            foreach (string needed in source.Names)
                if (!entries.ContainsKey(needed))
                    throw new UserInputException(
                        $"{folder}: the weights have no tensor {needed} (needed for {name}); the checkpoint is incomplete or of another architecture."
                    );
            long[] stored = Stored(entries, source);
            if (!stored.SequenceEqual(source.Shape))
                throw new UserInputException(
                    $"{folder}: {string.Join(" + ", source.Names)} has shape [{string.Join(", ", stored)}], config.json implies [{string.Join(", ", source.Shape)}]; the weights do not match the config."
                );
        }
        return new HuggingFaceCheckpoint(folder, type, config, entries, sources, note, json);
    }

    /// <summary>Every tensor the model needs, by this project's name (see <see cref="ReluTransformer"/>).</summary>
    public IEnumerable<string> Names => _sources.Keys;

    /// <summary>The tensor our model calls <paramref name="name"/>, as float32 on the CPU; null when the model has none
    /// (unit_mask).</summary>
    public Tensor? Weight(string name)
    {
        if (!_sources.TryGetValue(name, out var source))
            return null;
        using var scope = NewDisposeScope();
        var parts = source.Names.Select(n => Safetensors.Read(_entries[n])).ToArray();
        var t = parts.Length == 1 ? parts[0] : cat(parts, dim: 0);
        if (source.SkipRows > 0)
            t = t.narrow(0, source.SkipRows, source.Shape[0]).contiguous();
        return t.MoveToOuterDisposeScope();
    }

    /// <summary>The whole model in memory (float32), for the parity check and TorchSharp use.</summary>
    public ReluTransformer Model()
    {
        var model = new ReluTransformer(Config);
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            using var source = Weight(name) ?? throw new InvalidOperationException($"No source for {name}.");
            p.copy_(source);
        }
        model.eval();
        return model;
    }

    static (ModelConfig, Dictionary<string, Source>, string) Opt(
        JsonObject j,
        string folder,
        Dictionary<string, Safetensors.Entry> entries
    )
    {
        string activation = Text(j, "activation_function") ?? "relu";
        RequireRelu(folder, activation, "activation_function");
        if (Flag(j, "do_layer_norm_before") == false)
            throw new UserInputException(
                $"{folder}: this OPT applies LayerNorm after each block (do_layer_norm_before false, as opt-350m); only pre-LayerNorm OPT is supported."
            );
        int d = Int(j, "hidden_size", folder),
            layers = Int(j, "num_hidden_layers", folder),
            heads = Int(j, "num_attention_heads", folder);
        int ff = Int(j, "ffn_dim", folder),
            vocab = Int(j, "vocab_size", folder),
            maxPos = Int(j, "max_position_embeddings", folder);
        if ((j["word_embed_proj_dim"] is JsonNode w ? w.GetValue<int>() : d) != d)
            throw new UserInputException(
                $"{folder}: word_embed_proj_dim ({j["word_embed_proj_dim"]}) differs from hidden_size ({d}): OPT's project_in/project_out layers are not supported."
            );
        if (Flag(j, "layer_norm_elementwise_affine") == false)
            throw new UserInputException(
                $"{folder}: layer_norm_elementwise_affine is false (LayerNorms without weights); only the usual OPT LayerNorm is supported."
            );
        if (Flag(j, "_remove_final_layer_norm") == true)
            throw new UserInputException(
                $"{folder}: _remove_final_layer_norm is true; OPT without its final LayerNorm is not supported."
            );
        bool bias = Flag(j, "enable_bias") ?? true,
            tied = Flag(j, "tie_word_embeddings") ?? true;
        string p = entries.ContainsKey("model.decoder.embed_tokens.weight") ? "model.decoder." : "decoder.";
        var config = new ModelConfig(
            layers,
            d,
            heads,
            ff,
            maxPos,
            vocab,
            TiedEmbeddings: tied,
            AttentionBias: bias,
            MlpBias: bias
        );
        var s = new Dictionary<string, Source>
        {
            ["wte.weight"] = new([p + "embed_tokens.weight"], [vocab, d]),
            ["wpe.weight"] = new([p + "embed_positions.weight"], [maxPos, d], SkipRows: 2), // OPT's positions start at 2
            ["ln_f.weight"] = new([p + "final_layer_norm.weight"], [d]),
            ["ln_f.bias"] = new([p + "final_layer_norm.bias"], [d]),
        };
        if (!tied)
            s["lm_head.weight"] = new(["lm_head.weight"], [vocab, d]);
        for (int i = 0; i < layers; i++)
        {
            string h = $"h.{i}.",
                l = $"{p}layers.{i}.";
            foreach (string part in new[] { "weight", "bias" })
            {
                s[h + "ln_1." + part] = new([l + "self_attn_layer_norm." + part], [d]);
                s[h + "ln_2." + part] = new([l + "final_layer_norm." + part], [d]);
            }
            foreach (string part in bias ? new[] { "weight", "bias" } : ["weight"])
            {
                long[] Shape(long rows, long cols) => part == "weight" ? [rows, cols] : [rows];
                s[h + "attn.c_attn." + part] = new(
                    [l + "self_attn.q_proj." + part, l + "self_attn.k_proj." + part, l + "self_attn.v_proj." + part],
                    Shape(3 * d, d)
                );
                s[h + "attn.c_proj." + part] = new([l + "self_attn.out_proj." + part], Shape(d, d));
                s[h + "mlp.up." + part] = new([l + "fc1." + part], Shape(ff, d));
                s[h + "mlp.down." + part] = new([l + "fc2." + part], Shape(d, ff));
            }
        }
        return (config, s, "");
    }

    static (ModelConfig, Dictionary<string, Source>, string) Llama(
        JsonObject j,
        string folder,
        string type,
        Dictionary<string, Safetensors.Entry> entries
    )
    {
        RequireRelu(folder, Text(j, "hidden_act") ?? "silu", "hidden_act");
        int d = Int(j, "hidden_size", folder),
            layers = Int(j, "num_hidden_layers", folder),
            heads = Int(j, "num_attention_heads", folder);
        int ff = Int(j, "intermediate_size", folder),
            vocab = Int(j, "vocab_size", folder),
            maxPos = Int(j, "max_position_embeddings", folder);
        int kv =
            j["num_key_value_heads"] is JsonNode k && k.GetValueKind() == JsonValueKind.Number
                ? k.GetValue<int>()
                : heads;
        int hs =
            j["head_dim"] is JsonNode hd && hd.GetValueKind() == JsonValueKind.Number ? hd.GetValue<int>() : d / heads;
        // Rotary base: rope_theta (transformers 4) or rope_parameters.rope_theta (5); scaled variants change the
        // angles.
        var rope = j["rope_parameters"] as JsonObject ?? j["rope_scaling"] as JsonObject;
        string ropeType = rope == null ? "default" : Text(rope, "rope_type") ?? Text(rope, "type") ?? "default";
        if (ropeType != "default")
            throw new UserInputException(
                $"{folder}: rotary scaling '{ropeType}' is not supported (only the default rotary embedding)."
            );
        double theta = (rope?["rope_theta"] ?? j["rope_theta"]) is JsonNode t ? t.GetValue<double>() : 10000.0;
        if (j["partial_rotary_factor"] is JsonNode prf && prf.GetValue<double>() != 1.0)
            throw new UserInputException(
                $"{folder}: partial_rotary_factor {prf} is not supported (rotary over whole heads only)."
            );
        double eps = j["rms_norm_eps"] is JsonNode e ? e.GetValue<double>() : 1e-6;
        bool attentionBias = Flag(j, "attention_bias") ?? false,
            mlpBias = Flag(j, "mlp_bias") ?? false;
        bool tied = Flag(j, "tie_word_embeddings") ?? false;
        // With a sliding window no longer than the context, attention is plain causal up to the window: cap the context
        // there.
        int seqLen = maxPos;
        string note = "";
        if (
            j["sliding_window"] is JsonNode sw
            && sw.GetValueKind() == JsonValueKind.Number
            && sw.GetValue<int>() < maxPos
            && Flag(j, "use_sliding_window") != false
        )
        {
            seqLen = sw.GetValue<int>();
            note = $"context capped at its sliding window of {seqLen} tokens (within it attention is plain causal)";
        }
        var config = new ModelConfig(
            layers,
            d,
            heads,
            ff,
            seqLen,
            vocab,
            TiedEmbeddings: tied,
            RmsNorm: true,
            NormEpsilon: eps,
            RopeTheta: theta,
            KvHeads: kv,
            HeadDim: hs == d / heads && d % heads == 0 ? 0 : hs,
            GatedMlp: true,
            AttentionBias: attentionBias,
            MlpBias: mlpBias
        );
        var s = new Dictionary<string, Source>
        {
            ["wte.weight"] = new(["model.embed_tokens.weight"], [vocab, d]),
            ["ln_f.weight"] = new(["model.norm.weight"], [d]),
        };
        if (!tied)
            s["lm_head.weight"] = new(["lm_head.weight"], [vocab, d]);
        for (int i = 0; i < layers; i++)
        {
            string h = $"h.{i}.",
                l = $"model.layers.{i}.";
            s[h + "ln_1.weight"] = new([l + "input_layernorm.weight"], [d]);
            s[h + "ln_2.weight"] = new([l + "post_attention_layernorm.weight"], [d]);
            foreach (string part in attentionBias ? new[] { "weight", "bias" } : ["weight"])
            {
                long[] Shape(long rows, long cols) => part == "weight" ? [rows, cols] : [rows];
                s[h + "attn.c_attn." + part] = new(
                    [l + "self_attn.q_proj." + part, l + "self_attn.k_proj." + part, l + "self_attn.v_proj." + part],
                    Shape((heads + 2 * kv) * hs, d)
                );
                s[h + "attn.c_proj." + part] = new([l + "self_attn.o_proj." + part], Shape(d, heads * hs));
            }
            foreach (string part in mlpBias ? new[] { "weight", "bias" } : ["weight"])
            {
                long[] Shape(long rows, long cols) => part == "weight" ? [rows, cols] : [rows];
                s[h + "mlp.gate." + part] = new([l + "mlp.gate_proj." + part], Shape(ff, d));
                s[h + "mlp.up." + part] = new([l + "mlp.up_proj." + part], Shape(ff, d));
                s[h + "mlp.down." + part] = new([l + "mlp.down_proj." + part], Shape(d, ff));
            }
        }
        return (config, s, note);
    }

    // The safetensors entries of the folder: model.safetensors, or the shards model.safetensors.index.json names.
    internal static Dictionary<string, Safetensors.Entry> Weights(string folder)
    {
        string single = Path.Combine(folder, "model.safetensors"),
            index = Path.Combine(folder, "model.safetensors.index.json");
        if (File.Exists(index))
        {
            JsonObject map;
            try
            {
                map =
                    JsonNode.Parse(File.ReadAllText(index))?["weight_map"] as JsonObject
                    ?? throw new JsonException("no weight_map object");
            }
            catch (JsonException e)
            {
                throw new UserInputException($"{index} is not a valid safetensors index: {e.Message}");
            }
            var entries = new Dictionary<string, Safetensors.Entry>();
            foreach (var shard in map.Select(kv => kv.Value!.GetValue<string>()).Distinct())
            {
                string path = Path.Combine(folder, shard);
                if (Path.IsPathRooted(shard) || shard.Contains(".."))
                    throw new UserInputException($"{index} names shard {shard} outside the folder.");
                if (!File.Exists(path))
                    throw new UserInputException(
                        $"{folder}: shard {shard} named by model.safetensors.index.json is missing; download the whole checkpoint."
                    );
                foreach (var (name, entry) in Safetensors.Header(path))
                    entries[name] = entry;
            }
            foreach (var (name, shard) in map)
                if (!entries.TryGetValue(name, out var e) || Path.GetFileName(e.Path) != shard!.GetValue<string>())
                    throw new UserInputException(
                        $"{folder}: model.safetensors.index.json puts {name} in {shard}, which does not hold it; the index and the shards disagree."
                    );
            return entries;
        }
        if (File.Exists(single))
            return Safetensors.Header(single);
        string found =
            Directory.GetFiles(folder, "*.bin").Length > 0
                ? " (it holds PyTorch .bin weights: re-save them with safe_serialization)"
                : "";
        throw new UserInputException(
            $"{folder} has neither model.safetensors nor model.safetensors.index.json{found}."
        );
    }

    static long[] Stored(Dictionary<string, Safetensors.Entry> entries, Source source)
    {
        var shapes = source.Names.Select(n => entries[n].Shape).ToList();
        if (shapes.Any(s => s.Length != shapes[0].Length || !s.Skip(1).SequenceEqual(shapes[0].Skip(1))))
            return shapes[0].Length == 0 ? [] : [-1];
        long[] stored = [shapes.Sum(s => s.Length == 0 ? 0 : s[0]), .. shapes[0].Skip(1)];
        if (source.SkipRows > 0 && stored[0] >= source.SkipRows + source.Shape[0])
            stored[0] = source.Shape[0]; // positions past the used rows
        return stored;
    }

    static void RequireRelu(string folder, string activation, string key)
    {
        if (activation != "relu")
            throw new UserInputException(
                $"{folder}: {key} is '{activation}', not relu: its MLP units are never exactly zero, so activation sparsity is not defined; relu-sparsity reads ReLU checkpoints only."
            );
    }

    static string? Text(JsonObject j, string key) =>
        j[key] is JsonNode n && n.GetValueKind() == JsonValueKind.String ? n.GetValue<string>() : null;

    static bool? Flag(JsonObject j, string key) =>
        j[key] is JsonNode n && n.GetValueKind() is JsonValueKind.True or JsonValueKind.False
            ? n.GetValue<bool>()
            : null;

    static int Int(JsonObject j, string key, string folder) =>
        j[key] is JsonNode n && n.GetValueKind() == JsonValueKind.Number
            ? n.GetValue<int>()
            : throw new UserInputException($"{folder}/config.json has no integer {key}.");
}
