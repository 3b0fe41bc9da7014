using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using Sparsity.Export;

namespace Sparsity.Pipeline.Runtime;

/// <summary>
/// How a <see cref="ModelRunner"/> drives ONNX Runtime beyond the defaults. <c>FixedShapes</c>: the batch and window
/// sizes are given to the session (free-dimension overrides), so shape arithmetic is folded into constants and the
/// optimizer's fusions see full shapes. <c>CudaGraph</c> (a GPU, fixed shapes): inputs and outputs at fixed device
/// addresses and the whole step captured once as a CUDA graph, then replayed. <c>ProfilePrefix</c>: ONNX Runtime's
/// profiler on, its JSON at that prefix (<see cref="ModelRunner.EndProfiling"/>). <c>OutputsOnDevice</c>: outputs stay
/// where they were computed and are never read (a forward pass timed as a user's own loop would run it).
/// </summary>
public sealed record RunnerTuning(
    bool FixedShapes = false,
    bool CudaGraph = false,
    string? ProfilePrefix = null,
    bool OutputsOnDevice = false
);

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
    readonly long[] _ids,
        _mask;
    readonly Array[] _outputs;
    readonly bool[] _sizedByRun; // outputs whose shape was not known when the runner was made
    readonly int[] _lengths; // elements of each output in the last run (buffers of outputs sized by the run only grow)
    readonly List<OrtValue> _values = [];
    readonly (string[] Inputs, OrtValue[] Values, string[] Outputs)? _onDevice;
    readonly List<CudaBuffer> _deviceBuffers = []; // CUDA graphs: ids, mask (if read), then each output
    readonly bool _outputsStay;
    readonly OrtMemoryInfo? _cudaMemory; // the GPU's memory, where outputs left on the device live
    OrtIoBinding? _stepBinding; // RunKeeping's, rebound each step

    /// <summary>
    /// Opens <paramref name="bound"/> on <paramref name="device"/> for batches of <paramref name="batch"/> ×
    /// <paramref name="seqLen"/>;
    /// <paramref name="outputs"/> are the outputs to compute (float32 or int64) with their shapes for that batch (null:
    /// not known before the run). <paramref name="bindOutputs"/> false (always on a GPU, and with an unknown shape) has
    /// ONNX Runtime return the outputs, copied into the same buffers. <paramref name="tuning"/>: see
    /// <see cref="RunnerTuning"/>.
    /// </summary>
    public ModelRunner(
        ModelProto bound,
        Device device,
        int threads,
        int batch,
        int seqLen,
        IReadOnlyList<(string Name, long[]? Shape)> outputs,
        bool bindOutputs = true,
        RunnerTuning? tuning = null
    )
    {
        tuning ??= new RunnerTuning();
        bool cudaGraph = tuning.CudaGraph && device.CudaId != null;
        if (cudaGraph && outputs.Any(o => o.Shape == null))
            throw new ArgumentException("A CUDA graph needs every output's shape before the run.", nameof(outputs));
        Batch = batch;
        SeqLen = seqLen;
        _options = new SessionOptions
        {
            IntraOpNumThreads = threads > 0 ? threads : Environment.ProcessorCount,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        if (tuning.FixedShapes || cudaGraph)
            foreach (
                var input in bound.Graph.Input.Where(i => i.Name is GraphInputs.TokenInput or GraphInputs.MaskInput)
            )
            {
                var dims = input.Type.TensorType.Shape?.Dim;
                if (dims is not { Count: 2 })
                    continue;
                for (int d = 0; d < 2; d++)
                    if (!string.IsNullOrEmpty(dims[d].DimParam))
                        _options.AddFreeDimensionOverrideByName(dims[d].DimParam, d == 0 ? batch : seqLen);
            }
        if (tuning.ProfilePrefix != null)
        {
            _options.ProfileOutputPathPrefix = tuning.ProfilePrefix; // read when profiling is enabled, so set first
            _options.EnableProfiling = true;
        }
        try
        {
            device.Configure(_options, cudaGraph);
            _session = OrtSession.Open(
                OnnxGraph.WithOnlyOutputs(bound, outputs.Select(o => o.Name).ToList()),
                _options
            );
        }
        catch (OnnxRuntimeException e)
        {
            _options.Dispose();
            throw new UserInputException(
                $"ONNX Runtime could not open the model on {device}: {e.Message.Split('\n')[0]}",
                e
            );
        }
        _binding = _session.CreateIoBinding();
        if (device.CudaId is int cuda)
            _cudaMemory = new OrtMemoryInfo("Cuda", OrtAllocatorType.DeviceAllocator, cuda, OrtMemType.Default);
        long[] shape = [batch, seqLen];
        _outputsStay = tuning.OutputsOnDevice;
        if (cudaGraph)
        {
            BindOnDevice(device.CudaId!.Value, outputs);
            (_ids, _mask, _outputs, _sizedByRun, _lengths) = (
                [],
                [],
                new Array[outputs.Count],
                new bool[outputs.Count],
                new int[outputs.Count]
            );
            for (int i = 0; i < outputs.Count; i++)
            {
                long size = outputs[i].Shape!.Aggregate(1L, (a, d) => a * d);
                _lengths[i] = (int)size;
                _outputs[i] =
                    _session.OutputMetadata[outputs[i].Name].ElementDataType == TensorElementType.Float
                        ? new float[size]
                        : new long[size];
            }
            return;
        }
        _ids = new long[batch * seqLen];
        _mask = new long[batch * seqLen];
        Bind(GraphInputs.TokenInput, OrtValue.CreateTensorValueFromMemory(_ids, shape), input: true);
        var inputs = new List<(string Name, OrtValue Value)> { (GraphInputs.TokenInput, _values[0]) };
        if (_session.InputNames.Contains(GraphInputs.MaskInput))
        {
            Bind(GraphInputs.MaskInput, OrtValue.CreateTensorValueFromMemory(_mask, shape), input: true);
            inputs.Add((GraphInputs.MaskInput, _values[^1]));
        }
        if (_outputsStay)
        {
            // Outputs where they were computed (the device's memory on a GPU), never copied back.
            foreach (var (name, _) in outputs)
                _binding.BindOutputToDevice(name, DeviceMemory);
            (_outputs, _sizedByRun, _lengths) = (
                new Array[outputs.Count],
                new bool[outputs.Count],
                new int[outputs.Count]
            );
            return;
        }
        if (device.CudaId != null || !bindOutputs || outputs.Any(o => o.Shape == null))
            _onDevice = (
                inputs.Select(i => i.Name).ToArray(),
                inputs.Select(i => i.Value).ToArray(),
                outputs.Select(o => o.Name).ToArray()
            );
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
                    if (outputShape != null)
                        Bind(name, OrtValue.CreateTensorValueFromMemory(floats, outputShape), input: false);
                    break;
                case TensorElementType.Int64:
                    var longs = new long[size];
                    _outputs[i] = longs;
                    if (outputShape != null)
                        Bind(name, OrtValue.CreateTensorValueFromMemory(longs, outputShape), input: false);
                    break;
                case TensorElementType.Bool
                or TensorElementType.Float16
                or TensorElementType.BFloat16 when outputShape == null:
                    // Read through RunNamed only: flags (sparse decoding's overflow), a half model's logits and cache.
                    _outputs[i] = Array.Empty<bool>();
                    break;
                case var other:
                    Dispose();
                    throw new UserInputException(
                        $"Output {name} is {other}; relu-sparsity reads float32 and int64 outputs."
                    );
            }
        }
    }

    /// <summary>Windows per batch.</summary>
    public int Batch { get; }

    /// <summary>Tokens per window.</summary>
    public int SeqLen { get; }

    /// <summary>Runs one batch (ids and padding mask, row-major [batch, seq]); the outputs are then in
    /// <see cref="Floats"/> / <see cref="Longs"/>.</summary>
    public void Run(ReadOnlySpan<long> ids, ReadOnlySpan<long> mask)
    {
        if (_deviceBuffers.Count > 0)
        {
            // A CUDA graph replays fixed addresses: the batch is copied into them, the outputs out of them.
            _deviceBuffers[0].Write(ids);
            int first = 1;
            if (_session.InputNames.Contains(GraphInputs.MaskInput))
                _deviceBuffers[first++].Write(mask);
            _session.RunWithBinding(_run, _binding);
            for (int i = 0; i < _outputs.Length; i++)
                if (_outputs[i] is float[] f)
                    _deviceBuffers[first + i].Read<float>(f);
                else
                    _deviceBuffers[first + i].Read<long>((long[])_outputs[i]);
            return;
        }
        ids.CopyTo(_ids);
        mask.CopyTo(_mask);
        if (_onDevice == null || _outputsStay)
        {
            _session.RunWithBinding(_run, _binding);
            return;
        }
        // On a GPU, ONNX Runtime copies each output to the host when the run ends (outputs bound to host buffers came
        // back as zeros from CUDA on an H100); the outputs read here are counts or logits, small beside the
        // activations.
        using var results = _session.Run(_run, _onDevice.Value.Inputs, _onDevice.Value.Values, _onDevice.Value.Outputs);
        for (int i = 0; i < _outputs.Length; i++)
        {
            if (_sizedByRun[i])
            {
                int count = checked((int)results[i].GetTensorTypeAndShape().ElementCount);
                if (_outputs[i].Length < count)
                    _outputs[i] = Array.CreateInstance(
                        _outputs[i].GetType().GetElementType()!,
                        Math.Max(count, 2 * _outputs[i].Length)
                    );
                _lengths[i] = count;
            }
            if (_outputs[i] is float[] f)
                results[i].GetTensorDataAsSpan<float>().CopyTo(f);
            else
                results[i].GetTensorDataAsSpan<long>().CopyTo((long[])_outputs[i]);
        }
    }

    /// <summary>
    /// Runs the session on named inputs of any shape and returns the named outputs (the caller disposes them): what a
    /// decoding step needs, whose key/value cache grows each call, where the bound buffers of <see cref="Run"/> cannot
    /// serve.
    /// </summary>
    public IDisposableReadOnlyCollection<OrtValue> RunNamed(
        IReadOnlyDictionary<string, OrtValue> inputs,
        IReadOnlyList<string> outputs
    ) => _session.Run(_run, [.. inputs.Keys], [.. inputs.Values], [.. outputs]);

    /// <summary>
    /// Runs the session on named inputs (in host or device memory) and returns <paramref name="toHost"/>, copied to
    /// host memory, then <paramref name="onDevice"/>, left where they were computed (the GPU's memory with CUDA); the
    /// caller disposes them. A decoding step: its key/value cache stays on the device and is the next step's input,
    /// while only the logits cross to the host.
    /// </summary>
    public IDisposableReadOnlyCollection<OrtValue> RunKeeping(
        IReadOnlyDictionary<string, OrtValue> inputs,
        IReadOnlyList<string> toHost,
        IReadOnlyList<string> onDevice
    )
    {
        _stepBinding ??= _session.CreateIoBinding();
        _stepBinding.ClearBoundInputs();
        _stepBinding.ClearBoundOutputs();
        foreach (var (name, value) in inputs)
            _stepBinding.BindInput(name, value);
        foreach (var name in toHost)
            _stepBinding.BindOutputToDevice(name, OrtMemoryInfo.DefaultInstance);
        foreach (var name in onDevice)
            _stepBinding.BindOutputToDevice(name, DeviceMemory);
        _session.RunWithBinding(_run, _stepBinding);
        return _stepBinding.GetOutputValues(); // in the order bound
    }

    // Where outputs left on the device live: the GPU's memory with CUDA, else host memory.
    OrtMemoryInfo DeviceMemory => _cudaMemory ?? OrtMemoryInfo.DefaultInstance;

    /// <summary>The element type of input <paramref name="name"/>.</summary>
    public TensorElementType InputType(string name) => _session.InputMetadata[name].ElementDataType;

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

    /// <summary>Ends ONNX Runtime's profiling (<see cref="RunnerTuning.ProfilePrefix"/>) and returns its JSON
    /// file.</summary>
    public string EndProfiling() => _session.EndProfiling();

    // Inputs and outputs in device buffers allocated once, bound as tensors over them (the addresses a CUDA graph
    // keeps).
    void BindOnDevice(int device, IReadOnlyList<(string Name, long[]? Shape)> outputs)
    {
        var memory = DeviceMemory;
        void BindBuffer(string name, TensorElementType type, long[] shape, bool input)
        {
            long bytes = shape.Aggregate(1L, (a, d) => a * d) * 8 / (type == TensorElementType.Float ? 2 : 1);
            var buffer = new CudaBuffer(device, bytes);
            _deviceBuffers.Add(buffer);
            Bind(name, OrtValue.CreateTensorValueWithData(memory, type, shape, buffer.Pointer, bytes), input);
        }
        long[] shape = [Batch, SeqLen];
        BindBuffer(GraphInputs.TokenInput, TensorElementType.Int64, shape, input: true);
        if (_session.InputNames.Contains(GraphInputs.MaskInput))
            BindBuffer(GraphInputs.MaskInput, TensorElementType.Int64, shape, input: true);
        foreach (var (name, outputShape) in outputs)
        {
            var type = _session.OutputMetadata[name].ElementDataType;
            if (type is not (TensorElementType.Float or TensorElementType.Int64))
                throw new UserInputException(
                    $"Output {name} is {type}; relu-sparsity reads float32 and int64 outputs."
                );
            BindBuffer(name, type, outputShape!, input: false);
        }
    }

    void Bind(string name, OrtValue value, bool input)
    {
        _values.Add(value);
        if (input)
            _binding.BindInput(name, value);
        else
            _binding.BindOutput(name, value);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var v in _values)
            v.Dispose();
        foreach (var b in _deviceBuffers)
            b.Dispose();
        _binding?.Dispose();
        _stepBinding?.Dispose();
        _cudaMemory?.Dispose();
        _session?.Dispose();
        _options.Dispose();
        _run.Dispose();
    }
}
