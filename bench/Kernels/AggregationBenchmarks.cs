using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Sparsity.Analysis;

namespace Sparsity.Kernels.Bench;

/// <summary>
/// The per-batch aggregation kernels of <c>analyze</c> on one layer's batch [B, T, d_ff] of ReLU outputs with
/// a realistic fraction active: the vectorised <see cref="LayerUnitUse.AddDense"/>, the scalar loop it
/// replaced, and <see cref="LayerUnitUse.AddBatch"/> (what the statistics graph leaves to do).
/// </summary>
[MemoryDiagnoser, MedianColumn, MinColumn, MaxColumn]
public class AggregationBenchmarks
{
    [Params(512, 2048)]
    public int DFf;

    [Params(0.25)]
    public double Active;
    const int B = 16,
        T = 128;
    float[] _activations = [];
    bool[] _real = [];
    int[] _unitsPerToken = [],
        _unitsPerSequence = [];
    long[] _tokensPerUnit = [];

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1);
        _activations = new float[B * T * DFf];
        for (int i = 0; i < _activations.Length; i++)
            _activations[i] = random.NextDouble() < Active ? (float)random.NextDouble() : 0f;
        _real = Enumerable.Range(0, B * T).Select(i => i < B * T - 40).ToArray(); // the last window partly padded
        var use = new LayerUnitUse(DFf);
        use.AddDense(_activations, B, T, _real);
        _unitsPerToken = Enumerable.Range(0, B * T - 40).Select(_ => (int)(DFf * Active)).ToArray();
        _unitsPerSequence = Enumerable.Repeat(DFf / 2, B).ToArray();
        _tokensPerUnit = use.TokensPerUnit.ToArray();
    }

    [Benchmark(Baseline = true, Description = "AddDense (Vector<T>)")]
    public long AddDense()
    {
        var use = new LayerUnitUse(DFf);
        use.AddDense(_activations, B, T, _real);
        return use.Tokens;
    }

    [Benchmark(Description = "scalar loop (what it replaced)")]
    public long Scalar()
    {
        var use = new LayerUnitUse(DFf);
        var tokensPerUnit = new long[DFf];
        var inSequence = new bool[DFf];
        var perToken = new List<int>(B * T);
        var perSequence = new List<int>(B);
        for (int b = 0; b < B; b++)
        {
            Array.Clear(inSequence);
            bool any = false;
            for (int t = 0; t < T; t++)
            {
                if (!_real[b * T + t])
                    continue;
                any = true;
                int count = 0,
                    row = (b * T + t) * DFf;
                for (int u = 0; u < DFf; u++)
                    if (_activations[row + u] > 0f)
                    {
                        count++;
                        tokensPerUnit[u]++;
                        inSequence[u] = true;
                    }
                perToken.Add(count);
            }
            if (any)
                perSequence.Add(inSequence.Count(x => x));
        }
        use.AddBatch(perToken.ToArray(), perSequence.ToArray(), tokensPerUnit);
        return use.Tokens;
    }

    [Benchmark(Description = "AddBatch (counts from the stats graph)")]
    public long AddBatch()
    {
        var use = new LayerUnitUse(DFf);
        use.AddBatch(_unitsPerToken, _unitsPerSequence, _tokensPerUnit);
        return use.Tokens;
    }
}

public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
