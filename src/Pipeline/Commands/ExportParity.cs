using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using Sparsity.Training.Model;
using static TorchSharp.torch;

namespace Sparsity.Pipeline.Commands;

/// <summary>Checks an exported graph against the TorchSharp forward it was made from (as llm.c checks against PyTorch).</summary>
static class ExportParity
{
    /// <summary>Largest logit difference accepted.</summary>
    public const float Tolerance = 1e-4f;

    /// <summary>Max |logits| difference between ONNX Runtime and TorchSharp on seeded random ids.</summary>
    public static float MaxLogitDifference(ReluTransformer model, ModelProto proto)
    {
        var c = model.Config;
        int batch = 2, seq = Math.Min(32, c.SeqLen);
        var random = new Random(0);
        long[] ids = Enumerable.Range(0, batch * seq).Select(_ => (long)random.Next(c.VocabSize)).ToArray();

        model.eval();
        float[] expected;
        using (no_grad())
        using (var input = tensor(ids, new long[] { batch, seq }))
        using (var logits = model.forward(input))
            expected = logits.data<float>().ToArray();

        using var options = new SessionOptions();
        using var session = OrtSession.Open(proto, options);
        using var value = OrtValue.CreateTensorValueFromMemory(ids, new long[] { batch, seq });
        using var runOptions = new RunOptions();
        using var results = session.Run(runOptions, ["input_ids"], [value], ["logits"]);
        var actual = results[0].GetTensorDataAsSpan<float>();
        float max = 0;
        for (int i = 0; i < expected.Length; i++) max = Math.Max(max, Math.Abs(actual[i] - expected[i]));
        return max;
    }
}
