using NUnit.Framework;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Analyze;

namespace Sparsity.Tests;

/// <summary>
/// Golden metric values of a fixed model on a fixed corpus: the opt_gemm torch.onnx fixture (weights fixed
/// in the file) on its 30 committed token ids. Any change in windowing, padding, counting or the summary
/// math fails here. Tolerances: counts are integers and must match exactly; derived means are compared
/// to 1e-12 (they are ratios of those integers). That is safe across CPUs because no ReLU input of this
/// fixture lies within 1e-4 of zero (asserted below), far above float32 rounding differences.
/// </summary>
[TestFixture]
public class RegressionTests
{
    static SparsityStats Analyze()
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "golden");
        return Analyzer.Run(new AnalysisRequest(Fixture.PathOf("opt_gemm.onnx"), Fixture.PathOf("opt_gemm.ids.txt"), "ids", 10, 3, null, 0, 1, 0f, "cpu", 2, outDir, ["Relu"]));
    }

    [Test]
    public void GoldenValuesOfTheFixedFixture()
    {
        var s = Analyze();
        Assert.That((s.Tokens, s.Sequences, s.Batches), Is.EqualTo((30L, 3L, 1L)));
        var l0 = s.Layers[0];
        var l1 = s.Layers[1];
        Assert.That(l0.NonzeroFraction, Is.EqualTo(1547.0 / 3840).Within(1e-12), "1547 active (token, unit) pairs of 30 × 128");
        Assert.That(l1.NonzeroFraction, Is.EqualTo(1624.0 / 3840).Within(1e-12));
        Assert.That(l0.PerSequenceUnitsMean, Is.EqualTo(326.0 / 3).Within(1e-12));
        Assert.That(l1.PerSequenceUnitsMean, Is.EqualTo(109.0).Within(1e-12));
        Assert.That((l0.PerBatchUnitsMean, l1.PerBatchUnitsMean), Is.EqualTo((109.0, 109.0)));
        Assert.That((l0.UnitsEverActive, l0.DeadUnits, l1.UnitsEverActive, l1.DeadUnits), Is.EqualTo((109, 19, 109, 19)));
        Assert.That(l0.PerTokenUnits.StandardDeviation, Is.EqualTo(5.333437498982722).Within(1e-9));
        Assert.That(l1.PerTokenUnits.StandardDeviation, Is.EqualTo(4.372133981885231).Within(1e-9));
    }

    [Test]
    public void NoReluInputOfTheFixtureIsNearZero()
    {
        var model = OnnxGraph.Load(Fixture.PathOf("opt_gemm.onnx"));
        var relus = model.Graph.Node.Where(n => n.OpType == "Relu").Select(n => n.Input[0]).ToList();
        foreach (string input in relus) model.Graph.Output.Add(OnnxGraph.Value(input, TensorProto.Types.DataType.Float, "tokens", 128));
        string path = Path.Combine(TestCorpus.TempDir(), "preactivations.onnx");
        OnnxGraph.Save(model, path);
        var fixture = Fixture.Load("opt_gemm");
        var outputs = OrtRunner.Run(path, ("input_ids", fixture.InputIds, new long[] { fixture.Batch, fixture.Seq }));
        foreach (string input in relus)
            Assert.That(outputs[input].Floats!.Min(v => Math.Abs(v)), Is.GreaterThan(1e-4f), input);
    }

    [Test]
    public void CheckPassesOnItselfAndNamesEachDeviation()
    {
        var stats = Analyze();
        Assert.That(SparsityCheck.Compare(stats, stats), Is.Empty);

        var shifted = stats with { Layers = [stats.Layers[0] with { NonzeroFraction = stats.Layers[0].NonzeroFraction + 0.02, DeadUnits = 25 }, stats.Layers[1]] };
        var deviations = SparsityCheck.Compare(stats, shifted);
        Assert.That(deviations.Select(d => (d.Layer, d.Metric)), Is.EquivalentTo(new[] { (0, "nonzero_fraction"), (0, "dead_units") }));
        Assert.That(deviations.First(d => d.Metric == "dead_units").ToString(), Is.EqualTo("layer 0 dead_units: 19 vs baseline 25 (difference -6, tolerance ±1.28)"));
        Assert.That(SparsityCheck.Compare(stats, shifted, new Dictionary<string, double> { ["nonzero_fraction"] = 0.05, ["dead_units"] = 6 }), Is.Empty);
        Assert.Throws<ArgumentException>(() => SparsityCheck.Compare(stats, stats with { BatchSize = 8 }));
        Assert.Throws<ArgumentException>(() => SparsityCheck.Compare(stats, stats, new Dictionary<string, double> { ["nonzero"] = 1 }));
    }

    [Test]
    public void CheckCommandExitsOneOnDeviationsAndZeroWithin()
    {
        var stats = Analyze();
        string dir = TestCorpus.TempDir();
        string current = Path.Combine(dir, "stats.json"), baseline = Path.Combine(dir, "baseline.json");
        File.WriteAllText(current, System.Text.Json.JsonSerializer.Serialize(stats, ProjectJson.Options));
        File.WriteAllText(baseline, System.Text.Json.JsonSerializer.Serialize(stats with { Layers = [stats.Layers[0], stats.Layers[1] with { PerTokenUnitsMean = 60 }] }, ProjectJson.Options));

        var (exit, output, _) = Cli.Run("check", "--stats", current, "--baseline", baseline);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(output, Does.Contain("FAIL layer 1 per_token_units_mean: 54.1333 vs baseline 60"));
        (exit, output, _) = Cli.Run("check", "--stats", current, "--baseline", baseline, "--tolerance", "per_token_units_mean=6");
        Assert.That(exit, Is.EqualTo(0), output);
        (exit, _, var error) = Cli.Run("check", "--stats", current, "--baseline", Path.Combine(dir, "missing.json"));
        Assert.That((exit, error.Trim()), Is.EqualTo((2, $"error: {Path.Combine(dir, "missing.json")} does not exist (run `analyze` first).")));
    }
}
