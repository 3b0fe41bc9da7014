using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Sparsity.Tests;

/// <summary>Runs an ONNX model in ONNX Runtime on int64 inputs and returns every output as a float or long array with
/// its shape.</summary>
public static class OrtRunner
{
    public sealed record Output(long[] Shape, float[]? Floats, long[]? Longs);

    public static Dictionary<string, Output> Run(
        string modelPath,
        params (string Name, long[] Data, long[] Shape)[] inputs
    ) => Run(modelPath, inputs, []);

    /// <summary>The same with float32 vector inputs besides the int64 ones.</summary>
    public static Dictionary<string, Output> Run(
        string modelPath,
        (string Name, long[] Data, long[] Shape)[] inputs,
        (string Name, float[] Data)[] floats
    )
    {
        using var options = new SessionOptions { IntraOpNumThreads = 2 };
        using var session = new InferenceSession(modelPath, options);
        var values = inputs
            .Select(i => OrtValue.CreateTensorValueFromMemory(i.Data, i.Shape))
            .Concat(floats.Select(f => OrtValue.CreateTensorValueFromMemory(f.Data, [f.Data.Length])))
            .ToList();
        try
        {
            using var runOptions = new RunOptions();
            var names = session.OutputNames.ToList();
            using var results = session.Run(
                runOptions,
                inputs.Select(i => i.Name).Concat(floats.Select(f => f.Name)).ToList(),
                values,
                names
            );
            var outputs = new Dictionary<string, Output>();
            for (int i = 0; i < names.Count; i++)
            {
                var info = results[i].GetTensorTypeAndShape();
                outputs[names[i]] =
                    info.ElementDataType == TensorElementType.Int64
                        ? new Output(info.Shape, null, results[i].GetTensorDataAsSpan<long>().ToArray())
                        : new Output(info.Shape, results[i].GetTensorDataAsSpan<float>().ToArray(), null);
            }
            return outputs;
        }
        finally
        {
            foreach (var v in values)
                v.Dispose();
        }
    }
}
