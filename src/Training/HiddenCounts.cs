using static TorchSharp.torch;

namespace Sparsity.Training;

/// <summary>
/// One layer's activations of a batch reduced to the counts <see cref="Sparsity.Analysis.LayerUnitUse.AddBatch"/>
/// takes, computed on the tensor's device so only counts reach the host.
/// </summary>
/// <param name="UnitsPerToken">Active units on each real token.</param>
/// <param name="UnitsPerSequence">Distinct active units of each sequence with a real token.</param>
/// <param name="TokensPerUnit">Real tokens each unit was active on.</param>
public sealed record HiddenCounts(int[] UnitsPerToken, int[] UnitsPerSequence, long[] TokensPerUnit)
{
    /// <summary>Counts of <paramref name="hidden"/> [B, T, d_ff]; <paramref name="realToken"/> [B, T] (bool) marks real
    /// tokens, null = all.</summary>
    public static HiddenCounts Of(Tensor hidden, Tensor? realToken, float threshold)
    {
        using var scope = NewDisposeScope();
        var active = hidden > threshold; // (B, T, d_ff)
        if (realToken is not null)
            active = active.logical_and(realToken.unsqueeze(-1));
        var perToken = active.sum(-1, type: ScalarType.Int32); // (B, T)
        var perSequence = active.any(1).sum(-1, type: ScalarType.Int32); // (B)
        if (realToken is not null)
        {
            perToken = perToken.masked_select(realToken);
            perSequence = perSequence.masked_select(realToken.any(1));
        }
        return new HiddenCounts(
            perToken.data<int>().ToArray(),
            perSequence.data<int>().ToArray(),
            active.sum([0, 1], type: ScalarType.Int64).data<long>().ToArray()
        );
    }
}
