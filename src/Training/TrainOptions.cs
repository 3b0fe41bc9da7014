namespace Sparsity.Training;

/// <summary>How to train. Every field has a documented default; <see cref="Validate"/> checks them up front.</summary>
public sealed record TrainOptions
{
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 1000;

    /// <summary>Windows per step.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Peak learning rate (AdamW).</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Learning rate at the end of the cosine decay.</summary>
    public double MinLearningRate { get; init; } = 1e-4;

    /// <summary>Steps of linear warm-up from 0 to the peak.</summary>
    public int WarmupSteps { get; init; } = 100;

    /// <summary>AdamW decoupled weight decay on weight matrices (not biases, norms or embeddings).</summary>
    public double WeightDecay { get; init; } = 0.1;

    /// <summary>AdamW β1.</summary>
    public double Beta1 { get; init; } = 0.9;

    /// <summary>AdamW β2.</summary>
    public double Beta2 { get; init; } = 0.95;

    /// <summary>Clip the global gradient norm to this (0 = off).</summary>
    public double GradClip { get; init; } = 1.0;

    /// <summary>Seeds initialisation and window sampling: a re-run on the same machine repeats the loss
    /// curve.</summary>
    public int Seed { get; init; } = 1337;

    /// <summary>Write sparsity of the training batch to the log every this many steps.</summary>
    public int TrackEvery { get; init; } = 25;

    /// <summary>Evaluate held-out loss every this many steps (and at the last step).</summary>
    public int EvalEvery { get; init; } = 250;

    /// <summary>Held-out batches per evaluation (fixed windows from the start of the held-out text).</summary>
    public int EvalBatches { get; init; } = 8;

    /// <summary>L1 penalty λ on MLP activations: loss += λ · mean over layers of mean |h|.</summary>
    public double L1 { get; init; }

    /// <summary>At this step, mask units unused in the previous <see cref="MaskWindow"/> steps for the rest of training
    /// (0 = never).</summary>
    public int MaskUnusedAt { get; init; }

    /// <summary>Steps a unit must have been silent to be masked at <see cref="MaskUnusedAt"/>.</summary>
    public int MaskWindow { get; init; } = 200;

    /// <summary>
    /// Train on random labels (Li et al. §3): each next-token target is replaced by a uniformly random token id
    /// (seeded), the inputs stay the real text. Held-out loss is still measured on the real next tokens.
    /// </summary>
    public bool RandomTargets { get; init; }

    /// <summary>A unit is active when its activation exceeds this (0 for ReLU).</summary>
    public float Threshold { get; init; }

    /// <summary>CPU threads for TorchSharp (0 = all cores).</summary>
    public int Threads { get; init; }

    /// <summary>Throws <see cref="UserInputException"/> naming the first invalid option.</summary>
    public void Validate()
    {
        if (Steps < 1)
            throw new UserInputException($"steps must be at least 1; got {Steps}.");
        if (BatchSize < 1)
            throw new UserInputException($"batch_size must be at least 1; got {BatchSize}.");
        if (!(LearningRate > 0) || MinLearningRate < 0 || MinLearningRate > LearningRate)
            throw new UserInputException("learning_rate must be positive and min_learning_rate in [0, learning_rate].");
        if (WarmupSteps < 0)
            throw new UserInputException("warmup_steps must not be negative.");
        if (TrackEvery < 1 || EvalEvery < 1 || EvalBatches < 1)
            throw new UserInputException("track_every, eval_every and eval_batches must be at least 1.");
        if (L1 < 0)
            throw new UserInputException("l1 must not be negative.");
        if (MaskUnusedAt < 0 || MaskWindow < 1 || (MaskUnusedAt > 0 && MaskWindow > MaskUnusedAt))
            throw new UserInputException("mask_unused_at must be 0 (off) or at least mask_window (≥ 1).");
        if (Threads < 0)
            throw new UserInputException("threads must not be negative.");
    }

    /// <summary>Linear warm-up to the peak, then cosine decay to the minimum at the last step (nanoGPT's
    /// schedule).</summary>
    public double LearningRateAt(int step)
    {
        if (step < WarmupSteps)
            return LearningRate * (step + 1) / WarmupSteps;
        if (Steps <= WarmupSteps + 1)
            return LearningRate;
        double progress = Math.Min(1.0, (double)(step - WarmupSteps) / (Steps - 1 - WarmupSteps));
        return MinLearningRate + 0.5 * (1 + Math.Cos(Math.PI * progress)) * (LearningRate - MinLearningRate);
    }
}
