using NUnit.Framework;
using Sparsity.Analysis;

namespace Sparsity.Tests;

[TestFixture]
public class LayerUnitUseTests
{
    // Two sequences of three tokens, four units. Hand-computed:
    //   seq 0: t0 units {0,1}, t1 {1}, t2 {}      → per token 2,1,0; per sequence {0,1} = 2
    //   seq 1: t0 {3},   t1 {0,2,3}, t2 {0}         → per token 1,3,1; per sequence {0,2,3} = 3
    //   batch: {0,1,2,3} = 4; unit counts 0:3, 1:2, 2:1, 3:2
    static readonly float[] Activations =
    {
        0.5f,
        2f,
        0f,
        -1f,
        0f,
        0.1f,
        0f,
        0f,
        0f,
        0f,
        -0.2f,
        0f,
        0f,
        0f,
        0f,
        3f,
        1f,
        0f,
        4f,
        0.01f,
        7f,
        0f,
        0f,
        0f,
    };

    [Test]
    public void DenseBatchGivesHandComputedStatistics()
    {
        var use = new LayerUnitUse(4);
        use.AddDense(Activations, batch: 2, seqLen: 3, realToken: default);

        Assert.That(use.Tokens, Is.EqualTo(6));
        Assert.That(use.Sequences, Is.EqualTo(2));
        Assert.That(use.Batches, Is.EqualTo(1));
        Assert.That(use.TokensPerUnit.ToArray(), Is.EqualTo(new long[] { 3, 2, 1, 2 }));
        Assert.That(use.PerTokenUnitUse.Mean, Is.EqualTo(8.0 / 6).Within(1e-12), "per-token mean");
        Assert.That(use.NonzeroFraction, Is.EqualTo(8.0 / 24).Within(1e-12), "nonzero fraction");
        Assert.That(use.PerSequenceUnitUse.Mean, Is.EqualTo(2.5).Within(1e-12), "per-sequence mean");
        Assert.That(use.PerBatchUnitUse.Mean, Is.EqualTo(4.0), "per-batch units");
        Assert.That(
            use.UnitActivationFrequency(),
            Is.EqualTo(new[] { 3 / 6.0, 2 / 6.0, 1 / 6.0, 2 / 6.0 }).Within(1e-12)
        );
        Assert.That(use.UnitsEverActive, Is.EqualTo(4));
        Assert.That(use.DeadUnits, Is.EqualTo(0));
        Assert.That(use.DownProjectionFlopReduction, Is.EqualTo(1 - 8.0 / 24).Within(1e-12));
        // Per-token counts 0,1,1,1,2,3: population std = sqrt(mean of squares − mean²) = sqrt(16/6 − 64/36).
        Assert.That(use.PerTokenUnitUse.StandardDeviation, Is.EqualTo(Math.Sqrt(16.0 / 6 - 64.0 / 36)).Within(1e-12));
        Assert.That(use.PerTokenUnitUse.P50, Is.EqualTo(1), "nearest-rank median of 0,1,1,1,2,3");
        Assert.That(use.PerTokenUnitUse.P95, Is.EqualTo(3));
        Assert.That(use.PerTokenUnitUse.P5, Is.EqualTo(0));
    }

    [Test]
    public void PaddedPositionsCountInNoStatistic()
    {
        // Mask out seq 0 token 0 and all of seq 1 but token 2: what remains is t1 {1}, t2 {} and seq 1's t2 {0}.
        bool[] real = { false, true, true, false, false, true };
        var use = new LayerUnitUse(4);
        use.AddDense(Activations, 2, 3, real);

        Assert.That(use.Tokens, Is.EqualTo(3));
        Assert.That(use.TokensPerUnit.ToArray(), Is.EqualTo(new long[] { 1, 1, 0, 0 }));
        Assert.That(use.PerTokenUnitUse.Mean, Is.EqualTo(2.0 / 3).Within(1e-12));
        Assert.That(use.PerSequenceUnitUse.Mean, Is.EqualTo(1.0), "seq 0 uses {1}, seq 1 uses {0}");
        Assert.That(use.PerBatchUnitUse.Mean, Is.EqualTo(2.0));
        Assert.That(use.DeadUnits, Is.EqualTo(2));
    }

    [Test]
    public void FullyPaddedSequenceIsNotASequence()
    {
        bool[] real = { true, true, true, false, false, false };
        var use = new LayerUnitUse(4);
        use.AddDense(Activations, 2, 3, real);
        Assert.That(use.Sequences, Is.EqualTo(1));
        Assert.That(use.PerSequenceUnitUse.Mean, Is.EqualTo(2.0));
    }

    [Test]
    public void FlattenedLayoutGivesTheSameStatisticsAsThreeDimensional()
    {
        // A [batch·seq, d_ff] tensor viewed as [batch, seq, d_ff] is the same memory: both calls must agree,
        // and viewing it as one long sequence must change only sequence-level figures.
        var asSequences = new LayerUnitUse(4);
        asSequences.AddDense(Activations, 2, 3, default);
        var asOneSequence = new LayerUnitUse(4);
        asOneSequence.AddDense(Activations, 1, 6, default);

        Assert.That(asOneSequence.TokensPerUnit.ToArray(), Is.EqualTo(asSequences.TokensPerUnit.ToArray()));
        Assert.That(
            asOneSequence.UnitsPerTokenHistogram.ToArray(),
            Is.EqualTo(asSequences.UnitsPerTokenHistogram.ToArray())
        );
        Assert.That(asOneSequence.PerSequenceUnitUse.Mean, Is.EqualTo(4.0));
    }

    [Test]
    public void ThresholdIsStrict()
    {
        var use = new LayerUnitUse(4);
        use.AddDense(Activations, 2, 3, default, threshold: 1f);
        // Strictly above 1: 2 (seq0 t0 u1), 3 (seq1 t0 u3), 4 (seq1 t1 u2), 7 (seq1 t2 u0); 1.0 itself is not.
        Assert.That(use.TokensPerUnit.ToArray(), Is.EqualTo(new long[] { 1, 1, 1, 1 }));
    }

    [Test]
    public void ReducedCountsEqualDenseActivations()
    {
        var dense = new LayerUnitUse(4);
        dense.AddDense(Activations, 2, 3, default);
        var reduced = new LayerUnitUse(4);
        reduced.AddBatch(new[] { 2, 1, 0, 1, 3, 1 }, new[] { 2, 3 }, new long[] { 3, 2, 1, 2 });

        AssertCounts.Equal(reduced, dense);
    }

    [Test]
    public void MergingPartsEqualsAddingEverything()
    {
        var random = new Random(7);
        var batches = Enumerable
            .Range(0, 9)
            .Select(_ => Enumerable.Range(0, 3 * 5 * 16).Select(_ => (float)(random.NextDouble() - 0.7)).ToArray())
            .ToList();
        var whole = new LayerUnitUse(16);
        foreach (var b in batches)
            whole.AddDense(b, 3, 5, default);

        var parts = new[] { new LayerUnitUse(16), new LayerUnitUse(16), new LayerUnitUse(16) };
        for (int i = 0; i < batches.Count; i++)
            parts[i % 3].AddDense(batches[i], 3, 5, default);
        var merged = new LayerUnitUse(16);
        merged.Merge(parts[2]);
        merged.Merge(parts[0]);
        merged.Merge(parts[1]);

        AssertCounts.Equal(merged, whole);
        Assert.That(merged.Batches, Is.EqualTo(9));

        var restored = LayerUnitUse.FromCounts(
            merged.TokensPerUnit,
            merged.UnitsPerTokenHistogram,
            merged.UnitsPerSequenceHistogram,
            merged.UnitsPerBatchHistogram
        );
        Assert.That(restored.NonzeroFraction, Is.EqualTo(whole.NonzeroFraction));
    }

    [TestCase(13, 0f)]
    [TestCase(100, 0.25f)]
    public void VectorisedCountingEqualsAPlainLoop(int dFf, float threshold)
    {
        // d_ff values that leave a scalar tail after the SIMD body, with padding and ties at the threshold.
        var random = new Random(dFf);
        const int B = 3,
            T = 7;
        float[] activations = Enumerable
            .Range(0, B * T * dFf)
            .Select(_ => random.Next(4) == 0 ? threshold : (float)(random.NextDouble() - 0.4))
            .ToArray();
        bool[] real = Enumerable.Range(0, B * T).Select(i => i % T < 5 || i / T == 0).ToArray();
        var use = new LayerUnitUse(dFf);
        use.AddDense(activations, B, T, real, threshold);

        var perUnit = new long[dFf];
        var perToken = new List<int>();
        var perSequence = new List<int>();
        for (int b = 0; b < B; b++)
        {
            var seen = new HashSet<int>();
            for (int t = 0; t < T; t++)
            {
                if (!real[b * T + t])
                    continue;
                int n = 0;
                for (int u = 0; u < dFf; u++)
                    if (activations[(b * T + t) * dFf + u] > threshold)
                    {
                        n++;
                        perUnit[u]++;
                        seen.Add(u);
                    }
                perToken.Add(n);
            }
            perSequence.Add(seen.Count);
        }
        var expected = new LayerUnitUse(dFf);
        expected.AddBatch(perToken.ToArray(), perSequence.ToArray(), perUnit);
        AssertCounts.Equal(use, expected);
    }

    [Test]
    public void EmptyAccumulatorReportsNaNNotZero()
    {
        var use = new LayerUnitUse(8);
        Assert.That(use.NonzeroFraction, Is.NaN);
        Assert.That(use.PerBatchUnitUse.Count, Is.EqualTo(0));
        Assert.That(use.DeadUnits, Is.EqualTo(8), "no token seen: nothing was active");
    }

    [Test]
    public void MismatchedShapesAreRejected()
    {
        var use = new LayerUnitUse(4);
        Assert.Throws<ArgumentException>(() => use.AddDense(new float[10], 1, 3, default));
        Assert.Throws<ArgumentException>(() => use.Merge(new LayerUnitUse(5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => use.AddBatch(new[] { 5 }, new[] { 1 }, new long[4]));
    }
}

[TestFixture]
public class UnitLastActiveTests
{
    [Test]
    public void DeathStepIsTheStepAfterTheLastActivation()
    {
        var tracker = new UnitLastActive(4);
        tracker.Observe(0, new long[] { 1, 1, 1, 0 });
        tracker.Observe(1, new long[] { 0, 3, 1, 0 });
        tracker.Observe(2, new long[] { 0, 0, 1, 0 });

        Assert.That(tracker.LastActiveStep.ToArray(), Is.EqualTo(new long[] { 0, 1, 2, -1 }));
        Assert.That(tracker.DeathSteps(lastStep: 2), Is.EqualTo(new long?[] { 1, 2, null, 0 }));
        Assert.That(tracker.UnusedSince(1), Is.EqualTo(new[] { true, false, false, true }));
    }

    [Test]
    public void MergeKeepsTheLaterStep()
    {
        var a = UnitLastActive.FromSteps(new long[] { 5, -1, 3 });
        var b = UnitLastActive.FromSteps(new long[] { 2, 4, -1 });
        a.Merge(b);
        Assert.That(a.LastActiveStep.ToArray(), Is.EqualTo(new long[] { 5, 4, 3 }));
    }
}
