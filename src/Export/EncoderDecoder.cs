using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Sparsity.Export;

/// <summary>Which stack of an encoder-decoder model (the T5 family) an MLP sits in; <c>None</c> in every other
/// graph.</summary>
public enum ModelStack
{
    /// <summary>A decoder-only or encoder-only graph: one stack, no name.</summary>
    None,

    /// <summary>The encoder, which reads the source.</summary>
    Encoder,

    /// <summary>The decoder, which reads the (shifted) target and the encoder's output.</summary>
    Decoder,
}

/// <summary>
/// Encoder-decoder graphs as users bring them: one graph whose inputs include <c>decoder_input_ids</c> (torch.onnx of
/// <c>T5ForConditionalGeneration</c>), or Optimum's folder (<c>encoder_model.onnx</c> → <c>last_hidden_state</c>,
/// <c>decoder_model.onnx</c> reading it as <c>encoder_hidden_states</c>), joined here into one graph in memory so the
/// encoder's output never leaves the device. A bound pair graph (<see cref="GraphInputs.Bind"/>) takes one row per
/// pair:
/// <c>input_ids</c> [batch, 2T] holds the source's T ids then the decoder's T input ids, <c>attention_mask</c> the
/// source's mask then the target's, so the one runner and the one batch stream serve both kinds of model.
/// </summary>
public static class EncoderDecoder
{
    /// <summary>The decoder's token input (the target shifted right, starting with the decoder start id).</summary>
    public const string DecoderInput = "decoder_input_ids";

    /// <summary>The decoder's padding mask, fed the target's mask where a graph reads one.</summary>
    public const string DecoderMaskInput = "decoder_attention_mask";

    /// <summary>Optimum's file names.</summary>
    public const string EncoderFile = "encoder_model.onnx",
        DecoderFile = "decoder_model.onnx",
        MergedDecoderFile = "decoder_model_merged.onnx",
        DecoderWithPastFile = "decoder_with_past_model.onnx";

    /// <summary>Tensors of a bound pair graph: the halves of its two inputs.</summary>
    public const string SourceIds = "pair/source_ids",
        TargetInputIds = "pair/decoder_input_ids",
        SourceMask = "pair/source_mask",
        TargetMask = "pair/target_mask";

    /// <summary>Whether <paramref name="model"/> is an encoder-decoder graph (it takes
    /// <c>decoder_input_ids</c>).</summary>
    public static bool Is(ModelProto model) => GraphInputs.Required(model).Any(i => i.Name == DecoderInput);

    /// <summary>Whether <paramref name="model"/> is a bound pair graph (inputs [batch, 2T],
    /// <see cref="GraphInputs.Bind"/>).</summary>
    public static bool IsBoundPairs(ModelProto model) => model.Graph.Node.Any(n => n.Output.Contains(TargetMask));

    /// <summary>Whether <paramref name="path"/> is an Optimum-style encoder-decoder folder.</summary>
    public static bool IsFolder(string path) =>
        Directory.Exists(path)
        && File.Exists(Path.Combine(path, EncoderFile))
        && (File.Exists(Path.Combine(path, DecoderFile)) || File.Exists(Path.Combine(path, MergedDecoderFile)));

    /// <summary>The files of an Optimum folder that hold the model analysed: the encoder and the decoder without past
    /// (else the merged one).</summary>
    public static IReadOnlyList<string> FolderGraphs(string dir) =>
        [
            Path.Combine(dir, EncoderFile),
            Path.Combine(dir, File.Exists(Path.Combine(dir, DecoderFile)) ? DecoderFile : MergedDecoderFile),
        ];

    /// <summary>
    /// An Optimum folder's encoder and decoder (without past) as one graph: inputs input_ids, attention_mask and
    /// decoder_input_ids, output logits; the decoder's presents are dropped (analysis feeds no past).
    /// </summary>
    public static ModelProto LoadFolder(string dir) =>
        Join(OnnxGraph.Load(Path.Combine(dir, EncoderFile)), LoadDecoder(dir), dir);

    /// <summary>
    /// The folder's decoder without past: decoder_model.onnx, else decoder_model_merged.onnx with its If on
    /// use_cache_branch folded for false (<see cref="FoldMergedDecoder"/>).
    /// </summary>
    public static ModelProto LoadDecoder(string dir) =>
        File.Exists(Path.Combine(dir, DecoderFile))
            ? OnnxGraph.Load(Path.Combine(dir, DecoderFile))
            : FoldMergedDecoder(
                OnnxGraph.Load(Path.Combine(dir, MergedDecoderFile)),
                Path.Combine(dir, MergedDecoderFile)
            );

    /// <summary>The input of Optimum's merged decoder that chooses the branch with a cache.</summary>
    public const string UseCacheBranch = "use_cache_branch";

    /// <summary>
    /// Optimum's merged decoder as its branch without a cache: the If on <see cref="UseCacheBranch"/> replaced by its
    /// else branch (its nodes and initializers in the graph, its outputs under the If's names), then the inputs nothing
    /// reads any more (use_cache_branch, past_key_values.*) removed. Any other form is refused by name.
    /// </summary>
    public static ModelProto FoldMergedDecoder(ModelProto merged, string where)
    {
        var result = merged.Clone();
        var graph = result.Graph;
        var branches = graph
            .Node.Where(n => n.OpType == "If" && n.Input.Count == 1 && n.Input[0] == UseCacheBranch)
            .ToList();
        if (branches.Count != 1 || graph.Node.Any(n => n.OpType == "If" && !branches.Contains(n)))
            throw new UserInputException(
                $"{where} is not an Optimum merged decoder (one If on {UseCacheBranch}, no other If): relu-sparsity reads the decoder without past "
                    + $"({DecoderFile}); export it with Optimum's --no-post-process."
            );
        var node = branches[0];
        var body = node.Attribute.FirstOrDefault(a => a.Name == "else_branch")?.G
            ?? throw new UserInputException($"{where}: the If on {UseCacheBranch} has no else branch.");
        if (body.Output.Count != node.Output.Count)
            throw new UserInputException(
                $"{where}: the If on {UseCacheBranch} has {node.Output.Count} outputs, its else branch {body.Output.Count}."
            );
        var rename = body.Output.Select((o, i) => (o.Name, node.Output[i])).ToDictionary(p => p.Name, p => p.Item2);
        string Renamed(string name) => rename.GetValueOrDefault(name, name);
        int at = graph.Node.IndexOf(node);
        graph.Node.RemoveAt(at);
        var produced = body.Node.SelectMany(n => n.Output).ToHashSet();
        var added = new List<NodeProto>();
        foreach (var inner in body.Node)
        {
            var copy = inner.Clone();
            for (int i = 0; i < copy.Input.Count; i++)
                copy.Input[i] = Renamed(copy.Input[i]);
            for (int i = 0; i < copy.Output.Count; i++)
                copy.Output[i] = Renamed(copy.Output[i]);
            added.Add(copy);
        }
        // A branch output that is an outer value passed through: an Identity under the If's name.
        foreach (var (name, output) in rename.Where(r => !produced.Contains(r.Key)))
            added.Add(OnnxGraph.Node("Identity", output + "/passed", [name], [output]));
        foreach (var (copy, i) in added.Select((n, i) => (n, i)))
            graph.Node.Insert(at + i, copy);
        graph.Initializer.AddRange(body.Initializer.Select(t => t.Clone()));
        var read = graph.Node.SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)).ToHashSet();
        foreach (var unused in graph.Input.Where(i => !read.Contains(i.Name)).ToList())
            graph.Input.Remove(unused);
        if (
            graph.Input.Any(i =>
                i.Name == UseCacheBranch || i.Name.StartsWith("past_key_values", StringComparison.Ordinal)
            )
        )
            throw new UserInputException(
                $"{where}: its branch without a cache still reads {string.Join(", ", graph.Input.Where(i => i.Name == UseCacheBranch || i.Name.StartsWith("past", StringComparison.Ordinal)).Select(i => i.Name))}; export the decoder with Optimum's --no-post-process."
            );
        graph.ValueInfo.Clear();
        OnnxGraph.SortTopologically(graph);
        return result;
    }

    /// <summary>The decoder's names in <see cref="Join"/>: its tensors and nodes are prefixed so they never meet the
    /// encoder's.</summary>
    public const string DecoderPrefix = "decoder/";

    /// <summary>
    /// Joins an encoder (input_ids, attention_mask → one hidden-state output) and a decoder (input_ids,
    /// encoder_hidden_states, and encoder_attention_mask if it reads one → logits) into one graph whose decoder reads
    /// the encoder's output directly. <paramref name="where"/> names the pair in messages.
    /// </summary>
    public static ModelProto Join(ModelProto encoder, ModelProto decoder, string where)
    {
        string hidden = encoder.Graph.Output.FirstOrDefault(o => o.Name == "last_hidden_state")?.Name
            ?? (
                encoder.Graph.Output.Count == 1
                    ? encoder.Graph.Output[0].Name
                    : throw new UserInputException(
                        $"The encoder of {where} has outputs {string.Join(", ", encoder.Graph.Output.Select(o => o.Name))}: expected last_hidden_state."
                    )
            );
        var decoderInputs = GraphInputs.Required(decoder).Select(i => i.Name).ToList();
        foreach (
            string name in decoderInputs.Where(n =>
                n is not ("input_ids" or "encoder_hidden_states" or "encoder_attention_mask")
            )
        )
            throw new UserInputException(
                $"The decoder of {where} needs input '{name}', which relu-sparsity cannot feed: it feeds input_ids, encoder_hidden_states "
                    + "and encoder_attention_mask (Optimum's decoder_model.onnx, without past)."
            );
        if (!decoderInputs.Contains("input_ids") || !decoderInputs.Contains("encoder_hidden_states"))
            throw new UserInputException(
                $"The decoder of {where} takes {string.Join(", ", decoderInputs)}: expected input_ids and encoder_hidden_states (Optimum's decoder_model.onnx)."
            );
        var logits = GraphInputs.LogitsOutput(decoder)
            ?? throw new UserInputException(
                $"The decoder of {where} has no logits output (outputs: {string.Join(", ", decoder.Graph.Output.Select(o => o.Name))})."
            );
        if (
            encoder
                .Graph.Node.Concat(decoder.Graph.Node)
                .Any(n => n.Attribute.Any(a => a.G != null || a.Graphs.Count > 0))
        )
            throw new UserInputException(
                $"The graphs of {where} hold subgraphs (If/Loop): relu-sparsity joins plain encoder and decoder graphs only."
            );

        var rename = new Dictionary<string, string>
        {
            ["input_ids"] = DecoderInput,
            ["encoder_hidden_states"] = hidden,
            ["encoder_attention_mask"] = GraphInputs.MaskInput,
            [""] = "",
            [logits.Name] = "logits",
        };
        string Renamed(string name) => rename.TryGetValue(name, out var to) ? to : DecoderPrefix + name;

        var joined = encoder.Clone();
        var graph = joined.Graph;
        var d = decoder.Graph;
        foreach (var t in d.Initializer)
        {
            var copy = t.Clone();
            copy.Name = Renamed(t.Name);
            graph.Initializer.Add(copy);
        }
        foreach (var n in d.Node)
        {
            var copy = n.Clone();
            copy.Name = DecoderPrefix + n.Name;
            for (int i = 0; i < copy.Input.Count; i++)
                copy.Input[i] = Renamed(copy.Input[i]);
            for (int i = 0; i < copy.Output.Count; i++)
                copy.Output[i] = Renamed(copy.Output[i]);
            graph.Node.Add(copy);
        }
        // Shape annotations stay behind: their symbolic dimensions (unk__12, …) are named per graph, and the same name
        // in the other graph would tell ONNX Runtime two different sizes are one. It infers them again.
        graph.ValueInfo.Clear();
        var decoderIds = d.Input.First(i => i.Name == "input_ids").Clone();
        decoderIds.Name = DecoderInput;
        graph.Input.Add(decoderIds);
        if (decoderInputs.Contains("encoder_attention_mask") && !graph.Input.Any(i => i.Name == GraphInputs.MaskInput))
        {
            var mask = d.Input.First(i => i.Name == "encoder_attention_mask").Clone();
            mask.Name = GraphInputs.MaskInput;
            graph.Input.Add(mask);
        }
        var output = logits.Clone();
        output.Name = Renamed(logits.Name);
        graph.Output.Clear();
        graph.Output.Add(output);
        foreach (var o in decoder.OpsetImport)
        {
            var mine = joined.OpsetImport.FirstOrDefault(x => x.Domain == o.Domain);
            if (mine == null)
                joined.OpsetImport.Add(o.Clone());
            else if (mine.Version != o.Version)
                throw new UserInputException(
                    $"The encoder and decoder of {where} use opset {mine.Version} and {o.Version} of '{(o.Domain == "" ? "ai.onnx" : o.Domain)}': export both with one opset."
                );
        }
        joined.IrVersion = Math.Max(encoder.IrVersion, decoder.IrVersion);
        return joined;
    }

    /// <summary>
    /// Binds an encoder-decoder graph to pair rows (see the class summary): its input_ids, attention_mask,
    /// decoder_input_ids and, if it reads one, decoder_attention_mask become halves of input_ids [batch, 2T] and
    /// attention_mask [batch, 2T]. Any other input is refused by name.
    /// </summary>
    internal static ModelProto BindPairs(ModelProto model, List<string> computed)
    {
        var result = model.Clone();
        var graph = result.Graph;
        var required = GraphInputs.Required(model).ToDictionary(i => i.Name);
        foreach (
            string name in required.Keys.Where(n =>
                n is not (GraphInputs.TokenInput or GraphInputs.MaskInput or DecoderInput or DecoderMaskInput)
            )
        )
            throw new UserInputException(
                $"The encoder-decoder model needs input '{name}', which relu-sparsity cannot feed: it feeds input_ids, attention_mask, "
                    + "decoder_input_ids and decoder_attention_mask (no past). Export the model without it."
            );
        if (!required.ContainsKey(GraphInputs.TokenInput))
            throw new UserInputException(
                $"The encoder-decoder model has no input_ids (its inputs: {string.Join(", ", required.Keys)})."
            );
        var g = new GraphWriter(graph);
        int before = graph.Node.Count;
        var originals = new Dictionary<string, string>();
        foreach (string name in required.Keys)
        {
            GraphIndex.RenameReads(graph, name, originals[name] = g.Fresh(name + ".original"));
            graph.Input.Remove(graph.Input.First(i => i.Name == name));
        }
        graph.Input.Insert(0, OnnxGraph.Value(GraphInputs.TokenInput, DataType.Int64, "batch", "pair"));
        graph.Input.Insert(1, OnnxGraph.Value(GraphInputs.MaskInput, DataType.Int64, "batch", "pair"));
        string half = g.Op(
            "Div",
            "pair/half",
            [
                g.Op(
                    "Gather",
                    "pair/width",
                    [g.Op("Shape", "pair/shape", [GraphInputs.TokenInput]), g.Longs("pair/axis1", [1], 1)],
                    OnnxGraph.Int("axis", 0)
                ),
                g.Longs("pair/two", [1], 2),
            ]
        );
        string zero = g.Longs("pair/zero", [1], 0),
            end = g.Longs("pair/end", [1], long.MaxValue),
            axis = g.Longs("pair/axis", [1], 1);
        g.Named("Slice", SourceIds, [GraphInputs.TokenInput, zero, half, axis]);
        g.Named("Slice", TargetInputIds, [GraphInputs.TokenInput, half, end, axis]);
        g.Named("Slice", SourceMask, [GraphInputs.MaskInput, zero, half, axis]);
        g.Named("Slice", TargetMask, [GraphInputs.MaskInput, half, end, axis]);
        foreach (var (name, input) in required)
        {
            string from = name switch
            {
                GraphInputs.TokenInput => SourceIds,
                GraphInputs.MaskInput => SourceMask,
                DecoderInput => TargetInputIds,
                _ => TargetMask,
            };
            var type = (DataType)input.Type.TensorType.ElemType;
            string original = originals[name];
            if (type == DataType.Int64)
                g.Named("Identity", original, [from]);
            else
                g.Named("Cast", original, [from], OnnxGraph.Int("to", (long)type));
            computed.Add(
                name switch
                {
                    GraphInputs.TokenInput => "input_ids = the source",
                    GraphInputs.MaskInput => "attention_mask = the source's mask",
                    DecoderInput => "decoder_input_ids = the target shifted right",
                    _ => "decoder_attention_mask = the target's mask",
                }
            );
        }
        // The new nodes read only graph inputs and constants: move them to the front to keep the graph sorted.
        var added = graph.Node.Skip(before).ToList();
        for (int i = 0; i < added.Count; i++)
            graph.Node.RemoveAt(graph.Node.Count - 1);
        for (int i = 0; i < added.Count; i++)
            graph.Node.Insert(i, added[i]);
        return result;
    }

    /// <summary>
    /// The stack of each site: the decoder's are those its token input reaches (<c>decoder_input_ids</c>, or a bound
    /// pair graph's decoder half); every site is the encoder's when the graph has a decoder input, else <c>None</c>.
    /// </summary>
    public static ModelStack[] Stacks(ModelProto model, IReadOnlyList<NodeProto> activations)
    {
        string? start =
            IsBoundPairs(model) ? TargetInputIds
            : Is(model) ? DecoderInput
            : null;
        if (start == null)
            return activations.Select(_ => ModelStack.None).ToArray();
        var reached = new HashSet<string> { start };
        // Values only: a Shape of the decoder's input carries no token (exporters share shape arithmetic between the
        // stacks).
        foreach (var node in model.Graph.Node) // nodes are in topological order
            if (node.OpType is not ("Shape" or "Size") && node.Input.Any(reached.Contains))
                foreach (var o in node.Output)
                    reached.Add(o);
        return activations
            .Select(a => a.Output.Any(reached.Contains) ? ModelStack.Decoder : ModelStack.Encoder)
            .ToArray();
    }

    /// <summary>"encoder" or "decoder" (null for <c>None</c>): the stack's name in stats.json and on the command
    /// line.</summary>
    public static string? Name(this ModelStack stack) =>
        stack switch
        {
            ModelStack.Encoder => "encoder",
            ModelStack.Decoder => "decoder",
            _ => null,
        };
}
