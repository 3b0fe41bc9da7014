using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Generation;

/// <summary>How the next token is picked when not greedily: softmax at <paramref name="Temperature"/>, kept to the
/// <paramref name="TopK"/> most likely (0 = all) and to the smallest set whose probability reaches
/// <paramref name="TopP"/>, drawn with <paramref name="Seed"/>.</summary>
public sealed record Sampling(float Temperature = 1f, float TopP = 1f, int TopK = 0, int Seed = 0);

/// <summary>
/// Batch-1 generation through ONNX Runtime. A graph with a key/value cache (<c>past_key_values.{i}.key/value</c> in,
/// <c>present.{i}.key/value</c> out, as <c>export --with-past</c> and Optimum write) runs the prompt once and then one
/// token per step, feeding each step's cache to the next; any other causal graph recomputes the whole sequence each
/// step.
/// </summary>
public sealed class Generator : IDisposable
{
    const string PastPrefix = "past_key_values.";
    readonly ModelRunner _runner;
    readonly List<(string Input, string Output, long Heads, long HeadSize)> _cache = [];

    // A fixed-shape sparse graph (SparseDecode.RewriteFixedShape) decodes one token per step through _runner and
    // runs prompts, and recomputes the steps where some layer overflowed its capacity, through its dense form.
    readonly ModelRunner? _dense;
    readonly IReadOnlyList<(int Layer, long Capacity, long Units)> _capacities = [];
    readonly string _logits;
    readonly bool _mask,
        _positions;

    /// <summary>
    /// Opens <paramref name="model"/> on <paramref name="device"/> (default the CPU); <paramref name="useCache"/> false
    /// recomputes even when the graph has a cache. The cache stays in the device's memory from one step to the next
    /// (the GPU's with CUDA); only the logits come back to the host. <paramref name="profilePrefix"/>: ONNX Runtime's
    /// profiler on for the steps' session (the fixed-shape sparse graph's, not its dense form's), read by
    /// <see cref="EndProfiling"/>.
    /// </summary>
    public Generator(
        ModelProto model,
        int threads = 2,
        bool useCache = true,
        Device? device = null,
        string? profilePrefix = null
    )
    {
        var where = device ?? Device.Cpu;
        var capacities = SparseDecode.Capacities(model);
        // A fixed-shape sparse graph runs prompts, overflowed steps and (without the cache) every step in its dense
        // form.
        var dense = capacities.Count > 0 ? SparseDecode.Dense(model) : model;
        GraphCheck.RequireCausal(
            dense,
            GraphInputs.VocabularySize(model) ?? 2,
            "The model",
            "generate continues text one token at a time from the last position's logits.",
            where
        );
        MaxPositions = GraphInputs.MaxPositions(model);
        bool cached = useCache && model.Graph.Input.Any(i => i.Name.StartsWith(PastPrefix, StringComparison.Ordinal));
        var graph = model;
        if (cached)
        {
            foreach (var input in model.Graph.Input.Where(i => i.Name.StartsWith(PastPrefix, StringComparison.Ordinal)))
            {
                var dims = input.Type.TensorType.Shape.Dim;
                string output = "present." + input.Name[PastPrefix.Length..];
                if (
                    dims.Count != 4
                    || dims[1].DimValue <= 0
                    || dims[3].DimValue <= 0
                    || model.Graph.Output.All(o => o.Name != output)
                )
                    throw new UserInputException(
                        $"Cache input {input.Name} is not [batch, heads, past, head_size] with fixed heads and head size and a matching output {output}: generate without the cache (--no-cache)."
                    );
                _cache.Add((input.Name, output, dims[1].DimValue, dims[3].DimValue));
            }
        }
        else
            graph = GraphInputs.Bind(dense).Model; // a cache, if any, is bound empty
        if (cached)
            _capacities = capacities;
        _logits = GraphInputs.LogitsOutput(graph)?.Name
            ?? throw new UserInputException(
                "The model has no logits output (an output named logits, or a single float output of rank 3): it cannot generate."
            );
        var outputs = new List<(string, long[]?)> { (_logits, null) };
        outputs.AddRange(_cache.Select(c => (c.Output, (long[]?)null)));
        if (_capacities.Count > 0)
            _dense = new ModelRunner(dense, where, threads, 1, 1, outputs, bindOutputs: false);
        outputs.AddRange(_capacities.Select(c => (SparseDecode.OverflowPrefix + c.Layer, (long[]?)null)));
        _runner = new ModelRunner(
            graph,
            where,
            threads,
            1,
            1,
            outputs,
            bindOutputs: false,
            profilePrefix == null ? null : new RunnerTuning(ProfilePrefix: profilePrefix)
        );
        Overflows = new long[_capacities.Count];
        _mask = _runner.InputNames.Contains(GraphInputs.MaskInput);
        _positions = _runner.InputNames.Contains("position_ids");
        UsesCache = cached;
    }

    /// <summary>True when steps feed the key/value cache (one new token per step after the prompt).</summary>
    public bool UsesCache { get; }

    /// <summary>A fixed-shape sparse graph's layers and capacities (<see cref="SparseDecode.Capacities"/>); empty for
    /// any other graph, or without the cache.</summary>
    public IReadOnlyList<(int Layer, long Capacity, long Units)> Capacities => _capacities;

    /// <summary>Single-token steps run by a fixed-shape sparse graph so far.</summary>
    public long SparseSteps { get; private set; }

    /// <summary>Of <see cref="SparseSteps"/>, those recomputed densely because some layer overflowed.</summary>
    public long RecomputedSteps { get; private set; }

    /// <summary>Per layer of <see cref="Capacities"/>, the steps on which it overflowed.</summary>
    public long[] Overflows { get; }

    /// <summary>Longest sequence the model takes, when the graph says (this project's exports).</summary>
    public long? MaxPositions { get; }

    /// <summary>
    /// The logits after each token of <paramref name="tokens"/>, computed one token per step (with the cache) or over
    /// the growing prefix (without): the sequence's logits, row by row, as the decoding loop sees them.
    /// </summary>
    public IEnumerable<float[]> StepLogits(IReadOnlyList<int> tokens)
    {
        using var state = new State(this);
        for (int t = 0; t < tokens.Count; t++)
            yield return state.Next(tokens, t, 1);
    }

    /// <summary>
    /// Continues <paramref name="prompt"/> by up to <paramref name="maxNewTokens"/> tokens, yielding each as it is
    /// picked; greedy (highest logit, lowest id on ties) when <paramref name="sampling"/> is null. Stops after
    /// <paramref name="stopAt"/> or when the model's context is full.
    /// </summary>
    public IEnumerable<int> Generate(
        IReadOnlyList<int> prompt,
        int maxNewTokens,
        Sampling? sampling = null,
        int? stopAt = null
    )
    {
        if (prompt.Count == 0)
            throw new UserInputException("The prompt is empty after tokenization: give some text.");
        if (
            sampling != null
            && (!(sampling.Temperature > 0) || !(sampling.TopP > 0 && sampling.TopP <= 1) || sampling.TopK < 0)
        )
            throw new UserInputException("--temperature must be positive, --top-p in (0, 1] and --top-k at least 0.");
        if (MaxPositions is long max && prompt.Count >= max)
            throw new UserInputException(
                $"The prompt has {prompt.Count} tokens; the model takes {max} in all: shorten it."
            );
        var random = new Random(sampling?.Seed ?? 0);
        var tokens = prompt.ToList();
        using var state = new State(this);
        float[] logits = state.Next(tokens, 0, tokens.Count);
        for (int n = 0; n < maxNewTokens; n++)
        {
            int next = sampling == null ? ArgMax(logits) : Sample(logits, sampling, random);
            tokens.Add(next);
            yield return next;
            if (next == stopAt || (MaxPositions is long m && tokens.Count >= m) || n == maxNewTokens - 1)
                yield break;
            logits = state.Next(tokens, tokens.Count - 1, 1);
        }
    }

    /// <summary>Ends the profiling asked for with <c>profilePrefix</c> and returns ONNX Runtime's JSON file.</summary>
    public string EndProfiling() => _runner.EndProfiling();

    /// <summary>Index of the largest value (the lowest on ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best])
                best = i;
        return best;
    }

    static int Sample(float[] logits, Sampling s, Random random)
    {
        var order = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ThenBy(i => i).ToList();
        if (s.TopK > 0)
            order = order.Take(s.TopK).ToList();
        double top = logits[order[0]];
        var weights = order.Select(i => Math.Exp((logits[i] - top) / s.Temperature)).ToList();
        double sum = weights.Sum(),
            kept = 0;
        int count = 0;
        while (count < order.Count && kept < s.TopP * sum)
            kept += weights[count++]; // the nucleus: smallest prefix reaching top-p
        double pick = random.NextDouble() * kept;
        for (int i = 0; i < count; i++)
            if ((pick -= weights[i]) < 0)
                return order[i];
        return order[count - 1];
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _runner.Dispose();
        _dense?.Dispose();
    }

    // One sequence being decoded: the outputs of the last step (owned here), its cache from _cacheAt on.
    sealed class State(Generator g) : IDisposable
    {
        IDisposableReadOnlyCollection<OrtValue>? _last;
        int _cacheAt;

        // The first step's empty cache, in each input's own type (a model exported in fp16 or bf16 keeps its cache so).
        readonly List<OrtValue> _empty = g
            ._cache.Select(c =>
                g._runner.InputType(c.Input) switch
                {
                    TensorElementType.Float16 => OrtValue.CreateTensorValueFromMemory(
                        Array.Empty<Microsoft.ML.OnnxRuntime.Float16>(),
                        [1, c.Heads, 0, c.HeadSize]
                    ),
                    TensorElementType.BFloat16 => OrtValue.CreateTensorValueFromMemory(
                        Array.Empty<BFloat16>(),
                        [1, c.Heads, 0, c.HeadSize]
                    ),
                    _ => OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, c.Heads, 0, c.HeadSize]),
                }
            )
            .ToList();

        // Feeds tokens[from..from+count) (with the cache) or tokens[0..from+count) (without); returns the last
        // position's logits.
        public float[] Next(IReadOnlyList<int> tokens, int from, int count)
        {
            int start = g.UsesCache ? from : 0,
                end = from + count;
            long[] ids = [.. tokens.Skip(start).Take(end - start).Select(t => (long)t)];
            var inputs = new Dictionary<string, OrtValue>();
            var owned = new List<OrtValue> { OrtValue.CreateTensorValueFromMemory(ids, [1, ids.Length]) };
            inputs[GraphInputs.TokenInput] = owned[0];
            if (g._mask)
                inputs[GraphInputs.MaskInput] = Own(owned, Enumerable.Repeat(1L, end).ToArray(), [1, end]);
            if (g._positions)
                inputs["position_ids"] = Own(
                    owned,
                    Enumerable.Range(start, ids.Length).Select(p => (long)p).ToArray(),
                    [1, ids.Length]
                );
            for (int i = 0; i < g._cache.Count; i++)
                inputs[g._cache[i].Input] = _last == null ? _empty[i] : _last[_cacheAt + i];
            IDisposableReadOnlyCollection<OrtValue> results;
            int cacheAt = 1;
            string[] cache = [.. g._cache.Select(c => c.Output)];
            try
            {
                if (g._dense == null)
                    results = g._runner.RunKeeping(inputs, [g._logits], cache);
                else if (ids.Length > 1)
                    results = g._dense.RunKeeping(inputs, [g._logits], cache); // prompts stay dense
                else
                    (results, cacheAt) = SparseStep(inputs, cache);
            }
            catch (OnnxRuntimeException e)
            {
                // Graphs from elsewhere do not say how long a context they take; running past it fails inside the
                // runtime.
                throw new UserInputException(
                    $"ONNX Runtime could not run the model on {end} tokens ({e.Message.Split('\n')[0].Trim()}): the sequence is probably longer than the model's context; ask for fewer with --max-new-tokens."
                );
            }
            finally
            {
                foreach (var v in owned)
                    v.Dispose();
            }
            float[] last = LastRow(results[0]);
            _last?.Dispose();
            (_last, _cacheAt) = (results, cacheAt);
            return last;
        }

        // One token through the fixed-shape graph; where a layer had more active units than its capacity, the step
        // again through the dense form (same inputs, so its cache entries replace the sparse step's). Returns the
        // outputs and where their cache starts (after the logits and the overflow flags).
        (IDisposableReadOnlyCollection<OrtValue>, int) SparseStep(Dictionary<string, OrtValue> inputs, string[] cache)
        {
            string[] flags = [.. g._capacities.Select(c => SparseDecode.OverflowPrefix + c.Layer)];
            var results = g._runner.RunKeeping(inputs, [g._logits, .. flags], cache);
            g.SparseSteps++;
            bool overflowed = false;
            for (int i = 0; i < flags.Length; i++)
                if (results[1 + i].GetTensorDataAsSpan<bool>()[0])
                {
                    g.Overflows[i]++;
                    overflowed = true;
                }
            if (!overflowed)
                return (results, 1 + flags.Length);
            results.Dispose();
            g.RecomputedSteps++;
            return (g._dense!.RunKeeping(inputs, [g._logits], cache), 1);
        }

        // The last position's logits as float32, whatever type the graph returns them in.
        static float[] LastRow(OrtValue logits)
        {
            var info = logits.GetTensorTypeAndShape();
            int vocab = (int)info.Shape[^1];
            return info.ElementDataType switch
            {
                TensorElementType.Float16 =>
                [
                    .. logits
                        .GetTensorDataAsSpan<Microsoft.ML.OnnxRuntime.Float16>()[^vocab..]
                        .ToArray()
                        .Select(h => (float)h),
                ],
                TensorElementType.BFloat16 =>
                [
                    .. logits.GetTensorDataAsSpan<BFloat16>()[^vocab..].ToArray().Select(h => (float)h),
                ],
                _ => logits.GetTensorDataAsSpan<float>()[^vocab..].ToArray(),
            };
        }

        static OrtValue Own(List<OrtValue> owned, long[] data, long[] shape)
        {
            var value = OrtValue.CreateTensorValueFromMemory(data, shape);
            owned.Add(value);
            return value;
        }

        public void Dispose()
        {
            _last?.Dispose();
            foreach (var v in _empty)
                v.Dispose();
        }
    }
}
