using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using Sparsity.Export;
using Sparsity.Training;

namespace Sparsity.Pipeline.Runtime;

/// <summary>
/// The one ONNX Runtime runner: a session on a bound graph (inputs <c>input_ids</c> and, if it reads one,
/// <c>attention_mask</c>, int64 [batch, seq]) on one device, whose inputs and outputs are bound once to reused host
/// buffers (I/O binding). A run copies the batch in and only the graph's outputs back; on a GPU the activations stay
/// there. <c>analyze</c>, <c>evaluate</c>, <c>bench</c>, the export parity check and the checks of every written graph
/// (<see cref="GraphCheck"/>) run their batches through it.
/// </summary>
public sealed class ModelRunner : IDisposable
{
    readonly SessionOptions _options;
    readonly InferenceSession _session;
    readonly RunOptions _run = new() { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL }; // a failing run is reported once, by its exception
    readonly OrtIoBinding _binding;
    readonly long[] _ids, _mask;
    readonly Array[] _outputs;
    readonly bool[] _sizedByRun; // outputs whose shape was not known when the runner was made
    readonly int[] _lengths; // elements of each output in the last run (buffers of outputs sized by the run only grow)
    readonly Dictionary<string, float[]> _floatInputs = [];
    readonly List<OrtValue> _values = [];
    readonly (string[] Inputs, OrtValue[] Values, string[] Outputs)? _onDevice;

    /// <summary>
    /// Opens <paramref name="bound"/> on <paramref name="device"/> for batches of <paramref name="batch"/> × <paramref name="seqLen"/>;
    /// <paramref name="outputs"/> are the outputs to compute (float32 or int64) with their shapes for that batch (null: not
    /// known before the run). <paramref name="bindOutputs"/> false (always on a GPU, and with an unknown shape) has ONNX
    /// Runtime return the outputs, copied into the same buffers. <paramref name="floatInputs"/>: further float32 vector
    /// inputs of the graph, written through <see cref="FloatInput"/> before a run.
    /// </summary>
    public ModelRunner(ModelProto bound, Device device, int threads, int batch, int seqLen, IReadOnlyList<(string Name, long[]? Shape)> outputs, bool bindOutputs = true,
        IReadOnlyList<(string Name, int Length)>? floatInputs = null)
    {
        Batch = batch;
        SeqLen = seqLen;
        _options = new SessionOptions
        {
            IntraOpNumThreads = threads > 0 ? threads : Environment.ProcessorCount, InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        try
        {
            device.Configure(_options);
            _session = OrtSession.Open(OnnxGraph.WithOnlyOutputs(bound, outputs.Select(o => o.Name).ToList()), _options);
        }
        catch (OnnxRuntimeException e)
        {
            _options.Dispose();
            throw new UserInputException($"ONNX Runtime could not open the model on {device}: {e.Message.Split('\n')[0]}", e);
        }
        _binding = _session.CreateIoBinding();
        long[] shape = [batch, seqLen];
        _ids = new long[batch * seqLen];
        _mask = new long[batch * seqLen];
        Bind(GraphInputs.TokenInput, OrtValue.CreateTensorValueFromMemory(_ids, shape), input: true);
        var inputs = new List<(string Name, OrtValue Value)> { (GraphInputs.TokenInput, _values[0]) };
        if (_session.InputNames.Contains(GraphInputs.MaskInput))
        {
            Bind(GraphInputs.MaskInput, OrtValue.CreateTensorValueFromMemory(_mask, shape), input: true);
            inputs.Add((GraphInputs.MaskInput, _values[^1]));
        }
        foreach (var (name, length) in floatInputs ?? [])
        {
            var buffer = _floatInputs[name] = new float[length];
            Bind(name, OrtValue.CreateTensorValueFromMemory(buffer, [length]), input: true);
            inputs.Add((name, _values[^1]));
        }
        if (device.CudaId != null || !bindOutputs || outputs.Any(o => o.Shape == null))
            _onDevice = (inputs.Select(i => i.Name).ToArray(), inputs.Select(i => i.Value).ToArray(), outputs.Select(o => o.Name).ToArray());
        _outputs = new Array[outputs.Count];
        _sizedByRun = outputs.Select(o => o.Shape == null).ToArray();
        _lengths = new int[outputs.Count];
        for (int i = 0; i < outputs.Count; i++)
        {
            var (name, outputShape) = outputs[i];
            long size = outputShape?.Aggregate(1L, (a, d) => a * d) ?? 0; // unknown: sized by each run
            _lengths[i] = (int)size;
            switch (_session.OutputMetadata[name].ElementDataType)
            {
                case TensorElementType.Float:
                    var floats = new float[size];
                    _outputs[i] = floats;
                    if (outputShape != null) Bind(name, OrtValue.CreateTensorValueFromMemory(floats, outputShape), input: false);
                    break;
                case TensorElementType.Int64:
                    var longs = new long[size];
                    _outputs[i] = longs;
                    if (outputShape != null) Bind(name, OrtValue.CreateTensorValueFromMemory(longs, outputShape), input: false);
                    break;
                case var other:
                    Dispose();
                    throw new UserInputException($"Output {name} is {other}; relu-sparsity reads float32 and int64 outputs.");
            }
        }
    }

    /// <summary>Windows per batch.</summary>
    public int Batch { get; }
    /// <summary>Tokens per window.</summary>
    public int SeqLen { get; }

    /// <summary>Runs one batch (ids and padding mask, row-major [batch, seq]); the outputs are then in <see cref="Floats"/> / <see cref="Longs"/>.</summary>
    public void Run(ReadOnlySpan<long> ids, ReadOnlySpan<long> mask)
    {
        ids.CopyTo(_ids);
        mask.CopyTo(_mask);
        if (_onDevice == null)
        {
            _session.RunWithBinding(_run, _binding);
            return;
        }
        // On a GPU, ONNX Runtime copies each output to the host when the run ends (outputs bound to host buffers came
        // back as zeros from CUDA on an H100); the outputs read here are counts or logits, small beside the activations.
        using var results = _session.Run(_run, _onDevice.Value.Inputs, _onDevice.Value.Values, _onDevice.Value.Outputs);
        for (int i = 0; i < _outputs.Length; i++)
        {
            if (_sizedByRun[i])
            {
                int count = checked((int)results[i].GetTensorTypeAndShape().ElementCount);
                if (_outputs[i].Length < count) _outputs[i] = Array.CreateInstance(_outputs[i].GetType().GetElementType()!, Math.Max(count, 2 * _outputs[i].Length));
                _lengths[i] = count;
            }
            if (_outputs[i] is float[] f) results[i].GetTensorDataAsSpan<float>().CopyTo(f);
            else results[i].GetTensorDataAsSpan<long>().CopyTo((long[])_outputs[i]);
        }
    }

    /// <summary>
    /// Runs the session on named inputs of any shape and returns the named outputs (the caller disposes them): what a
    /// decoding step needs, whose key/value cache grows each call, where the bound buffers of <see cref="Run"/> cannot serve.
    /// </summary>
    public IDisposableReadOnlyCollection<OrtValue> RunNamed(IReadOnlyDictionary<string, OrtValue> inputs, IReadOnlyList<string> outputs) =>
        _session.Run(_run, [.. inputs.Keys], [.. inputs.Values], [.. outputs]);

    /// <summary>Names of the session's inputs.</summary>
    public IReadOnlyList<string> InputNames => _session.InputNames;

    /// <summary>Whether output <paramref name="i"/> is float32 (else int64).</summary>
    public bool IsFloat(int i) => _outputs[i] is float[];
    /// <summary>Float32 output <paramref name="i"/> of the last run.</summary>
    public ReadOnlySpan<float> Floats(int i) => ((float[])_outputs[i]).AsSpan(0, _lengths[i]);
    /// <summary>Int64 output <paramref name="i"/> of the last run.</summary>
    public ReadOnlySpan<long> Longs(int i) => ((long[])_outputs[i]).AsSpan(0, _lengths[i]);
    /// <summary>Float32 output <paramref name="i"/> of the last run, as memory.</summary>
    public ReadOnlyMemory<float> FloatsMemory(int i) => ((float[])_outputs[i]).AsMemory(0, _lengths[i]);
    /// <summary>Int64 output <paramref name="i"/> of the last run, as memory.</summary>
    public ReadOnlyMemory<long> LongsMemory(int i) => ((long[])_outputs[i]).AsMemory(0, _lengths[i]);
    /// <summary>The buffer of float input <paramref name="name"/> (given at construction), read by the next run.</summary>
    public Span<float> FloatInput(string name) => _floatInputs[name];

    void Bind(string name, OrtValue value, bool input)
    {
        _values.Add(value);
        if (input) _binding.BindInput(name, value);
        else _binding.BindOutput(name, value);
    }

    public void Dispose()
    {
        foreach (var v in _values) v.Dispose();
        _binding?.Dispose();
        _session?.Dispose();
        _options.Dispose();
        _run.Dispose();
    }
}
