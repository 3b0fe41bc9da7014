using System.Text.Json;
using NUnit.Framework;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Pipeline.Streaming;
using Sparsity.Training;

namespace Sparsity.Tests;

/// <summary>
/// What <c>analyze</c> does differently on a GPU, tested as far as the CPU provider allows: attention fused in memory
/// (or left alone, and said so), fixed batch sizes given to the session (same counts), the forward-alone graph of
/// <c>--timing</c>, and <c>--profile</c>'s reading of ONNX Runtime's profiler (a real CPU profile, and a hand-made one
/// with a GPU's off-device nodes, copies and launch-timed kernels).
/// </summary>
[TestFixture]
public class GpuPathTests
{
    [TestCase("opt.torchscript", 2)]
    [TestCase("gpt2.dynamo", 2)]
    [TestCase("llama.dynamo", 2)]
    [TestCase("llama.torchscript", 2)]
    public void AttentionIsFusedInMemoryForTheGpu(string fixture, int blocks)
    {
        var model = OnnxGraph.Load(HookFixture.PathOf(fixture + ".onnx"));
        var notes = new StringWriter();
        var fused = Analyzer.FuseForGpu(model, notes);
        Assert.That(fused.Graph.Node.Count(n => n.OpType == "MultiHeadAttention"), Is.EqualTo(blocks));
        Assert.That(fused.Graph.Node.Count(n => n.OpType == "Softmax"), Is.Zero);
        Assert.That(
            notes.ToString(),
            Does.StartWith($"Attention fused for the GPU: {blocks} block(s) as MultiHeadAttention (logits within")
        );
        Assert.That(Analyzer.FuseForGpu(fused, notes), Is.SameAs(fused), "a fused graph is left as it is");
    }

    [Test]
    public void AGraphWhoseAttentionIsNotKnownRunsAsItIsAndSaysSo()
    {
        var cached = OnnxGraph.Load(HookFixture.PathOf("gpt_cache.torchscript.onnx")); // attention over a key/value cache: not matched
        var notes = new StringWriter();
        Assert.That(Analyzer.FuseForGpu(cached, notes), Is.SameAs(cached));
        Assert.That(
            notes.ToString(),
            Does.StartWith("warning: attention not fused: No attention block was recognised")
        );
    }

    [Test]
    public void FixedBatchSizesGiveTheSameCounts()
    {
        // The GPU's session knows B and T (free-dimension overrides), so shape arithmetic folds away; counts are
        // integers and must not move.
        var plan = AnalysisPlan.For(OnnxGraph.Load(HookFixture.PathOf("opt.dynamo.onnx")), ["Relu"], 0f);
        var outputs = plan
            .Layers.SelectMany(l =>
                l.Outputs.Select(o => (o.Name, (long[]?)o.Shape(3, 32, l.DFf)!.Select(d => (long)d).ToArray()))
            )
            .ToList();
        var probe = ProbeBatch.Random(256, batch: 3, seqLen: 32, seed: 5);
        using var plain = new ModelRunner(plan.Graph, Device.Cpu, 2, 3, 32, outputs);
        using var fixedSizes = new ModelRunner(
            plan.Graph,
            Device.Cpu,
            2,
            3,
            32,
            outputs,
            tuning: new RunnerTuning(FixedShapes: true)
        );
        plain.Run(probe.Ids, probe.Mask);
        fixedSizes.Run(probe.Ids, probe.Mask);
        for (int i = 0; i < outputs.Count; i++)
            Assert.That(fixedSizes.Longs(i).ToArray(), Is.EqualTo(plain.Longs(i).ToArray()), outputs[i].Name);
        Assert.That(plain.Longs(2).ToArray().Sum(), Is.GreaterThan(0));
    }

    [TestCase("opt.dynamo")]
    [TestCase("opt.torchscript")]
    [TestCase("gpt2.dynamo")]
    [TestCase("llama.dynamo")]
    public void TheForwardAloneEndsWhereTheVocabularyProjectionStarts(string fixture)
    {
        var (bound, _) = GraphInputs.Bind(OnnxGraph.Load(HookFixture.PathOf(fixture + ".onnx")));
        var forward = GraphInputs.WithDecoderOutput(bound)!;
        Assert.That(forward, Is.Not.Null);
        string hidden = forward.Graph.Output.Single().Name;
        // The projection reads it, and nothing after it is left.
        var projection = bound.Graph.Node.Single(n =>
            n.OpType is "MatMul" or "Gemm" && n.Input.Contains(hidden) && n.Output.Any(o => Reaches(bound, o, "logits"))
        );
        Assert.That(forward.Graph.Node, Has.None.Matches<NodeProto>(n => n.Name == projection.Name));
        var ids = Enumerable.Range(0, 2 * 8).Select(i => (long)(i * 29 % 200)).ToArray();
        string path = Path.Combine(TestCorpus.TempDir(), "forward.onnx");
        OnnxGraph.Save(forward, path);
        var inputs = forward
            .Graph.Input.Select(i =>
                (i.Name, i.Name == "input_ids" ? ids : Enumerable.Repeat(1L, 16).ToArray(), new long[] { 2, 8 })
            )
            .ToArray();
        var output = OrtRunner.Run(path, inputs)[hidden].Floats!;
        long width = bound
            .Graph.Initializer.Single(t =>
                t.Name == projection.Input.First(i => i != hidden)
                || Reaches(bound, t.Name, projection.Input.First(i => i != hidden))
            )
            .Dims.First(d => output.Length % d == 0 && output.Length / d == 16);
        Assert.That(output.Length, Is.EqualTo(16 * width), "[2, 8, d_model]");
    }

    static bool Reaches(ModelProto model, string from, string to)
    {
        if (from == to)
            return true;
        var frontier = new HashSet<string> { from };
        foreach (var node in model.Graph.Node)
            if (node.Input.Any(frontier.Contains))
                foreach (var o in node.Output)
                    frontier.Add(o);
        return frontier.Contains(to);
    }

    [Test]
    public void ADecoderWithoutItsVocabularyProjectionIsAnalysedAlike()
    {
        // Optimum's feature extraction writes last_hidden_state, [batch, seq, d_model], and no logits: the vocabulary
        // is the embedding table's rows (256 bytes), not d_model; the counts are the full graph's.
        string full = HookFixture.PathOf("opt.dynamo.onnx"),
            headless = Path.Combine(TestCorpus.TempDir(), "opt.hidden.onnx");
        var model = GraphInputs.WithDecoderOutput(OnnxGraph.Load(full))!;
        OnnxGraph.Save(model, headless);
        Assert.That(GraphInputs.VocabularySize(model), Is.EqualTo(256));
        Assert.That(
            model.Graph.Output.Single().Type.TensorType.Shape.Dim[^1].DimValue,
            Is.LessThan(256),
            "the output is narrower than the vocabulary"
        );
        string Counts(string graph)
        {
            string outDir = Path.Combine(TestCorpus.TempDir(), "analysis");
            var (exit, _, error) = Cli.Run(
                "analyze",
                "--model",
                graph,
                "--corpus",
                HookFixture.Corpus,
                "--tokenizer",
                "bytes",
                "--seq-len",
                "32",
                "--batch-size",
                "4",
                "--threads",
                "2",
                "--out",
                outDir
            );
            Assert.That(exit, Is.EqualTo(0), error);
            return JsonSerializer.Serialize(SparsityCounts.Load(outDir).Layers, ProjectJson.Options);
        }
        Assert.That(Counts(headless), Is.EqualTo(Counts(full)));
    }

    [Test]
    public void AStatsExportHasNoForwardAlone()
    {
        Assert.That(GraphInputs.WithDecoderOutput(Float16Tests.StatsExport()), Is.Null, "no logits");
    }

    [Test]
    public void ProfileOnTheCpuListsTheGraphsOperators()
    {
        string outDir = Path.Combine(TestCorpus.TempDir(), "profiled");
        var (exit, output, error) = Cli.Run(
            "analyze",
            "--model",
            HookFixture.PathOf("opt.dynamo.onnx"),
            "--corpus",
            HookFixture.Corpus,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--threads",
            "2",
            "--max-tokens",
            "2000",
            "--profile",
            "--timing",
            "--out",
            outDir
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("Profile of 10 runs after the warm-up:"));
        Assert.That(output, Does.Contain("The forward alone (no vocabulary projection, no statistics"));
        var rows = File.ReadAllLines(Path.Combine(outDir, "profile.csv"));
        Assert.That(rows[0], Is.EqualTo("op_type,ms_per_run,share,nodes,providers"));
        var ops = rows.Skip(1).Select(r => r.Split(',')).ToDictionary(f => f[0]);
        // ONNX Runtime's CPU optimizer folds each ReLU into its up-projection (FusedGemm); our statistics add per layer
        // a comparison (two with the distinct-units count) and three sums.
        Assert.That(ops["FusedGemm"][3], Is.EqualTo("2"), "one up-projection with its ReLU per layer");
        Assert.That(ops["Greater"][3], Is.EqualTo("4"));
        Assert.That(ops["ReduceSum"][3], Is.EqualTo("6"));
        Assert.That(
            ops.Values.Sum(f => double.Parse(f[2], System.Globalization.CultureInfo.InvariantCulture)),
            Is.EqualTo(1).Within(0.01)
        );
        Assert.That(ops.Values.All(f => f[4] == "CPU"));
    }

    [Test]
    public void AProfileSaysWhatRanOffTheGpuWhatWasCopiedAndWhenKernelsWereTimedByTheirLaunch()
    {
        // Two runs; the first is the warm-up. In the second (1,000 µs): MatMul 300 µs on CUDA, Shape 20 µs on the CPU,
        // a copy to the host 30 µs: 0.35 ms of kernels in a 1 ms run, so these are launch times.
        static string Node(string name, string op, string provider, double ts, double dur) =>
            $$$"""{"cat":"Node","name":"{{{name}}}_kernel_time","ts":{{{ts}}},"dur":{{{dur}}},"args":{"op_name":"{{{op}}}","provider":"{{{provider}}}"}}""";
        string json =
            "["
            + string.Join(
                ",",
                """{"cat":"Session","name":"model_run","ts":0,"dur":500,"args":{}}""",
                Node("m0", "MatMul", "CUDAExecutionProvider", 10, 400),
                """{"cat":"Session","name":"model_run","ts":1000,"dur":1000,"args":{}}""",
                Node("m1", "MatMul", "CUDAExecutionProvider", 1010, 300),
                Node("shape", "Shape", "CPUExecutionProvider", 1400, 20),
                Node("copy", "MemcpyToHost", "CUDAExecutionProvider", 1500, 30),
                """{"cat":"Node","name":"m1_fence_before","ts":1005,"dur":1,"args":{"op_name":"MatMul"}}"""
            )
            + "]";
        string path = Path.Combine(TestCorpus.TempDir(), "profile.json");
        File.WriteAllText(path, json);
        var profile = OperatorProfile.Read(path, warmUp: 1, onGpu: true);
        Assert.That((profile.Runs, profile.WallMsPerRun, profile.KernelMsPerRun), Is.EqualTo((1, 1.0, 0.35)));
        Assert.That(
            profile.Operators.Select(o => (o.OpType, o.MsPerRun, o.Nodes)),
            Is.EqualTo(new[] { ("MatMul", 0.3, 1), ("MemcpyToHost", 0.03, 1), ("Shape", 0.02, 1) })
        );
        Assert.That(profile.Operators[0].Share, Is.EqualTo(0.3 / 0.35).Within(1e-12));
        Assert.That(profile.OffDevice, Is.EqualTo(new[] { "Shape 'shape'" }));
        Assert.That(profile.Copies, Is.EqualTo(new[] { "MemcpyToHost 'copy'" }));
        Assert.That(profile.LaunchTimed, Is.EqualTo(Environment.GetEnvironmentVariable("CUDA_LAUNCH_BLOCKING") != "1"));
        Assert.That(
            string.Join("\n", profile.Describe()),
            Does.Contain("Off the GPU (1): Shape 'shape'").And.Contain("Copies (1): MemcpyToHost 'copy'")
        );
        Assert.That(
            OperatorProfile.Read(path, warmUp: 0, onGpu: false).LaunchTimed,
            Is.False,
            "on the CPU kernels are timed as they run"
        );
    }
}
