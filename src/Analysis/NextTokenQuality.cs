namespace Sparsity.Analysis;

/// <summary>
/// Language-model quality from logits, as exact sums that merge: mean cross-entropy (nats/token),
/// perplexity, next-token accuracy and expected calibration error over 15 equal-width confidence
/// bins, ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| (confidence = probability of the argmax).
/// </summary>
public sealed class NextTokenQuality
{
    /// <summary>Confidence bins of the ECE.</summary>
    public const int Bins = 15;

    readonly long[] _binCount = new long[Bins];
    readonly long[] _binCorrect = new long[Bins];
    readonly double[] _binConfidence = new double[Bins];
    double _nll;

    /// <summary>Predictions counted.</summary>
    public long Predictions { get; private set; }

    /// <summary>Predictions whose argmax was the target.</summary>
    public long Correct { get; private set; }

    /// <summary>Adds one prediction: the logits over the vocabulary and the true next token.</summary>
    public void Add(ReadOnlySpan<float> logits, int target)
    {
        if ((uint)target >= (uint)logits.Length)
            throw new ArgumentOutOfRangeException(
                nameof(target),
                $"Target {target} outside a vocabulary of {logits.Length}."
            );
        int argmax = 0;
        float max = logits[0];
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > max)
            {
                max = logits[i];
                argmax = i;
            }
        double sum = 0;
        foreach (float l in logits)
            sum += Math.Exp(l - max);
        double logSum = Math.Log(sum) + max;
        _nll += logSum - logits[target];
        double confidence = Math.Exp(max - logSum);
        int bin = Math.Min(Bins - 1, (int)(confidence * Bins));
        _binCount[bin]++;
        _binConfidence[bin] += confidence;
        Predictions++;
        if (argmax == target)
        {
            _binCorrect[bin]++;
            Correct++;
        }
    }

    /// <summary>Adds another accumulator's sums.</summary>
    public void Merge(NextTokenQuality other)
    {
        for (int b = 0; b < Bins; b++)
        {
            _binCount[b] += other._binCount[b];
            _binCorrect[b] += other._binCorrect[b];
            _binConfidence[b] += other._binConfidence[b];
        }
        _nll += other._nll;
        Predictions += other.Predictions;
        Correct += other.Correct;
    }

    /// <summary>Mean cross-entropy in nats per predicted token (NaN before any prediction).</summary>
    public double Loss => Predictions == 0 ? double.NaN : _nll / Predictions;

    /// <summary>exp(loss).</summary>
    public double Perplexity => Math.Exp(Loss);

    /// <summary>Fraction of predictions whose argmax was the target.</summary>
    public double Accuracy => Predictions == 0 ? double.NaN : (double)Correct / Predictions;

    /// <summary>Expected calibration error over 15 equal-width bins of confidence.</summary>
    public double ExpectedCalibrationError
    {
        get
        {
            if (Predictions == 0)
                return double.NaN;
            double ece = 0;
            for (int b = 0; b < Bins; b++)
                if (_binCount[b] > 0)
                    ece +=
                        (double)_binCount[b]
                        / Predictions
                        * Math.Abs((double)_binCorrect[b] / _binCount[b] - _binConfidence[b] / _binCount[b]);
            return ece;
        }
    }
}
