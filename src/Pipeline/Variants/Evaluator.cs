using System.Diagnostics;
using Google.Protobuf;
using MathNet.Numerics.Statistics;
using Microsoft.ML.OnnxRuntime;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Pipeline.Streaming;

namespace Sparsity.Pipeline.Variants;

/// <summary>What to evaluate and how.</summary>
/// <remarks>
/// Encoder-decoder models (<see cref="EncoderDecoder"/>) are scored teacher-forced on pairs, as <c>analyze</c> reads
/// them: <c>Pairs</c>, <c>DecoderStartId</c> and <c>PadId</c> as there (<see cref="PairCorpus.SettingsFor"/>).
/// </remarks>
public sealed record EvaluationRequest(
    string Model,
    string Corpus,
    string Tokenizer,
    int SeqLen,
    int BatchSize,
    long? MaxTokens = null,
    double NoiseFraction = 0.1,
    int Seed = 0,
    int Threads = 2,
    int WarmupRuns = 3,
    int TimedRuns = 20,
    IReadOnlyList<string>? Activations = null,
    Device? Device = null,
    PairSource? Pairs = null,
    long? DecoderStartId = null,
    long? PadId = null
);

/// <summary>Quality and cost of one model on held-out text (evaluation.json).</summary>
public sealed record Evaluation(
    string Model,
    string Corpus,
    int SeqLen,
    int BatchSize,
    long Predictions,
    double Loss,
    double Perplexity,
    double Accuracy,
    double ExpectedCalibrationError,
    double NoiseFraction,
    double NoisyAccuracy,
    long Parameters,
    long MlpFlopsPerToken,
    int[] UnitsPerLayer,
    int Threads,
    double MedianMsPerBatch,
    double P10MsPerBatch,
    double P90MsPerBatch,
    double TokensPerSecond
);

/// <summary>
/// Held-out quality (loss, perplexity, next-token accuracy, ECE, accuracy with a seeded fraction of input
/// tokens replaced by random ids) and cost (parameters, MLP FLOPs per token, latency) of an ONNX language
/// model. Runs the model stripped to its logits output through <see cref="ModelRunner"/>, with a fixed thread count.
/// An encoder-decoder model is scored on the targets of its pairs, the decoder teacher-forced (as T5 trains): each
/// real target position predicts its target token; the noise replaces source and decoder input tokens alike.
/// </summary>
public static class Evaluator
{
    /// <summary>Evaluates <paramref name="r"/>'s model on its corpus; see the class summary.</summary>
    public static Evaluation Run(EvaluationRequest r)
    {
        if (r.NoiseFraction is < 0 or > 1)
            throw new UserInputException($"--noise must be in [0, 1]; got {r.NoiseFraction}.");
        var loaded = EncoderDecoder.IsFolder(r.Model) ? EncoderDecoder.LoadFolder(r.Model) : OnnxGraph.Load(r.Model);
        var pairs = PairCorpus.SettingsFor(r.Model, loaded, r.Corpus, r.Pairs, r.DecoderStartId, r.PadId);
        var (proto, inputs) = GraphInputs.Bind(loaded);
        string logits = GraphInputs.LogitsOutput(proto)?.Name
            ?? throw new UserInputException(
                $"{r.Model} has no logits output (an output named logits, or a single float output of rank 3); evaluate scores next-token predictions."
            );
        long vocab = GraphInputs.VocabularySize(proto)
            ?? throw new UserInputException(
                $"{r.Model}: cannot tell the vocabulary size (the logits' last dimension is dynamic and no token embedding is gathered by the token input)."
            );
        var sites = MlpSitesOrNone(proto, r.Activations ?? ["Relu"]);
        var tokenizer = TextTokenizer.FromSpec(r.Tokenizer);
        var deployed = OnnxGraph.WithOnlyOutput(proto, logits);
        if (pairs == null)
            GraphCheck.RequireCausal(
                deployed,
                vocab,
                r.Model,
                "evaluate, prune --out DIR and topk --out DIR score next-token predictions. analyze, instrument, and prune/topk to a .onnx file work on encoders."
            );

        // Pairs: rows of T source ids then T decoder input ids; the logits are the decoder's, [B, T, vocab].
        int width = pairs == null ? r.SeqLen : 2 * r.SeqLen;
        using var runner = new ModelRunner(
            deployed,
            r.Device ?? Device.Cpu,
            r.Threads,
            r.BatchSize,
            width,
            [(logits, [r.BatchSize, r.SeqLen, vocab])]
        );
        var clean = new NextTokenQuality();
        var noisy = new NextTokenQuality();
        var random = new Random(r.Seed);
        long[]? firstBatch = null,
            firstMask = null;
        var batches =
            pairs == null
                ? CorpusBatches.Pack(
                    CorpusBatches.Tokens(r.Corpus, tokenizer, r.SeqLen),
                    r.SeqLen,
                    r.BatchSize,
                    r.MaxTokens,
                    0,
                    1,
                    vocab
                )
                : PairCorpus.Batches(r.Corpus, tokenizer, pairs, r.SeqLen, r.BatchSize, r.MaxTokens, vocab);
        foreach (var batch in batches)
        {
            firstBatch ??= batch.InputIds;
            firstMask ??= batch.AttentionMask;
            Score(runner, batch, batch.InputIds, r.SeqLen, vocab, clean);
            long[] corrupted = (long[])batch.InputIds.Clone();
            for (int i = 0; i < corrupted.Length; i++)
                if (batch.AttentionMask[i] == 1 && random.NextDouble() < r.NoiseFraction)
                    corrupted[i] = random.NextInt64(vocab);
            Score(runner, batch, corrupted, r.SeqLen, vocab, noisy);
        }
        if (firstBatch == null || clean.Predictions == 0)
            throw new UserInputException(
                $"The corpus {r.Corpus} gives no next-token predictions at --seq-len {r.SeqLen}."
            );

        var times = Time(runner, firstBatch, firstMask!, r);
        int dModel = sites.Count == 0 ? 0 : DModel(proto, sites[0]);
        return new Evaluation(
            Path.GetFileName(r.Model),
            r.Corpus,
            r.SeqLen,
            r.BatchSize,
            clean.Predictions,
            clean.Loss,
            clean.Perplexity,
            clean.Accuracy,
            clean.ExpectedCalibrationError,
            r.NoiseFraction,
            noisy.Accuracy,
            Surgery.Parameters(proto),
            sites.Sum(s => (s.Gate == null ? 4L : 6L) * dModel * s.DFf),
            sites.Select(s => s.DFf).ToArray(),
            r.Threads,
            SortedArrayStatistics.Quantile(times, 0.5),
            SortedArrayStatistics.Quantile(times, 0.1),
            SortedArrayStatistics.Quantile(times, 0.9),
            r.BatchSize * r.SeqLen / (SortedArrayStatistics.Quantile(times, 0.5) / 1000)
        );
    }

    // Predictions inside each window: position t predicts t+1 when both are real tokens; targets are always the clean
    // ids. Pairs: decoder position t predicts target t wherever the target is real.
    static void Score(ModelRunner runner, BatchRow batch, long[] ids, int seqLen, long vocab, NextTokenQuality quality)
    {
        var mask = batch.AttentionMask;
        runner.Run(ids, mask);
        var logits = runner.Floats(0);
        bool pairs = batch.Targets.Length > 0;
        for (int w = 0; w < runner.Batch; w++)
        for (int t = 0; t < seqLen; t++)
        {
            int p = w * seqLen + t; // the logits' position
            if (pairs)
            {
                if (mask[w * 2 * seqLen + seqLen + t] == 1)
                    quality.Add(logits.Slice(p * (int)vocab, (int)vocab), (int)batch.Targets[p]);
            }
            else if (t + 1 < seqLen && mask[p] == 1 && mask[p + 1] == 1)
                quality.Add(logits.Slice(p * (int)vocab, (int)vocab), (int)batch.InputIds[p + 1]);
        }
    }

    static double[] Time(ModelRunner runner, long[] ids, long[] mask, EvaluationRequest r)
    {
        for (int i = 0; i < r.WarmupRuns; i++)
            runner.Run(ids, mask);
        var times = new double[r.TimedRuns];
        for (int i = 0; i < times.Length; i++)
        {
            var clock = Stopwatch.StartNew();
            runner.Run(ids, mask);
            times[i] = clock.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return times;
    }

    // Evaluation needs no MLP sites: without them, MLP FLOPs and units per layer are left empty.
    static IReadOnlyList<MlpSite> MlpSitesOrNone(Onnx.ModelProto model, IReadOnlyList<string> activations)
    {
        try
        {
            return MlpSites.Find(model, activations);
        }
        catch (UserInputException)
        {
            return [];
        }
    }

    static int DModel(Onnx.ModelProto model, MlpSite site)
    {
        var weight = model.Graph.Initializer.First(t => t.Name == site.Down.Weight);
        return (int)(site.Down.TransB == 1 ? weight.Dims[0] : weight.Dims[1]);
    }
}
