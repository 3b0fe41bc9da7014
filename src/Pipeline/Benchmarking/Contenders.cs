using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Pipeline.Streaming;
using Sparsity.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Sparsity.Pipeline.Benchmarking;

/// <summary>
/// What a user would otherwise run to get the same numbers, each from a model file to statistics in memory
/// (loading included) on the same <see cref="TokenBatches"/> and thread count.
/// </summary>
public static class Contenders
{
    /// <summary>The bare forward pass: the model with its logits output only, nothing read back but logits.</summary>
    public static void BareForward(string onnxModel, TokenBatches data, int threads, Runtime.Device? device = null)
    {
        var (bound, _) = GraphInputs.Bind(OnnxGraph.Load(onnxModel));
        string logits = GraphInputs.LogitsOutput(bound)?.Name
            ?? throw new UserInputException($"{onnxModel} has no logits output to time the bare forward pass on.");
        long vocab = GraphInputs.VocabularySize(bound)
            ?? throw new UserInputException($"{onnxModel}: cannot tell the vocabulary size.");
        using var runner = new ModelRunner(
            OnnxGraph.WithOnlyOutput(bound, logits),
            device ?? Runtime.Device.Cpu,
            threads,
            data.BatchSize,
            data.SeqLen,
            [(logits, [data.BatchSize, data.SeqLen, vocab])]
        );
        foreach (var (ids, mask) in data.Batches)
            runner.Run(ids, mask);
    }

    /// <summary>
    /// A direct ONNX Runtime loop with the same statistics as <c>analyze</c>: the MLP activations written into
    /// reused output buffers (bound once, like IOBinding on CPU), counted with <see cref="LayerUnitUse.AddDense"/>.
    /// </summary>
    public static LayerUnitUse[] DirectStatistics(
        string onnxModel,
        TokenBatches data,
        int threads,
        Runtime.Device? device = null
    )
    {
        var plan = AnalysisPlan.For(OnnxGraph.Load(onnxModel), ["Relu"], 0f, dense: true);
        if (plan.Layers.Any(l => l.Outputs.Count != 1))
            throw new UserInputException(
                $"{onnxModel}: the direct loop reads dense activations; give the dense export."
            );
        var outputs = plan
            .Layers.Select(l =>
                (
                    l.Outputs[0].Name,
                    (long[]?)l.Outputs[0].Shape(data.BatchSize, data.SeqLen, l.DFf)!.Select(d => (long)d).ToArray()
                )
            )
            .ToList();
        using var runner = new ModelRunner(
            plan.Graph,
            device ?? Runtime.Device.Cpu,
            threads,
            data.BatchSize,
            data.SeqLen,
            outputs
        );
        var uses = plan.Layers.Select(l => new LayerUnitUse(l.DFf)).ToArray();
        var realToken = new bool[data.BatchSize * data.SeqLen];
        foreach (var batch in data.Batches)
        {
            runner.Run(batch.Ids, batch.Mask);
            for (int i = 0; i < realToken.Length; i++)
                realToken[i] = batch.Mask[i] == 1;
            for (int l = 0; l < uses.Length; l++)
                uses[l].AddDense(runner.Floats(l), data.BatchSize, data.SeqLen, realToken);
        }
        return uses;
    }

    /// <summary>The TorchSharp model's forward returning its MLP activations (what a forward hook captures), reduced to
    /// counts on the device.</summary>
    public static LayerUnitUse[] TorchSharpStatistics(string checkpointDir, TokenBatches data, int threads)
    {
        torch.set_num_threads(threads);
        var (model, _, info) = Checkpoint.Load(checkpointDir);
        using var _ = model;
        model.eval();
        using var noGrad = torch.no_grad();
        var uses = Enumerable.Range(0, info.Model.Layers).Select(_ => new LayerUnitUse(info.Model.DFf)).ToArray();
        foreach (var (ids, mask) in data.Batches)
        {
            using var scope = NewDisposeScope();
            var input = tensor(ids, [data.BatchSize, data.SeqLen]);
            var real = tensor(mask, [data.BatchSize, data.SeqLen]).eq(1);
            var (_, hidden) = model.Forward(input, keepHidden: true);
            for (int l = 0; l < uses.Length; l++)
            {
                var c = HiddenCounts.Of(hidden[l], real, 0f);
                uses[l].AddBatch(c.UnitsPerToken, c.UnitsPerSequence, c.TokensPerUnit);
            }
        }
        return uses;
    }
}
