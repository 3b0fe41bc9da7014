using System.Text.Json;
using System.Text.Json.Nodes;
using Sparsity.Corpora;
using Sparsity.Training.Model;

namespace Sparsity.Pipeline.Exporting;

/// <summary>
/// A deployable folder for ONNX Runtime GenAI beside a graph with a key/value cache: <c>genai_config.json</c> (its
/// generic
/// <c>decoder</c> model type, our input and output names with <c>%d</c> layer patterns, heads, key/value heads, head
/// size, context, vocabulary, end-of-text and padding ids, greedy search by default) and the tokenizer files GenAI
/// reads (a Hugging Face <c>tokenizer.json</c> with <c>tokenizer_config.json</c>).
/// </summary>
public static class GenAiFolder
{
    /// <summary>The GenAI configuration file.</summary>
    public const string ConfigFile = "genai_config.json";

    /// <summary>Tokenizer files of a Hugging Face folder that travel with a deployable folder.</summary>
    public static readonly IReadOnlyList<string> TokenizerFiles =
    [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
    ];

    /// <summary>Token ids GenAI needs: end of text (stops generation), beginning of text and padding.</summary>
    public sealed record SpecialIds(int EndOfText, int BeginningOfText, int Padding);

    /// <summary>
    /// Writes genai_config.json for the model <paramref name="c"/> (graph file <paramref name="graphFile"/>) and the
    /// tokenizer files into <paramref name="dir"/>. Returns a line saying what tokenizer GenAI got (or why none).
    /// </summary>
    public static string Write(string dir, string graphFile, ModelConfig c, SpecialIds ids, TokenizerSource tokenizer)
    {
        var decoder = new JsonObject
        {
            ["session_options"] = new JsonObject
            {
                ["log_id"] = "onnxruntime-genai",
                ["provider_options"] = new JsonArray(),
            },
            ["filename"] = graphFile,
            ["head_size"] = c.HeadSize,
            ["hidden_size"] = c.DModel,
            ["num_attention_heads"] = c.Heads,
            ["num_hidden_layers"] = c.Layers,
            ["num_key_value_heads"] = c.KeyValueHeads,
            ["inputs"] = new JsonObject
            {
                ["input_ids"] = "input_ids",
                ["attention_mask"] = "attention_mask",
                ["past_key_names"] = "past_key_values.%d.key",
                ["past_value_names"] = "past_key_values.%d.value",
            },
            ["outputs"] = new JsonObject
            {
                ["logits"] = "logits",
                ["present_key_names"] = "present.%d.key",
                ["present_value_names"] = "present.%d.value",
            },
        };
        var config = new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["bos_token_id"] = ids.BeginningOfText,
                ["context_length"] = c.SeqLen,
                ["decoder"] = decoder,
                ["eos_token_id"] = ids.EndOfText,
                ["pad_token_id"] = ids.Padding,
                ["type"] = "decoder",
                ["vocab_size"] = c.VocabSize,
            },
            ["search"] = new JsonObject
            {
                ["do_sample"] = false,
                ["max_length"] = c.SeqLen,
                ["min_length"] = 0,
                ["num_beams"] = 1,
                ["num_return_sequences"] = 1,
                ["past_present_share_buffer"] = false,
                ["repetition_penalty"] = 1.0,
                ["temperature"] = 1.0,
                ["top_k"] = 1,
                ["top_p"] = 1.0,
            },
        };
        AtomicFile.WriteAllText(
            Path.Combine(dir, ConfigFile),
            config.ToJsonString(new JsonSerializerOptions { WriteIndented = true })
        );
        return tokenizer.WriteInto(dir);
    }
}

/// <summary>Carries a GenAI folder's configuration and tokenizer files over to a variant of its model.</summary>
public static class GenAiFiles
{
    /// <summary>
    /// When <paramref name="sourceModel"/> sits in a GenAI folder (genai_config.json beside it), copies that
    /// configuration (its graph file renamed to model.onnx) and the tokenizer files <paramref name="dir"/> lacks;
    /// returns whether it did.
    /// </summary>
    public static bool CopyBeside(string sourceModel, string dir)
    {
        string from = Path.GetDirectoryName(Path.GetFullPath(sourceModel))!;
        string config = Path.Combine(from, GenAiFolder.ConfigFile);
        if (!File.Exists(config))
            return false;
        var json = JsonNode.Parse(File.ReadAllText(config))!;
        if (json["model"]?["decoder"] is JsonObject decoder)
            decoder["filename"] = "model.onnx";
        AtomicFile.WriteAllText(
            Path.Combine(dir, GenAiFolder.ConfigFile),
            json.ToJsonString(new JsonSerializerOptions { WriteIndented = true })
        );
        foreach (
            string f in GenAiFolder.TokenizerFiles.Where(f =>
                File.Exists(Path.Combine(from, f)) && !File.Exists(Path.Combine(dir, f))
            )
        )
            File.Copy(Path.Combine(from, f), Path.Combine(dir, f));
        return true;
    }
}

/// <summary>Where a deployable folder's tokenizer files come from: a Hugging Face folder's own files, or a byte-level
/// BPE spec of ours.</summary>
public sealed record TokenizerSource(string? HuggingFaceFolder, TextTokenizer? Ours)
{
    /// <summary>Copies or writes the tokenizer files; returns what GenAI will read.</summary>
    public string WriteInto(string dir)
    {
        if (HuggingFaceFolder != null)
        {
            var copied = GenAiFolder
                .TokenizerFiles.Where(f => File.Exists(Path.Combine(HuggingFaceFolder, f)))
                .ToList();
            foreach (string f in copied)
                File.Copy(Path.Combine(HuggingFaceFolder, f), Path.Combine(dir, f), overwrite: true);
            return copied.Contains("tokenizer.json")
                ? $"tokenizer: the checkpoint's own ({string.Join(", ", copied)})"
                : $"tokenizer: {string.Join(", ", copied)} copied; ONNX Runtime GenAI reads tokenizer.json, which the checkpoint lacks: feed it token ids";
        }
        if (Ours is { } t && t.Spec.StartsWith("bpe:", StringComparison.Ordinal) && t.Files.Count == 2)
        {
            WriteByteLevelBpe(dir, t.Files[0], t.Files[1], t.EndOfTextId);
            return "tokenizer: tokenizer.json (byte-level BPE, GPT2Tokenizer) written from vocab.json and merges.txt";
        }
        return $"tokenizer: none written ({Ours?.Spec ?? "unknown"} has no Hugging Face form here): feed ONNX Runtime GenAI token ids";
    }

    // tokenizer.json in the Hugging Face tokenizers format for a GPT-2 style byte-level BPE, and the config naming its
    // class.
    static void WriteByteLevelBpe(string dir, string vocabPath, string mergesPath, int? endOfText)
    {
        var vocab = JsonNode.Parse(File.ReadAllText(vocabPath))!.AsObject();
        var merges = new JsonArray(
            File.ReadLines(mergesPath)
                .Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal))
                .Select(l => (JsonNode?)JsonValue.Create(l))
                .ToArray()
        );
        JsonObject ByteLevel(bool prefixSpace, bool trim) =>
            new()
            {
                ["type"] = "ByteLevel",
                ["add_prefix_space"] = prefixSpace,
                ["trim_offsets"] = trim,
                ["use_regex"] = true,
            };
        var added = new JsonArray();
        string? eot = endOfText is int id ? vocab.First(kv => kv.Value!.GetValue<int>() == id).Key : null;
        if (eot != null)
            added.Add(
                new JsonObject
                {
                    ["id"] = endOfText,
                    ["content"] = eot,
                    ["single_word"] = false,
                    ["lstrip"] = false,
                    ["rstrip"] = false,
                    ["normalized"] = false,
                    ["special"] = true,
                }
            );
        var json = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = ByteLevel(false, true),
            ["post_processor"] = ByteLevel(true, false),
            ["decoder"] = ByteLevel(true, true),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = null,
                ["continuing_subword_prefix"] = "",
                ["end_of_word_suffix"] = "",
                ["fuse_unk"] = false,
                ["byte_fallback"] = false,
                ["ignore_merges"] = false,
                ["vocab"] = vocab.DeepClone(),
                ["merges"] = merges,
            },
        };
        AtomicFile.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
        var config = new JsonObject
        {
            ["tokenizer_class"] = "GPT2Tokenizer",
            ["add_prefix_space"] = false,
            ["model_max_length"] = 1_000_000,
        };
        if (eot != null)
        {
            config["eos_token"] = eot;
            config["bos_token"] = eot;
            config["unk_token"] = eot;
        }
        AtomicFile.WriteAllText(
            Path.Combine(dir, "tokenizer_config.json"),
            config.ToJsonString(new JsonSerializerOptions { WriteIndented = true })
        );
        File.Copy(vocabPath, Path.Combine(dir, "vocab.json"), overwrite: true);
        File.Copy(mergesPath, Path.Combine(dir, "merges.txt"), overwrite: true);
    }
}
