using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using Sparsity.Export;

namespace Sparsity.Pipeline.Runtime;

/// <summary>A batch of windows to check a graph on: ids and padding mask, row-major [Batch, SeqLen].</summary>
public sealed record ProbeBatch(long[] Ids, long[] Mask, int Batch, int SeqLen)
{
    /// <summary>Seeded random ids below <paramref name="vocab"/>, no padding.</summary>
    public static ProbeBatch Random(long vocab, int batch = 2, int seqLen = 16, int seed = 0)
    {
        var random = new Random(seed);
        return new ProbeBatch(
            Enumerable.Range(0, batch * seqLen).Select(_ => random.NextInt64(Math.Max(1, vocab))).ToArray(),
            Enumerable.Repeat(1L, batch * seqLen).ToArray(),
            batch,
            seqLen
        );
    }

    /// <summary>Seeded random ids within <paramref name="model"/>'s vocabulary: what a written graph is checked
    /// on.</summary>
    public static ProbeBatch For(ModelProto model) => Random(GraphInputs.VocabularySize(model) ?? 2);
}

/// <summary>
/// Runs graphs this tool writes in ONNX Runtime before a command reports success: they must load and run, and
/// rewrites that must be exact must give the input model's logits. A failure is an error and nothing is written.
/// </summary>
public static class GraphCheck
{
    /// <summary>Largest logit difference accepted for an exact rewrite, relative to the largest logit (at least
    /// 1).</summary>
    public const float Tolerance = 1e-4f;

    /// <summary>
    /// The same for a graph computing in fp16 or bf16: removing zero terms changes how a half-precision product is
    /// blocked and rounded (fp16 keeps 11 bits: 5e-4 relative), never by as much as a wrong rewrite moves logits.
    /// </summary>
    public const float HalfTolerance = 4e-3f;

    /// <summary>
    /// Loads and runs <paramref name="written"/> on <paramref name="batch"/>; with <paramref name="reference"/>, its
    /// logits on real tokens must equal the reference's within <see cref="Tolerance"/>. Returns that largest difference
    /// (0 without a reference). Both run on <paramref name="device"/> (default the CPU).
    /// </summary>
    public static float Verify(
        ModelProto written,
        string what,
        ProbeBatch batch,
        ModelProto? reference = null,
        Device? device = null
    ) => Verify(written, what, [batch], reference, device);

    /// <summary>The same on several batches of any shapes, each model opened once (a large model loads in
    /// seconds).</summary>
    public static float Verify(
        ModelProto written,
        string what,
        IReadOnlyList<ProbeBatch> batches,
        ModelProto? reference = null,
        Device? device = null
    )
    {
        List<float[]> actual;
        try
        {
            actual = Logits(written, batches, device);
        }
        catch (Exception e)
            when (e is OnnxRuntimeException || e is UserInputException { InnerException: OnnxRuntimeException })
        {
            throw new UserInputException(
                $"The {what} does not run in ONNX Runtime ({FirstLine(e)}); nothing was written. This graph form is not supported: please report it with the model."
            );
        }
        if (reference == null)
            return 0f;
        var expected = Logits(reference, batches, device);
        float max = 0;
        for (int b = 0; b < batches.Count; b++)
        {
            var batch = batches[b];
            int vocab = expected[b].Length / (batch.Batch * batch.SeqLen);
            var real = Enumerable.Range(0, batch.Mask.Length).Where(p => batch.Mask[p] == 1);
            max = Math.Max(
                max,
                RequireSameLogits(
                    real.Select(p => actual[b].AsSpan(p * vocab, vocab).ToArray()).ToList(),
                    real.Select(p => expected[b].AsSpan(p * vocab, vocab).ToArray()).ToList(),
                    reference,
                    what,
                    $"on a batch of {batch.Batch} × {batch.SeqLen}"
                )
            );
        }
        return max;
    }

    /// <summary>
    /// Requires each row of <paramref name="actual"/> to equal <paramref name="expected"/>'s within
    /// <see cref="Tolerance"/> of the largest (<see cref="HalfTolerance"/> when <paramref name="reference"/> holds half
    /// weights); returns the largest difference. <paramref name="where"/> says on what, for the error.
    /// </summary>
    public static float RequireSameLogits(
        IReadOnlyList<float[]> actual,
        IReadOnlyList<float[]> expected,
        ModelProto reference,
        string what,
        string where
    )
    {
        float max = 0,
            scale = 1;
        for (int r = 0; r < expected.Count; r++)
        for (int v = 0; v < expected[r].Length; v++)
        {
            max = Math.Max(max, Math.Abs(actual[r][v] - expected[r][v]));
            scale = Math.Max(scale, Math.Abs(expected[r][v]));
        }
        bool half = reference.Graph.Initializer.Any(t =>
            t.DataType is (int)TensorProto.Types.DataType.Float16 or (int)TensorProto.Types.DataType.Bfloat16
        );
        float tolerance = (half ? HalfTolerance : Tolerance) * scale;
        if (!(max <= tolerance))
            throw new UserInputException(
                $"The {what} should compute exactly what the input model does, but its {OutputName(reference)} differ by {max:E2} (> {tolerance:E1}: "
                    + $"{(half ? HalfTolerance : Tolerance):E0} of the largest, {scale:G3}) {where}; nothing was written."
            );
        return max;
    }

    /// <summary>
    /// Refuses a model that is not a causal language model: changing the second half of a window must leave the first
    /// half's outputs exactly alone (decoders give 0; a trained encoder moves them by 1e-4 and more). Next-token scores
    /// and generation mean something only then; <paramref name="consequence"/> says what needs it. Runs on
    /// <paramref name="device"/> (default the CPU).
    /// </summary>
    public static void RequireCausal(
        ModelProto model,
        long vocab,
        string name,
        string consequence,
        Device? device = null
    )
    {
        const int T = 16;
        var probe = ProbeBatch.Random(vocab, 1, T, seed: 5);
        long[] changed = (long[])probe.Ids.Clone();
        for (int i = T / 2; i < T; i++)
            changed[i] = (changed[i] + 1 + vocab / 3) % vocab;
        float[] both = Logits(
            model,
            probe with
            {
                Ids = [.. probe.Ids, .. changed],
                Mask = [.. probe.Mask, .. probe.Mask],
                Batch = 2,
            },
            device
        );
        var a = both.AsSpan(0, T * (int)vocab);
        var b = both.AsSpan(T * (int)vocab);
        for (int i = 0; i < T / 2 * vocab; i++)
            if (Math.Abs(a[i] - b[i]) > 1e-5f)
                throw new UserInputException(
                    $"{name} is not a causal language model (changing later tokens changes the outputs at earlier positions): {consequence}"
                );
    }

    /// <summary>Loads and runs <paramref name="written"/> (any outputs, e.g. in-graph statistics) on
    /// <paramref name="batch"/>; a failure is an error.</summary>
    public static void Runs(ModelProto written, string what, ProbeBatch batch)
    {
        try
        {
            Run(GraphInputs.Bind(written).Item1, batch);
        }
        catch (Exception e)
            when (e is OnnxRuntimeException || e is UserInputException { InnerException: OnnxRuntimeException })
        {
            throw new UserInputException(
                $"The {what} does not run in ONNX Runtime ({FirstLine(e)}); nothing was written. Please report it."
            );
        }
    }

    /// <summary>
    /// Refuses a site whose flattened [tokens, d_ff] activations are not batch-major: swapping the two windows of a
    /// batch must swap the two halves of its rows, as it does when tokens are flattened [batch, seq] → batch·seq.
    /// </summary>
    public static void RequireBatchMajor(ModelProto bound, IReadOnlyList<MlpSite> sites, long vocab)
    {
        var flattened = sites.Where(s => s.Layout == "tokens_dff").ToList();
        if (flattened.Count == 0)
            return;
        var instrumented = OnnxGraph.WithOnlyOutputs(
            Surgery.Instrument(bound, flattened),
            flattened.Select(s => s.Output).ToList()
        );
        var batch = ProbeBatch.Random(vocab, 2, 8, seed: 3);
        long[] swapped = [.. batch.Ids[8..], .. batch.Ids[..8]];
        var a = Run(instrumented, batch);
        var b = Run(instrumented, batch with { Ids = swapped });
        foreach (var site in flattened)
        {
            float[] x = a[site.Output],
                y = b[site.Output];
            int half = x.Length / 2;
            float max = 0;
            for (int i = 0; i < half; i++)
                max = Math.Max(max, Math.Max(Math.Abs(x[i] - y[half + i]), Math.Abs(x[half + i] - y[i])));
            if (!(max <= 1e-3f))
                throw new UserInputException(
                    $"Layer {site.Layer} ('{site.Node}') flattens its activations to [tokens, d_ff] in an order that is not batch-major "
                        + "(swapping two windows does not swap the halves of its rows); relu-sparsity cannot attribute its rows to tokens and refuses the graph."
                );
        }
    }

    /// <summary>What the checks compare: "logits", or a stack exported without them, its last hidden state.</summary>
    public static string OutputName(ModelProto model) =>
        GraphInputs.LogitsOutput(model)?.Name is { } name && name != "logits" ? name : "logits";

    /// <summary>Logits of a bound or unbound graph on <paramref name="batch"/>: [batch, seq, vocab]
    /// flattened.</summary>
    public static float[] Logits(ModelProto model, ProbeBatch batch, Device? device = null) =>
        Logits(model, [batch], device)[0];

    /// <summary>Logits of a bound or unbound graph on each of <paramref name="batches"/> (any shapes), through one
    /// session.</summary>
    public static List<float[]> Logits(ModelProto model, IReadOnlyList<ProbeBatch> batches, Device? device = null)
    {
        var (bound, _) = GraphInputs.Bind(model);
        string logits = GraphInputs.LogitsOutput(bound)?.Name
            ?? throw new UserInputException(
                "The model has no logits output (an output named logits, or a single float output of rank 3)."
            );
        var only = OnnxGraph.WithOnlyOutput(bound, logits);
        var output = only.Graph.Output[0];
        if (output.Type.TensorType.ElemType != (int)TensorProto.Types.DataType.Float)
        {
            // Logits of a model exported in half precision, compared as float32.
            new GraphWriter(only.Graph).CastToFloatUnderOwnName(logits, logits + ".half");
            output.Type.TensorType.ElemType = (int)TensorProto.Types.DataType.Float;
        }
        using var runner = new ModelRunner(
            only,
            device ?? Device.Cpu,
            threads: 2,
            batches[0].Batch,
            batches[0].SeqLen,
            [(logits, null)],
            bindOutputs: false
        );
        bool mask = runner.InputNames.Contains(GraphInputs.MaskInput);
        var result = new List<float[]>();
        foreach (var batch in batches)
        {
            long[] shape = [batch.Batch, batch.SeqLen];
            using var ids = OrtValue.CreateTensorValueFromMemory(batch.Ids, shape);
            using var padding = OrtValue.CreateTensorValueFromMemory(batch.Mask, shape);
            var inputs = new Dictionary<string, OrtValue> { [GraphInputs.TokenInput] = ids };
            if (mask)
                inputs[GraphInputs.MaskInput] = padding;
            using var outputs = runner.RunNamed(inputs, [logits]);
            result.Add(outputs[0].GetTensorDataAsSpan<float>().ToArray());
        }
        return result;
    }

    // Runs a bound graph once through the runner and returns every output as floats (counts are converted).
    static Dictionary<string, float[]> Run(ModelProto bound, ProbeBatch batch)
    {
        var names = bound.Graph.Output.Select(o => o.Name).ToList();
        using var runner = new ModelRunner(
            bound,
            Device.Cpu,
            threads: 2,
            batch.Batch,
            batch.SeqLen,
            names.Select(n => (n, (long[]?)null)).ToList()
        );
        runner.Run(batch.Ids, batch.Mask);
        var outputs = new Dictionary<string, float[]>();
        for (int i = 0; i < names.Count; i++)
            outputs[names[i]] = runner.IsFloat(i)
                ? runner.Floats(i).ToArray()
                : runner.Longs(i).ToArray().Select(v => (float)v).ToArray();
        return outputs;
    }

    static string FirstLine(Exception e) => (e.InnerException as OnnxRuntimeException ?? e).Message.Split('\n')[0];
}
