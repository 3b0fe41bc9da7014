using System.Text.Json;
using System.Text.Json.Nodes;
using Onnx;
using Sparsity.Corpora;
using Sparsity.Export;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Training;

/// <summary>
/// A Hugging Face T5 v1.0 checkpoint (config.json with model_type t5 and feed_forward_proj relu; safetensors in
/// float32, float16 or bfloat16, widened to float32) written straight to ONNX as Optimum lays T5 out: an encoder graph
/// (input_ids, attention_mask → last_hidden_state) and a decoder graph (input_ids, encoder_attention_mask,
/// encoder_hidden_states → logits), opset 17, no TorchSharp model in between. The graphs follow transformers' T5:
/// RMS layer norms without bias, attention without score scaling plus a learned relative position bias (bucketed in
/// the graph: bidirectional in the encoder, causal in the decoder; computed by each stack's first layer and shared),
/// wi → ReLU → wo, the decoder's output scaled by d_model^−½ before the tied vocabulary projection.
/// </summary>
public sealed class T5Checkpoint
{
    readonly Dictionary<string, Safetensors.Entry> _entries;

    T5Checkpoint(
        string folder,
        Dictionary<string, Safetensors.Entry> entries,
        int dModel,
        int dKv,
        int dFf,
        int heads,
        int encoderLayers,
        int decoderLayers,
        int vocab,
        int buckets,
        int maxDistance,
        float epsilon,
        bool scaleOutput,
        bool tied
    )
    {
        Folder = folder;
        _entries = entries;
        (DModel, DKv, DFf, Heads, EncoderLayers, DecoderLayers, Vocab) = (
            dModel,
            dKv,
            dFf,
            heads,
            encoderLayers,
            decoderLayers,
            vocab
        );
        (Buckets, MaxDistance, Epsilon, ScaleOutput, Tied) = (buckets, maxDistance, epsilon, scaleOutput, tied);
    }

    /// <summary>The folder.</summary>
    public string Folder { get; }

    /// <summary>Sizes from config.json.</summary>
    public int DModel { get; }

    /// <summary>Size of each head.</summary>
    public int DKv { get; }

    /// <summary>MLP hidden units.</summary>
    public int DFf { get; }

    /// <summary>Attention heads.</summary>
    public int Heads { get; }

    /// <summary>Encoder layers.</summary>
    public int EncoderLayers { get; }

    /// <summary>Decoder layers.</summary>
    public int DecoderLayers { get; }

    /// <summary>Vocabulary size.</summary>
    public int Vocab { get; }

    /// <summary>Relative position buckets and the distance the last one starts at.</summary>
    public int Buckets { get; }

    /// <summary>Distance beyond which relative positions share the last bucket.</summary>
    public int MaxDistance { get; }

    /// <summary>Layer norm epsilon.</summary>
    public float Epsilon { get; }

    /// <summary>Whether the decoder's output is scaled by d_model^−½ before the vocabulary projection (tied
    /// embeddings).</summary>
    public bool ScaleOutput { get; }

    /// <summary>Whether the vocabulary projection is the shared embedding.</summary>
    public bool Tied { get; }

    /// <summary>Safetensors dtypes of the weights (widened to float32).</summary>
    public IReadOnlyList<string> StoredDtypes => _entries.Values.Select(e => e.Dtype).Distinct().Order().ToList();

    /// <summary>Whether <paramref name="folder"/> holds a config.json with model_type t5.</summary>
    public static bool IsOne(string folder) => HuggingFaceConfig.ModelType(folder) == "t5";

    /// <summary>Reads config.json and the safetensors headers; refuses gated (T5 v1.1, Flan-T5) and non-ReLU models by
    /// name.</summary>
    public static T5Checkpoint Open(string folder)
    {
        string configPath = Path.Combine(folder, "config.json");
        JsonObject j;
        try
        {
            j = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? throw new JsonException("not an object");
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            throw new UserInputException($"{configPath} is not a valid Hugging Face config: {e.Message}");
        }
        string proj =
            j["feed_forward_proj"]?.GetValueKind() == JsonValueKind.String
                ? j["feed_forward_proj"]!.GetValue<string>()
                : "relu";
        if (proj.StartsWith("gated-", StringComparison.Ordinal))
            throw new UserInputException(
                $"{folder}: feed_forward_proj is '{proj}' (T5 v1.1, Flan-T5, mT5): a gated {proj[6..].ToUpperInvariant()} MLP, whose units are never exactly zero; relu-sparsity reads ReLU T5 (v1.0: t5-small … t5-11b)."
            );
        if (proj != "relu")
            throw new UserInputException(
                $"{folder}: feed_forward_proj is '{proj}', not relu: its MLP units are never exactly zero; relu-sparsity reads ReLU checkpoints only."
            );
        int Int(string key, int? fallback = null) =>
            j[key]?.GetValueKind() == JsonValueKind.Number
                ? j[key]!.GetValue<int>()
                : fallback ?? throw new UserInputException($"{configPath} has no integer {key}.");
        bool Flag(string key, bool fallback) =>
            j[key]?.GetValueKind() is JsonValueKind.True or JsonValueKind.False ? j[key]!.GetValue<bool>() : fallback;
        int layers = Int("num_layers");
        bool tied = Flag("tie_word_embeddings", true);
        var t5 = new T5Checkpoint(
            folder,
            HuggingFaceCheckpoint.Weights(folder),
            Int("d_model"),
            Int("d_kv"),
            Int("d_ff"),
            Int("num_heads"),
            layers,
            Int("num_decoder_layers", layers),
            Int("vocab_size"),
            Int("relative_attention_num_buckets", 32),
            Int("relative_attention_max_distance", 128),
            j["layer_norm_epsilon"]?.GetValueKind() == JsonValueKind.Number
                ? j["layer_norm_epsilon"]!.GetValue<float>()
                : 1e-6f,
            Flag("scale_decoder_outputs", tied),
            tied
        );
        foreach (var (name, shape) in t5.Expected())
        {
            var entry = t5.Entry(name);
            if (!entry.Shape.SequenceEqual(shape))
                throw new UserInputException(
                    $"{folder}: {entry.Name} has shape [{string.Join(", ", entry.Shape)}], config.json implies [{string.Join(", ", shape)}]; the weights do not match the config."
                );
        }
        return t5;
    }

    // Every tensor the graphs read, with the shape config.json implies.
    IEnumerable<(string Name, long[] Shape)> Expected()
    {
        long inner = Heads * DKv;
        yield return ("shared.weight", [Vocab, DModel]);
        if (!Tied)
            yield return ("lm_head.weight", [Vocab, DModel]);
        foreach (var (stack, count) in new[] { ("encoder", EncoderLayers), ("decoder", DecoderLayers) })
        {
            yield return ($"{stack}.final_layer_norm.weight", [DModel]);
            yield return ($"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", [Buckets, Heads]);
            for (int i = 0; i < count; i++)
            {
                string b = $"{stack}.block.{i}.layer";
                foreach (
                    string attention in stack == "encoder"
                        ? ["0.SelfAttention"]
                        : new[] { "0.SelfAttention", "1.EncDecAttention" }
                )
                {
                    foreach (string p in new[] { "q", "k", "v" })
                        yield return ($"{b}.{attention}.{p}.weight", [inner, DModel]);
                    yield return ($"{b}.{attention}.o.weight", [DModel, inner]);
                }
                int mlp = stack == "encoder" ? 1 : 2;
                for (int l = 0; l <= mlp; l++)
                    yield return ($"{b}.{l}.layer_norm.weight", [DModel]);
                yield return ($"{b}.{mlp}.DenseReluDense.wi.weight", [DFf, DModel]);
                yield return ($"{b}.{mlp}.DenseReluDense.wo.weight", [DModel, DFf]);
            }
        }
    }

    // A tensor by its transformers name; the embedding may be stored under a stack's name only.
    Safetensors.Entry Entry(string name)
    {
        if (_entries.TryGetValue(name, out var e))
            return e;
        if (
            name == "shared.weight"
            && (
                _entries.TryGetValue("encoder.embed_tokens.weight", out e)
                || _entries.TryGetValue("decoder.embed_tokens.weight", out e)
            )
        )
            return e;
        throw new UserInputException(
            $"{Folder}: the weights have no tensor {name}; the checkpoint is incomplete or not a T5 ForConditionalGeneration model."
        );
    }

    /// <summary>The encoder graph: input_ids, attention_mask [batch, encoder_sequence_length] →
    /// last_hidden_state.</summary>
    public ModelProto Encoder(string producer)
    {
        var graph = new GraphProto { Name = "t5_encoder" };
        var g = new GraphWriter(graph);
        graph.Input.Add(OnnxGraph.Value("input_ids", DataType.Int64, "batch_size", "encoder_sequence_length"));
        graph.Input.Add(OnnxGraph.Value("attention_mask", DataType.Int64, "batch_size", "encoder_sequence_length"));
        var w = new Weights(this, g);
        string x = g.Op(
            "Gather",
            "encoder/embed_tokens",
            [w.Plain("shared.weight"), "input_ids"],
            OnnxGraph.Int("axis", 0)
        );
        string length = Length(g, "input_ids", "encoder/length");
        string bias = g.Op(
            "Add",
            "encoder/bias",
            [
                PositionBias(g, w, "encoder", length, length, bidirectional: true),
                KeyMask(g, "attention_mask", "encoder"),
            ]
        );
        for (int i = 0; i < EncoderLayers; i++)
        {
            string b = $"encoder.block.{i}.layer";
            x = g.Op(
                "Add",
                b + ".0/residual",
                [x, Attention(g, w, $"{b}.0.SelfAttention", Norm(g, w, x, $"{b}.0.layer_norm.weight"), null, bias)]
            );
            x = g.Op(
                "Add",
                b + ".1/residual",
                [x, Mlp(g, w, $"{b}.1.DenseReluDense", Norm(g, w, x, $"{b}.1.layer_norm.weight"))]
            );
        }
        g.Named("Identity", "last_hidden_state", [Norm(g, w, x, "encoder.final_layer_norm.weight")]);
        graph.Output.Add(
            OnnxGraph.Value("last_hidden_state", DataType.Float, "batch_size", "encoder_sequence_length", DModel)
        );
        return OnnxGraph.Model(
            graph,
            producer,
            17,
            $"T5 encoder from {Path.GetFileName(Path.GetFullPath(Folder).TrimEnd('/'))}"
        );
    }

    /// <summary>The decoder graph: input_ids, encoder_attention_mask, encoder_hidden_states → logits (no
    /// past).</summary>
    public ModelProto Decoder(string producer)
    {
        var graph = new GraphProto { Name = "t5_decoder" };
        var g = new GraphWriter(graph);
        graph.Input.Add(OnnxGraph.Value("input_ids", DataType.Int64, "batch_size", "decoder_sequence_length"));
        graph.Input.Add(
            OnnxGraph.Value("encoder_attention_mask", DataType.Int64, "batch_size", "encoder_sequence_length")
        );
        graph.Input.Add(
            OnnxGraph.Value("encoder_hidden_states", DataType.Float, "batch_size", "encoder_sequence_length", DModel)
        );
        var w = new Weights(this, g);
        string shared = w.Plain("shared.weight");
        string x = g.Op("Gather", "decoder/embed_tokens", [shared, "input_ids"], OnnxGraph.Int("axis", 0));
        string length = Length(g, "input_ids", "decoder/length");
        // Causal: key k is visible from query q when k ≤ q (the pad positions of a right-padded target only follow).
        string positions = g.Op(
            "Range",
            "decoder/positions",
            [g.Longs("decoder/zero", [], 0), length, g.Longs("decoder/one", [], 1)]
        );
        string later = g.Op(
            "Greater",
            "decoder/later",
            [
                g.Op("Unsqueeze", "decoder/keys", [positions, g.Longs("decoder/axis0", [1], 0)]),
                g.Op("Unsqueeze", "decoder/queries", [positions, g.Longs("decoder/axis1", [1], 1)]),
            ]
        );
        string causal = g.Op(
            "Mul",
            "decoder/causal",
            [
                g.Op("Cast", "decoder/later_f", [later], OnnxGraph.Int("to", (long)DataType.Float)),
                g.Scalar("decoder/min", float.MinValue),
            ]
        );
        string selfBias = g.Op(
            "Add",
            "decoder/bias",
            [PositionBias(g, w, "decoder", length, length, bidirectional: false), causal]
        );
        string crossBias = KeyMask(g, "encoder_attention_mask", "decoder/cross");
        for (int i = 0; i < DecoderLayers; i++)
        {
            string b = $"decoder.block.{i}.layer";
            x = g.Op(
                "Add",
                b + ".0/residual",
                [x, Attention(g, w, $"{b}.0.SelfAttention", Norm(g, w, x, $"{b}.0.layer_norm.weight"), null, selfBias)]
            );
            x = g.Op(
                "Add",
                b + ".1/residual",
                [
                    x,
                    Attention(
                        g,
                        w,
                        $"{b}.1.EncDecAttention",
                        Norm(g, w, x, $"{b}.1.layer_norm.weight"),
                        "encoder_hidden_states",
                        crossBias
                    ),
                ]
            );
            x = g.Op(
                "Add",
                b + ".2/residual",
                [x, Mlp(g, w, $"{b}.2.DenseReluDense", Norm(g, w, x, $"{b}.2.layer_norm.weight"))]
            );
        }
        string h = Norm(g, w, x, "decoder.final_layer_norm.weight");
        if (ScaleOutput)
            h = g.Op("Mul", "decoder/scaled", [h, g.Scalar("decoder/scale", 1f / MathF.Sqrt(DModel))]);
        g.Named("MatMul", "logits", [h, w.Transposed(Tied ? "shared.weight" : "lm_head.weight")]);
        graph.Output.Add(OnnxGraph.Value("logits", DataType.Float, "batch_size", "decoder_sequence_length", Vocab));
        return OnnxGraph.Model(
            graph,
            producer,
            17,
            $"T5 decoder from {Path.GetFileName(Path.GetFullPath(Folder).TrimEnd('/'))}"
        );
    }

    // Initializers from the checkpoint, each read once: as stored ([out, in] for linear layers), or transposed for
    // MatMul.
    sealed class Weights(T5Checkpoint t5, GraphWriter g)
    {
        readonly Dictionary<string, string> _written = [];

        public string Plain(string name) => Add(name, name, transpose: false);

        public string Transposed(string name) => Add(name + ".T", name, transpose: true);

        string Add(string key, string name, bool transpose)
        {
            if (_written.TryGetValue(key, out var written))
                return written;
            var entry = t5.Entry(name);
            float[] values = Safetensors.ReadFloats(entry);
            long[] dims = entry.Shape;
            if (transpose)
            {
                var t = new float[values.Length];
                long rows = dims[0],
                    cols = dims[1];
                for (long r = 0; r < rows; r++)
                for (long c = 0; c < cols; c++)
                    t[c * rows + r] = values[r * cols + c];
                (values, dims) = (t, [cols, rows]);
            }
            return _written[key] = g.Floats(key, dims, values);
        }
    }

    static string Length(GraphWriter g, string ids, string hint) =>
        g.Op(
            "Squeeze",
            hint,
            [
                g.Op(
                    "Gather",
                    hint + "/dim",
                    [g.Op("Shape", hint + "/shape", [ids]), g.Longs(hint + "/axis", [1], 1)],
                    OnnxGraph.Int("axis", 0)
                ),
                g.Longs(hint + "/squeeze", [1], 0),
            ]
        );

    // T5LayerNorm: x · (mean(x²) + ε)^−½ · weight; no mean subtracted, no bias.
    string Norm(GraphWriter g, Weights w, string x, string weight)
    {
        string hint = weight[..^".weight".Length];
        string variance = g.Op(
            "ReduceMean",
            hint + "/variance",
            [g.Op("Mul", hint + "/square", [x, x])],
            OnnxGraph.Ints("axes", -1),
            OnnxGraph.Int("keepdims", 1)
        );
        string inverse = g.Op(
            "Reciprocal",
            hint + "/rsqrt",
            [
                g.Op(
                    "Sqrt",
                    hint + "/std",
                    [g.Op("Add", hint + "/eps", [variance, g.Scalar(hint + "/epsilon", Epsilon)])]
                ),
            ]
        );
        return g.Op("Mul", hint, [w.Plain(weight), g.Op("Mul", hint + "/normed", [x, inverse])]);
    }

    string Mlp(GraphWriter g, Weights w, string prefix, string x) =>
        g.Op(
            "MatMul",
            prefix + ".wo",
            [
                g.Op(
                    "Relu",
                    prefix + ".act",
                    [g.Op("MatMul", prefix + ".wi", [x, w.Transposed(prefix + ".wi.weight")])]
                ),
                w.Transposed(prefix + ".wo.weight"),
            ]
        );

    // Multi-head attention without score scaling; keys and values from `memory` (cross-attention) or x itself; bias
    // [B|1, H, Tq, Tk].
    string Attention(GraphWriter g, Weights w, string prefix, string x, string? memory, string bias)
    {
        string Heads4(string input, string name, long[] perm) =>
            g.Op(
                "Transpose",
                $"{prefix}.{name}/heads",
                [
                    g.Op(
                        "Reshape",
                        $"{prefix}.{name}/split",
                        [
                            g.Op("MatMul", $"{prefix}.{name}", [input, w.Transposed($"{prefix}.{name}.weight")]),
                            g.Longs($"{prefix}.{name}/shape", [4], 0, 0, Heads, DKv),
                        ]
                    ),
                ],
                OnnxGraph.Ints("perm", perm)
            );
        string q = Heads4(x, "q", [0, 2, 1, 3]),
            k = Heads4(memory ?? x, "k", [0, 2, 3, 1]),
            v = Heads4(memory ?? x, "v", [0, 2, 1, 3]);
        string scores = g.Op("Add", prefix + "/scores", [g.Op("MatMul", prefix + "/qk", [q, k]), bias]);
        string context = g.Op(
            "MatMul",
            prefix + "/context",
            [g.Op("Softmax", prefix + "/probs", [scores], OnnxGraph.Int("axis", -1)), v]
        );
        string merged = g.Op(
            "Reshape",
            prefix + "/merged",
            [
                g.Op("Transpose", prefix + "/tokens", [context], OnnxGraph.Ints("perm", 0, 2, 1, 3)),
                g.Longs(prefix + "/merged_shape", [3], 0, 0, Heads * DKv),
            ]
        );
        return g.Op("MatMul", prefix + ".o", [merged, w.Transposed(prefix + ".o.weight")]);
    }

    // (1 − mask) · float.MinValue over the keys: [B, 1, 1, Tk].
    static string KeyMask(GraphWriter g, string mask, string hint)
    {
        string masked = g.Op(
            "Sub",
            hint + "/masked",
            [
                g.Scalar(hint + "/one", 1f),
                g.Op("Cast", hint + "/mask_f", [mask], OnnxGraph.Int("to", (long)DataType.Float)),
            ]
        );
        return g.Op(
            "Unsqueeze",
            hint + "/mask4",
            [
                g.Op("Mul", hint + "/mask_min", [masked, g.Scalar(hint + "/min", float.MinValue)]),
                g.Longs(hint + "/axes", [2], 1, 2),
            ]
        );
    }

    // transformers' relative position buckets (T5Attention._relative_position_bucket) in the graph, then the table: [1,
    // H, Tq, Tk].
    string PositionBias(GraphWriter g, Weights w, string stack, string queries, string keys, bool bidirectional)
    {
        string p = stack + "/position";
        string Range(string n, string name) =>
            g.Op("Range", $"{p}/{name}", [g.Longs($"{p}/{name}_zero", [], 0), n, g.Longs($"{p}/{name}_one", [], 1)]);
        string relative = g.Op(
            "Sub",
            p + "/relative",
            [
                g.Op("Unsqueeze", p + "/k", [Range(keys, "keys"), g.Longs(p + "/axis0", [1], 0)]),
                g.Op("Unsqueeze", p + "/q", [Range(queries, "queries"), g.Longs(p + "/axis1", [1], 1)]),
            ]
        ); // memory − query, [Tq, Tk]
        long buckets = Buckets;
        string? side = null;
        if (bidirectional)
        {
            buckets /= 2;
            side = g.Op(
                "Mul",
                p + "/side",
                [
                    g.Op(
                        "Cast",
                        p + "/later",
                        [g.Op("Greater", p + "/after", [relative, g.Longs(p + "/zero", [], 0)])],
                        OnnxGraph.Int("to", (long)DataType.Int64)
                    ),
                    g.Longs(p + "/half", [], buckets),
                ]
            );
            relative = g.Op("Abs", p + "/distance", [relative]);
        }
        else
            relative = g.Op(
                "Neg",
                p + "/distance",
                [g.Op("Min", p + "/past", [relative, g.Longs(p + "/none", [], 0)])]
            );
        long exact = buckets / 2;
        // Large distances: exact + ⌊log(d / exact) / log(max_distance / exact) · (buckets − exact)⌋, capped at the last
        // bucket.
        string d = g.Op(
            "Cast",
            p + "/distance_f",
            [g.Op("Max", p + "/at_least_one", [relative, g.Longs(p + "/one", [], 1)])],
            OnnxGraph.Int("to", (long)DataType.Float)
        );
        string scaled = g.Op(
            "Mul",
            p + "/scaled",
            [
                g.Op(
                    "Div",
                    p + "/log_ratio",
                    [
                        g.Op("Log", p + "/log", [g.Op("Div", p + "/ratio", [d, g.Scalar(p + "/exact_f", exact)])]),
                        g.Scalar(p + "/log_max", (float)Math.Log((double)MaxDistance / exact)),
                    ]
                ),
                g.Scalar(p + "/span", buckets - exact),
            ]
        );
        string large = g.Op(
            "Min",
            p + "/large_capped",
            [
                g.Op(
                    "Add",
                    p + "/large",
                    [
                        g.Longs(p + "/exact", [], exact),
                        g.Op("Cast", p + "/steps", [scaled], OnnxGraph.Int("to", (long)DataType.Int64)),
                    ]
                ),
                g.Longs(p + "/last", [], buckets - 1),
            ]
        );
        string bucket = g.Op(
            "Where",
            p + "/bucket",
            [g.Op("Less", p + "/small", [relative, g.Longs(p + "/exact_n", [], exact)]), relative, large]
        );
        if (side != null)
            bucket = g.Op("Add", p + "/bucket_side", [bucket, side]);
        string values = g.Op(
            "Gather",
            p + "/values",
            [w.Plain($"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"), bucket],
            OnnxGraph.Int("axis", 0)
        );
        return g.Op(
            "Unsqueeze",
            p + "/bias",
            [
                g.Op("Transpose", p + "/per_head", [values], OnnxGraph.Ints("perm", 2, 0, 1)),
                g.Longs(p + "/batch", [1], 0),
            ]
        );
    }
}
