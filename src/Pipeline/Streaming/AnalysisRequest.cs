using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Streaming;

/// <summary>
/// What <c>analyze</c> was asked: the model, the corpus and how to cut it, where the counts go, and how to run.
/// Commands parse options into it; the library never parses strings again.
/// </summary>
public sealed record AnalysisRequest
{
    /// <summary>An ONNX graph, or an Optimum encoder-decoder folder.</summary>
    public required string Model { get; init; }

    /// <summary>The corpus: text files or folders, token ids, or for an encoder-decoder a .tsv of pairs.</summary>
    public required string Corpus { get; init; }

    /// <summary>The tokenizer, parsed (<see cref="TokenizerSpec.Parse"/>).</summary>
    public required TokenizerSpec Tokenizer { get; init; }

    /// <summary>Window length T (an encoder-decoder: each side's).</summary>
    public required int SeqLen { get; init; }

    /// <summary>Windows (pairs) per batch B: one ONNX Runtime call; per-batch use depends on it.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Stop after this many tokens; null for the whole corpus.</summary>
    public long? MaxTokens { get; init; }

    /// <summary>This shard i of <see cref="ShardCount"/>: global batch g is analysed here when g mod n = i.</summary>
    public int ShardIndex { get; init; }

    /// <summary>Shards n.</summary>
    public int ShardCount { get; init; } = 1;

    /// <summary>A unit is active when its activation exceeds this.</summary>
    public float Threshold { get; init; }

    /// <summary>The devices, resolved (<see cref="Runtime.Devices.ResolveAll"/>); several: batches dealt to
    /// them.</summary>
    public IReadOnlyList<Runtime.Device> Devices { get; init; } = [Runtime.Device.Cpu];

    /// <summary>ONNX Runtime intra-op threads per session (0: all cores).</summary>
    public int Threads { get; init; }

    /// <summary>The output folder (written beside and swapped in).</summary>
    public required string OutDir { get; init; }

    /// <summary>Activation op types of MLP hidden layers.</summary>
    public IReadOnlyList<string> Activations { get; init; } = ["Relu"];

    /// <summary>Read the activations out and count them in .NET (ML.NET's ApplyOnnxModel) instead of in the
    /// graph.</summary>
    public bool DenseActivations { get; init; }

    /// <summary>Say where a batch's time goes, and the floor and the forward alone.</summary>
    public bool Timing { get; init; }

    /// <summary>fp32, or fp16 / bf16 on a GPU.</summary>
    public Precision Precision { get; init; } = Precision.Fp32;

    /// <summary>Count each batch on a thread of its own while the next one runs (default: on a GPU only, where the host
    /// is otherwise idle).</summary>
    public bool? CountingThread { get; init; }

    /// <summary>Keep each unit's K top windows and the histogram of its values (<see cref="UnitExamples"/>); 0 for
    /// none.</summary>
    public int TopExamples { get; init; }

    /// <summary>On a GPU, run attention as ONNX Runtime's fused kernel (checked exact first).</summary>
    public bool Fuse { get; init; } = true;

    /// <summary>On a GPU, capture each step as a CUDA graph.</summary>
    public bool CudaGraph { get; init; }

    /// <summary>Profile a few steady-state batches per operator type (profile.csv).</summary>
    public bool Profile { get; init; }

    /// <summary>An encoder-decoder's pairs: a .tsv of source&lt;TAB&gt;target lines (null: the default), or each window
    /// its own target.</summary>
    public PairSource? Pairs { get; init; }

    /// <summary>An encoder-decoder's decoder start id; null: config.json's.</summary>
    public long? DecoderStartId { get; init; }

    /// <summary>An encoder-decoder's pad id; null: config.json's.</summary>
    public long? PadId { get; init; }

    /// <summary>The devices as <c>--device</c> spells them.</summary>
    public string DeviceList => string.Join(",", Devices);
}

/// <summary>
/// Progress of an analysis: tokens so far, rate, and an estimate of the time left; on several devices, each one's share
/// (<see cref="Devices"/>, with its timing in the last report).
/// </summary>
public sealed record AnalysisProgress(
    long Tokens,
    long Batches,
    long Documents,
    long TotalDocuments,
    double TokensPerSecond,
    TimeSpan Elapsed,
    TimeSpan? Remaining,
    StreamTiming? Timing = null,
    IReadOnlyList<DeviceRate>? Devices = null,
    OperatorProfile? Profile = null
);

/// <summary>One device's share of an analysis on several: its tokens and rate so far, and its timing (<c>--timing</c>)
/// at the end.</summary>
public sealed record DeviceRate(string Device, long Tokens, double TokensPerSecond, StreamTiming? Timing = null);

/// <summary>
/// Where a batch's time went (<c>analyze --timing</c>), after the first batch (start-up, CUDA initialisation):
/// inside the model run, waiting for the next batch from the reading thread, and counting; and the floor, the
/// model alone on one batch with its outputs bound, timed <see cref="FloorRuns"/> times (median); and the forward alone
/// (<see cref="ForwardMsPerBatch"/>): the same prepared graph (fusions, precision, session) without its vocabulary
/// projection and without our statistics, its output left on the device, as a user's own ONNX Runtime loop would run
/// it (null when the graph's logits are not a projection of a hidden state).
/// </summary>
public sealed record StreamTiming(
    long Batches,
    int BatchTokens,
    double ModelSeconds,
    double WaitSeconds,
    double CountSeconds,
    double FloorMsPerBatch,
    int FloorRuns,
    double? ForwardMsPerBatch = null
)
{
    /// <summary>Steady-state milliseconds per batch of the whole stream.</summary>
    public double MsPerBatch => 1000 * (ModelSeconds + WaitSeconds + CountSeconds) / Math.Max(1, Batches);

    /// <summary>Steady-state ms per batch over the floor's.</summary>
    public double RatioToFloor => MsPerBatch / FloorMsPerBatch;
}
