using NUnit.Framework;
using Sparsity.Export;
using Sparsity.Pipeline.Exporting;
using Sparsity.Pipeline.Generation;
using Sparsity.Pipeline.Runtime;
using Sparsity.Training;

namespace Sparsity.Tests;

/// <summary>
/// export --with-past and generate: decoding one token at a time through the key/value cache must give the logits of
/// the whole sequence computed at once, and greedy tokens must not depend on the cache.
/// </summary>
[TestFixture]
public class GenerationTests
{
    static string WithPast(string checkpoint)
    {
        string path = Path.Combine(TestCorpus.TempDir(), "past.onnx");
        var result = CheckedExport.Run(new ExportRequest(checkpoint, path, WithPast: true));
        Assert.That(result.Parity, Is.LessThanOrEqualTo(1e-4f), "checked with an empty past against TorchSharp");
        return path;
    }

    static int[] Tokens(int count, long vocab, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => random.Next((int)vocab)).ToArray();
    }

    // Row t of the whole sequence's logits against the cached decoder's step t.
    static void AssertStepsEqualTheWholeSequence(string model, int count)
    {
        var proto = OnnxGraph.Load(model);
        long vocab = GraphInputs.VocabularySize(proto)!.Value;
        int[] tokens = Tokens(count, vocab, seed: 5);
        float[] whole = GraphCheck.Logits(
            proto,
            new ProbeBatch([.. tokens.Select(t => (long)t)], Enumerable.Repeat(1L, count).ToArray(), 1, count)
        );
        using var cached = new Generator(proto);
        Assert.That(cached.UsesCache, Is.True);
        int t = 0;
        foreach (var step in cached.StepLogits(tokens))
        {
            Assert.That(
                step,
                Is.EqualTo(whole.AsSpan(t * (int)vocab, (int)vocab).ToArray()).Within(1e-4f),
                $"token {t}"
            );
            t++;
        }
        Assert.That(t, Is.EqualTo(count));
    }

    [Test]
    public void OurExportDecodesThroughItsCacheAsTheWholeSequence()
    {
        string splits = TestCorpus.WriteSplits(),
            ck = Path.Combine(TestCorpus.TempDir(), "ck");
        var (exit, _, error) = Cli.Run(
            "train",
            "--corpus",
            Path.Combine(splits, "train.txt"),
            "--heldout",
            Path.Combine(splits, "heldout.txt"),
            "--tokenizer",
            "bytes",
            "--out",
            ck,
            "--steps",
            "10",
            "--layers",
            "2",
            "--d-ff",
            "64",
            "--eval-every",
            "10",
            "--threads",
            "2"
        );
        Assert.That(exit, Is.EqualTo(0), error);
        AssertStepsEqualTheWholeSequence(WithPast(ck), 24);
    }

    [TestCase("llama")]
    [TestCase("opt")]
    public void HuggingFaceExportsDecodeThroughTheirCache(string family) =>
        AssertStepsEqualTheWholeSequence(WithPast(CheckpointReference.Folder(family)), 30);

    [Test]
    public void ExternalGraphsWithACacheDecodeThroughIt() =>
        AssertStepsEqualTheWholeSequence(HookFixture.PathOf("gpt_cache.dynamo.onnx"), 20);

    [TestCase("llama")]
    [TestCase("mistral")]
    public void GreedyTokensAreTheSameWithAndWithoutTheCache(string family)
    {
        var proto = OnnxGraph.Load(WithPast(CheckpointReference.Folder(family)));
        int[] prompt = [.. File.ReadAllLines(CheckpointReference.Ids(family))[0].Split(' ').Take(8).Select(int.Parse)];
        using var cached = new Generator(proto);
        using var recomputed = new Generator(proto, useCache: false);
        Assert.That(recomputed.UsesCache, Is.False);
        var a = cached.Generate(prompt, 30).ToList();
        var b = recomputed.Generate(prompt, 30).ToList();
        Assert.That(a, Is.EqualTo(b));
        Assert.That(
            a,
            Has.Count.EqualTo(proto.Graph.Initializer.Any(i => i.Name == "rope.cos" && i.Dims[0] == 32) ? 24 : 30),
            "stops at the context (Mistral's window of 32)"
        );
    }

    [Test]
    public void SamplingIsSeededAndTheCommandStreamsText()
    {
        string model = WithPast(CheckpointReference.Folder("opt"));
        string[] Run(params string[] extra)
        {
            var (exit, output, error) = Cli.Run([
                .. new[]
                {
                    "generate",
                    "--model",
                    model,
                    "--tokenizer",
                    "hf:" + CheckpointReference.Folder("opt"),
                    "--prompt",
                    "The jury said",
                    "--max-new-tokens",
                    "12",
                },
                .. extra,
            ]);
            Assert.That(exit, Is.EqualTo(0), error);
            return output.Trim().Split('\n');
        }
        var greedy = Run();
        Assert.That(greedy[0], Does.StartWith("The jury said"));
        Assert.That(greedy[^1], Does.Contain("12 tokens").And.Contain("key/value cache, greedy"));
        Assert.That(Run("--no-cache")[0], Is.EqualTo(greedy[0]));
        Assert.That(
            Run("--temperature", "0.9", "--seed", "4")[0],
            Is.EqualTo(Run("--temperature", "0.9", "--seed", "4")[0])
        );
        var (exit2, _, error2) = Cli.Run(
            "generate",
            "--model",
            model,
            "--tokenizer",
            "hf:" + CheckpointReference.Folder("opt"),
            "--prompt",
            "x",
            "--greedy",
            "--top-k",
            "5"
        );
        Assert.That(
            (exit2, error2),
            Is.EqualTo(
                (
                    2,
                    "error: --greedy and sampling options (--temperature, --top-p, --top-k) exclude each other: give one.\n"
                )
            )
        );
    }

    [Test]
    public void CacheGraphsAreAnalysedAndRewrittenLikeAnyGraph()
    {
        string model = WithPast(CheckpointReference.Folder("opt"));
        string dir = TestCorpus.TempDir();
        var (exit, output, error) = Cli.Run(
            "topk",
            "--model",
            model,
            "--k",
            "256",
            "--out",
            Path.Combine(dir, "k256.onnx")
        );
        Assert.That(exit, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("computes exactly what the input model does (checked"));
        var reference = CheckpointReference.Load("opt");
        (exit, _, error) = Cli.Run(
            "analyze",
            "--model",
            model,
            "--corpus",
            CheckpointReference.Ids("opt"),
            "--tokenizer",
            "ids",
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--out",
            Path.Combine(dir, "an")
        );
        Assert.That(exit, Is.EqualTo(0), error);
        var stats = Analysis.SparsityStats.Load(Path.Combine(dir, "an", Analysis.SparsityStats.FileName));
        Assert.That(
            stats.Layers.Select(l => l.NonzeroFraction),
            Is.EqualTo(reference.Layers.Select(l => l.NonzeroFraction)).Within(1e-5),
            "an empty cache: the hooks' statistics"
        );
    }

    // The cache fixture with its cache inputs, cache outputs and logits in float16, as a model exported in half
    // precision has them (the computation inside stays float32, which ONNX Runtime's CPU provider runs).
    static Onnx.ModelProto HalfInputsAndOutputs(Onnx.ModelProto model)
    {
        var g = model.Clone();
        const long half = (long)Onnx.TensorProto.Types.DataType.Float16,
            single = (long)Onnx.TensorProto.Types.DataType.Float;
        foreach (var input in g.Graph.Input.Where(i => i.Name.StartsWith("past_key_values.")))
        {
            GraphIndex.RenameReads(g.Graph, input.Name, input.Name + ".single");
            g.Graph.Node.Insert(
                0,
                OnnxGraph.Node(
                    "Cast",
                    input.Name + "/cast",
                    [input.Name],
                    [input.Name + ".single"],
                    OnnxGraph.Int("to", single)
                )
            );
            input.Type.TensorType.ElemType = (int)half;
        }
        foreach (var output in g.Graph.Output.Where(o => o.Name == "logits" || o.Name.StartsWith("present.")))
        {
            foreach (var node in g.Graph.Node)
            {
                for (int i = 0; i < node.Output.Count; i++)
                    if (node.Output[i] == output.Name)
                        node.Output[i] = output.Name + ".single";
                for (int i = 0; i < node.Input.Count; i++)
                    if (node.Input[i] == output.Name)
                        node.Input[i] = output.Name + ".single";
            }
            g.Graph.Node.Add(
                OnnxGraph.Node(
                    "Cast",
                    output.Name + "/cast",
                    [output.Name + ".single"],
                    [output.Name],
                    OnnxGraph.Int("to", half)
                )
            );
            output.Type.TensorType.ElemType = (int)half;
        }
        g.Graph.ValueInfo.Clear();
        return g;
    }

    [Test]
    public void AGraphFromElsewhereStopsAtTheEndOfItsPositionTable()
    {
        // The cache fixture gathers position_ids from a table of 64 rows: on the GPU, decoding past it read out of
        // bounds without an error (seen on an H200), so generation stops there, as for this project's exports.
        var model = OnnxGraph.Load(HookFixture.PathOf("gpt_cache.dynamo.onnx"));
        using var g = new Generator(model);
        Assert.That(g.MaxPositions, Is.EqualTo(64));
        int[] prompt = [.. System.Text.Encoding.UTF8.GetBytes("The jury said it did find that many of ")];
        Assert.That(g.Generate(prompt, 100).Count(), Is.EqualTo(64 - prompt.Length));
        Assert.That(GraphInputs.MaxPositions(OnnxGraph.Load(HookFixture.PathOf("llama.dynamo.onnx"))), Is.Null);
    }

    [Test]
    public void AModelWhoseCacheAndLogitsAreHalfDecodesThroughItsCache()
    {
        var model = OnnxGraph.Load(HookFixture.PathOf("gpt_cache.dynamo.onnx"));
        int[] prompt = [.. System.Text.Encoding.UTF8.GetBytes(File.ReadLines(HookFixture.Corpus).First()).Take(12)];
        using var single = new Generator(model);
        using var halved = new Generator(HalfInputsAndOutputs(model));
        Assert.That(halved.UsesCache, Is.True);
        Assert.That(halved.Generate(prompt, 24).Count(), Is.EqualTo(24));
        // fp16 keeps 11 bits: a rounded cache and rounded logits move them by well under 1 % of the largest (greedy
        // tokens can differ where two logits are that close).
        var a = single.StepLogits(prompt).ToList();
        var b = halved.StepLogits(prompt).ToList();
        for (int t = 0; t < prompt.Length; t++)
            Assert.That(b[t], Is.EqualTo(a[t]).Within(0.01f * a[t].Max(Math.Abs)), $"step {t}");
        Assert.That(b[^1], Is.Not.EqualTo(a[^1]), "the logits went through float16");
    }
}
