namespace Sparsity.Training;

/// <summary>Sparsity of one layer on one tracked training batch (a row of sparsity.jsonl).</summary>
/// <param name="Layer">Layer index.</param>
/// <param name="NonzeroFraction">Mean fraction of units active per token.</param>
/// <param name="PerTokenUnitsMean">Mean active units per token.</param>
/// <param name="PerSequenceUnitsMean">Mean units active on at least one token of a sequence.</param>
/// <param name="PerBatchUnitsMean">Units active anywhere in the batch.</param>
/// <param name="UnitsMasked">Units masked so far (Wild &amp; Anderson's masking experiment).</param>
public sealed record LayerLogEntry(
    int Layer,
    double NonzeroFraction,
    double PerTokenUnitsMean,
    double PerSequenceUnitsMean,
    double PerBatchUnitsMean,
    int UnitsMasked
);

/// <summary>One line of sparsity.jsonl: written every track_every steps, every eval_every steps, and at the last
/// step.</summary>
/// <param name="Step">Step whose forward pass was measured (before its update).</param>
/// <param name="TokensSeen">Training tokens processed before this step.</param>
/// <param name="Loss">Training cross-entropy of the step's batch (nats/token).</param>
/// <param name="LearningRate">Learning rate of the step.</param>
/// <param name="HeldOutLoss">Held-out cross-entropy, on evaluation steps.</param>
/// <param name="BatchSize">Windows in the measured batch (per-batch use depends on it).</param>
/// <param name="Layers">Per-layer sparsity, on tracking steps.</param>
public sealed record TrainingLogEntry(
    int Step,
    long TokensSeen,
    double Loss,
    double LearningRate,
    double? HeldOutLoss,
    int BatchSize,
    IReadOnlyList<LayerLogEntry>? Layers
);

/// <summary>unit_death.json: when each unit last fired during training.</summary>
/// <param name="LastStep">Last step of the run.</param>
/// <param name="Threshold">Activation threshold used.</param>
/// <param name="Layers">Per layer.</param>
public sealed record UnitDeathLog(int LastStep, float Threshold, IReadOnlyList<LayerDeath> Layers);

/// <summary>Death steps of one layer's units.</summary>
/// <param name="Layer">Layer index.</param>
/// <param name="DFf">Units.</param>
/// <param name="NeverActive">Units never active on any training token.</param>
/// <param name="SilentForLastTenth">Units inactive over the final 10 % of the steps (death step ≤ 0.9 · last
/// step).</param>
/// <param name="LastActiveStep">Per unit: last step it was active (−1 = never).</param>
/// <param name="DeathStep">Per unit: first step from which it never fired again; null = fired on the last step.</param>
public sealed record LayerDeath(
    int Layer,
    int DFf,
    int NeverActive,
    int SilentForLastTenth,
    long[] LastActiveStep,
    long?[] DeathStep
);

/// <summary>Progress of a training run, reported after each step.</summary>
public sealed record TrainProgress(
    int Step,
    int Steps,
    double Loss,
    double TokensPerSecond,
    TimeSpan Elapsed,
    TimeSpan Remaining,
    double? HeldOutLoss,
    IReadOnlyList<LayerLogEntry>? Layers,
    string? Message = null
);

/// <summary>What a finished run measured.</summary>
public sealed record TrainSummary(
    string OutDir,
    int Steps,
    TimeSpan Elapsed,
    long TrainTokens,
    long HeldOutTokens,
    double FinalLoss,
    double? FinalHeldOutLoss,
    double[] FirstNonzeroFraction,
    double[] LastNonzeroFraction,
    int[] SilentForLastTenth,
    int[] MaskedUnits
);
