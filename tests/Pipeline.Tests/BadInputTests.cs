using System.Text;
using NUnit.Framework;
using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;

namespace Sparsity.Tests;

/// <summary>
/// The table of bad inputs (docs/errors.md): each gets one `error:` line naming the problem, exit code 2, no stack
/// trace, and no output written. The workspace is built once: fixtures, a tiny trained checkpoint, and broken copies of
/// each.
/// </summary>
[TestFixture]
public class BadInputTests
{
    // Cases are listed before the workspace exists: their paths use the placeholders WS/ and FX/, resolved when a case
    // runs.
    static string _ws = "";

    static string Ws(string name) => "WS/" + name;

    static string Fx(string name) => "FX/" + name;

    static string Real(string path) => path.Replace("WS/", _ws + "/").Replace("FX/", HookFixture.PathOf("") + "/");

    static string Out => Ws("out");
    static string Opt => Fx("opt.torchscript.onnx");
    static string Held => Fx("heldout.txt");
    static readonly string[] Window = ["--tokenizer", "bytes", "--seq-len", "32", "--batch-size", "4"];

    [OneTimeSetUp]
    public void Workspace()
    {
        _ws = TestCorpus.TempDir();
        string R(string name) => Path.Combine(_ws, name);
        string opt = HookFixture.PathOf("opt.torchscript.onnx"),
            held = HookFixture.Corpus;
        string splits = TestCorpus.WriteSplits();
        Run(
            "train",
            "--corpus",
            Path.Combine(splits, "train.txt"),
            "--heldout",
            Path.Combine(splits, "heldout.txt"),
            "--tokenizer",
            "bytes",
            "--out",
            R("ck"),
            "--steps",
            "2",
            "--layers",
            "1",
            "--d-ff",
            "32",
            "--eval-every",
            "2",
            "--threads",
            "2"
        );
        Run("export", "--checkpoint", R("ck"), "--out", R("own.onnx"));
        Run(
            "export",
            "--checkpoint",
            R("ck"),
            "--out",
            R("own.stats.onnx"),
            "--variant",
            "stats",
            "--threshold",
            "0.5"
        );
        Run(["analyze", "--model", opt, "--corpus", held, .. Window, "--shard", "0/2", "--out", R("shard0")]);
        Run(["analyze", "--model", opt, "--corpus", held, .. Window, "--shard", "1/3", "--out", R("shard1of3")]);

        File.WriteAllText(R("not-onnx.onnx"), "this is not a protobuf");
        File.WriteAllBytes(R("truncated.onnx"), File.ReadAllBytes(opt)[..4000]);
        var sigmoid = OnnxGraph.Load(opt);
        foreach (var n in sigmoid.Graph.Node.Where(n => n.OpType == "Relu"))
            n.OpType = "Sigmoid";
        OnnxGraph.Save(sigmoid, R("sigmoid.onnx"));
        var squared = OnnxGraph.Load(opt);
        var relu = squared.Graph.Node.First(n => n.OpType == "Relu");
        string y = relu.Output[0];
        relu.Output[0] = y + ".r";
        squared.Graph.Initializer.Add(OnnxGraph.FloatTensor("two", [], [2f]));
        squared.Graph.Node.Insert(
            squared.Graph.Node.IndexOf(relu) + 1,
            OnnxGraph.Node("Pow", "squared_relu", [y + ".r", "two"], [y])
        );
        OnnxGraph.Save(squared, R("squared.onnx"));
        var pixels = OnnxGraph.Load(opt);
        pixels.Graph.Input.Add(OnnxGraph.Value("pixel_values", TensorProto.Types.DataType.Float, "batch", 3));
        OnnxGraph.Save(pixels, R("pixels.onnx"));
        // Loads, fails at run time: layer 0's up-projection keeps half its rows, its bias all of them (as pruning left
        // graphs whose layers shared a bias through Identity).
        var unrunnable = OnnxGraph.Load(opt);
        var site = MlpSites.Find(unrunnable)[0];
        int half = site.DFf / 2;
        foreach (
            var (name, unitAxis) in new[]
            {
                (site.Up.Weight, site.Up.TransB == 1 ? 0 : 1),
                (site.Down.Weight, site.Down.TransB == 1 ? 1 : 0),
            }
        )
        {
            var w = unrunnable.Graph.Initializer.Single(t => t.Name == name);
            float[] all = Surgery.ReadFloats(w);
            long cols = w.Dims[1];
            float[] kept =
                unitAxis == 0
                    ? all[..(half * (int)cols)]
                    : Enumerable.Range(0, (int)w.Dims[0]).SelectMany(r => all.Skip(r * (int)cols).Take(half)).ToArray();
            w.Dims[unitAxis] = half;
            w.FloatData.Clear();
            w.RawData = Google.Protobuf.ByteString.CopyFrom(
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(kept.AsSpan())
            );
        }
        OnnxGraph.Save(unrunnable, R("unrunnable.onnx"));
        Directory.CreateDirectory(R("lonely"));
        File.Copy(HookFixture.PathOf("opt.ext.onnx"), R("lonely/opt.ext.onnx"));

        File.WriteAllText(R("empty.txt"), "\n  \n\n");
        File.WriteAllText(R("corpus.csv"), "a,b\n");
        File.WriteAllText(R("big-ids.txt"), "1 2 3 999\n");
        File.WriteAllText(R("words.txt"), "1 2 three\n");
        File.WriteAllBytes(R("tokens.bin"), [1, 0, 2, 0, 3, 0]);
        Directory.CreateDirectory(R("user"));
        File.WriteAllText(R("user/notes.txt"), "mine");
        File.WriteAllText(
            R("mask.json"),
            new UnitMask("manual", "test", [new LayerKeep(0, 256, [1, 2, 300])]).ToJson()
        );
        Directory.CreateDirectory(R("bad-counts"));
        File.WriteAllText(R("bad-counts/counts.json"), "{ \"header\": ");

        // Broken checkpoints: a safetensors header that is not JSON, offsets past the end, a truncated training log.
        foreach (string name in new[] { "ck-header", "ck-offsets", "ck-log" })
        {
            Directory.CreateDirectory(R(name));
            foreach (string f in Directory.GetFiles(R("ck")).Where(f => !f.EndsWith(OutputFolder.ManifestName)))
                File.Copy(f, Path.Combine(R(name), Path.GetFileName(f)));
        }
        byte[] weights = File.ReadAllBytes(R("ck/model.safetensors"));
        byte[] header =
        [
            .. weights[..8],
            .. Enumerable.Repeat((byte)'x', (int)BitConverter.ToUInt64(weights, 0)),
            .. weights[(8 + (int)BitConverter.ToUInt64(weights, 0))..],
        ];
        File.WriteAllBytes(R("ck-header/model.safetensors"), header);
        File.WriteAllBytes(R("ck-offsets/model.safetensors"), weights[..(weights.Length - 100)]);
        string log = File.ReadAllText(R("ck-log/sparsity.jsonl"));
        File.WriteAllText(R("ck-log/sparsity.jsonl"), log[..(log.Length - 40)]);
        Run([
            "analyze",
            "--model",
            R("own.onnx"),
            "--corpus",
            held,
            "--tokenizer",
            "bytes",
            "--seq-len",
            "16",
            "--out",
            R("own-analysis"),
        ]);

        // Hugging Face folders as users bring them, broken: another architecture, a SiLU model, a missing shard, a
        // corrupt header.
        void CopyHf(string family, string name)
        {
            Directory.CreateDirectory(R(name));
            foreach (string f in Directory.GetFiles(CheckpointReference.Folder(family)))
                File.Copy(f, Path.Combine(R(name), Path.GetFileName(f)));
        }
        void EditConfig(string name, string from, string to)
        {
            string config = File.ReadAllText(R(name + "/config.json"));
            Assert.That(config, Does.Contain(from));
            File.WriteAllText(R(name + "/config.json"), config.Replace(from, to));
        }
        CopyHf("opt", "hf-neox");
        EditConfig("hf-neox", "\"model_type\": \"opt\"", "\"model_type\": \"gpt_neox\"");
        CopyHf("llama", "hf-silu");
        EditConfig("hf-silu", "\"hidden_act\": \"relu\"", "\"hidden_act\": \"silu\"");
        CopyHf("llama", "hf-shard");
        File.Delete(R("hf-shard/model-00002-of-00003.safetensors"));
        CopyHf("mistral", "hf-corrupt");
        byte[] mistral = File.ReadAllBytes(R("hf-corrupt/model.safetensors"));
        File.WriteAllBytes(R("hf-corrupt/model.safetensors"), mistral[..(mistral.Length / 2)]);
        CopyHf("opt", "hf-proj");
        EditConfig("hf-proj", "\"word_embed_proj_dim\": 64", "\"word_embed_proj_dim\": 32");
        Directory.CreateDirectory(R("not-a-checkpoint"));
        File.WriteAllText(R("not-a-checkpoint/config.json"), "{ \"hidden_size\": 64 }");

        // Round two: outputs on inputs, a user's files, garbage numbers, corpora cut short, counts no analysis writes.
        File.Copy(opt, R("mine.onnx"));
        File.CreateSymbolicLink(R("link.onnx"), R("mine.onnx"));
        Assert.That(Link(R("mine.onnx"), R("hard.onnx")), Is.EqualTo(0), "ln");
        File.Copy(opt, R("notes.onnx")); // a user's own file that happens to end in .onnx
        Run("prune", "--model", opt, "--stats", R("shard0/stats.json"), "--dead-only", "--out", R("ours.onnx"));
        Run("prune", "--model", opt, "--stats", R("shard0/stats.json"), "--dead-only", "--out", R("edited.onnx"));
        File.AppendAllText(R("edited.onnx"), " "); // ours once, edited since: now the user's
        byte[] gz = Compress(File.ReadAllBytes(held));
        File.WriteAllBytes(R("cut.txt.gz"), gz[..(gz.Length / 2)]);
        File.WriteAllText(R("plain.txt.gz"), "this text was never compressed\n");
        void Counts(string name, Action<System.Text.Json.Nodes.JsonNode> edit)
        {
            var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(R("shard0/counts.json")))!;
            edit(node);
            Directory.CreateDirectory(R(name));
            File.WriteAllText(R(name + "/counts.json"), node.ToJsonString());
        }
        Counts("neg-counts", n => n["layers"]![0]!["tokens_per_unit"]![3] = -5);
        Counts("huge-counts", n => n["layers"]![0]!["tokens_per_unit"]![3] = 120_000_000_000L);
        Counts("short-counts", n =>
            n["layers"]![1]!["units_per_batch_histogram"] = new System.Text.Json.Nodes.JsonArray(1, 2, 3)
        );
        Directory.CreateDirectory(R("empty-counts"));
        File.WriteAllText(R("empty-counts/counts.json"), "{}");
        Directory.CreateDirectory(R("stats-only"));
        File.Copy(R("shard0/stats.json"), R("stats-only/stats.json"));
        Run(
            "train",
            "--corpus",
            Path.Combine(splits, "train.txt"),
            "--heldout",
            Path.Combine(splits, "heldout.txt"),
            "--tokenizer",
            "bytes",
            "--out",
            R("ck2"),
            "--steps",
            "1",
            "--layers",
            "1",
            "--d-ff",
            "32",
            "--eval-every",
            "1",
            "--threads",
            "2"
        );
        Run("export", "--checkpoint", R("ck2"), "--out", R("ck2/model.onnx"));
    }

    static byte[] Compress(byte[] data)
    {
        using var buffer = new MemoryStream();
        using (var gzip = new System.IO.Compression.GZipStream(buffer, System.IO.Compression.CompressionLevel.Optimal))
            gzip.Write(data);
        return buffer.ToArray();
    }

    static int Link(string target, string link)
    {
        using var ln = System.Diagnostics.Process.Start("ln", [target, link])!;
        ln.WaitForExit();
        return ln.ExitCode;
    }

    static void Run(params string[] args)
    {
        var (exit, _, error) = Cli.Run(args);
        Assert.That(exit, Is.EqualTo(0), error);
    }

    /// <summary>The table: what is wrong, the command line, and what the one error line must say.</summary>
    public static IEnumerable<TestCaseData> Cases()
    {
        TestCaseData Case(string what, string expected, params string[] args) =>
            new TestCaseData(args, expected).SetName(what);
        string[] Analyze(string model, string corpus, params string[] rest) =>
            ["analyze", "--model", model, "--corpus", corpus, .. rest, "--out", Out];
        string[] AnalyzeOpt(params string[] rest) => Analyze(Opt, Held, [.. Window, .. rest]);

        yield return Case("model file missing", "does not exist", Analyze("/nonexistent/model.onnx", Held, Window));
        yield return Case("model is not ONNX", "is not an ONNX model", Analyze(Ws("not-onnx.onnx"), Held, Window));
        yield return Case("model file truncated", "is not an ONNX model", Analyze(Ws("truncated.onnx"), Held, Window));
        yield return Case(
            "graph without a ReLU MLP",
            "No MLP activation found",
            Analyze(Ws("sigmoid.onnx"), Held, Window)
        );
        yield return Case(
            "op between activation and down-projection",
            "a Pow node ('squared_relu') sits between",
            Analyze(Ws("squared.onnx"), Held, Window)
        );
        yield return Case(
            "input the tool cannot feed",
            "The model needs input 'pixel_values'",
            Analyze(Ws("pixels.onnx"), Held, Window)
        );
        yield return Case(
            "external data file missing",
            "opt.ext.onnx.data of initializer",
            Analyze(Ws("lonely/opt.ext.onnx"), Held, Window)
        );
        yield return Case(
            "corpus missing",
            "does not exist: pass a .txt",
            Analyze(Opt, "/nonexistent/corpus.txt", Window)
        );
        yield return Case("corpus of blank lines", "holds no documents", Analyze(Opt, Ws("empty.txt"), Window));
        yield return Case("corpus format unsupported", "unsupported extension", Analyze(Opt, Ws("corpus.csv"), Window));
        yield return Case(
            "token id outside the vocabulary",
            "Token id 999 is outside the model's vocabulary (0..255)",
            Analyze(Opt, Ws("big-ids.txt"), "--tokenizer", "ids", "--seq-len", "32")
        );
        yield return Case(
            "ids corpus holding a word",
            "'three' is not a token id",
            Analyze(Opt, Ws("words.txt"), "--tokenizer", "ids", "--seq-len", "32")
        );
        yield return Case(
            "unknown tokenizer spec",
            "Unknown tokenizer spec 'gpt9'",
            Analyze(Opt, Held, "--tokenizer", "gpt9", "--seq-len", "32")
        );
        yield return Case(
            "tokenizer file missing",
            "does not exist",
            Analyze(Opt, Held, "--tokenizer", "bpe:/nonexistent/vocab.json,/nonexistent/merges.txt", "--seq-len", "32")
        );
        yield return Case(
            "window length zero",
            "--seq-len 0: must be at least 1",
            Analyze(Opt, Held, "--tokenizer", "bytes", "--seq-len", "0")
        );
        yield return Case(
            "window longer than the position table",
            "--seq-len 500 exceeds what the model can take (128 positions)",
            Analyze(Ws("own.onnx"), Held, "--tokenizer", "bytes", "--seq-len", "500")
        );
        yield return Case(
            "shard index out of range",
            "--shard 3/2: use i/n with 0 ≤ i < n",
            AnalyzeOpt("--shard", "3/2")
        );
        yield return Case(
            "--shard auto outside a scheduler",
            "--shard auto: no scheduler's shard variables are set",
            AnalyzeOpt("--shard", "auto")
        );
        yield return Case(
            "token file read with a text tokenizer",
            "holds token ids, not text: pass --tokenizer ids",
            Analyze(Opt, Ws("tokens.bin"), Window)
        );
        yield return Case(
            "max tokens not positive",
            "--max-tokens 0: must be at least 1",
            AnalyzeOpt("--max-tokens", "0")
        );
        yield return Case(
            "unknown device",
            "--device tpu: use cpu, cuda, cuda:N (N = GPU index) or auto",
            AnalyzeOpt("--device", "tpu")
        );
        yield return Case(
            "auto inside a device list",
            "--device cpu,auto: a list names devices (cpu, cuda:N); auto and cuda:all stand alone.",
            AnalyzeOpt("--device", "cpu,auto")
        );
        yield return Case(
            "threshold of a stats export differs",
            "counts activations above 0.5",
            Analyze(Ws("own.stats.onnx"), Held, "--tokenizer", "bytes", "--seq-len", "16")
        );
        yield return Case(
            "--out is a file",
            "is a file; give a folder",
            ["analyze", "--model", Opt, "--corpus", Held, .. Window, "--out", Held]
        );
        yield return Case(
            "--out holds a user's file",
            "already holds files relu-sparsity did not write (notes.txt)",
            ["analyze", "--model", Opt, "--corpus", Held, .. Window, "--out", Ws("user")]
        );
        yield return Case(
            "--out cannot be created",
            "--out /proc/relu-sparsity-out: cannot create a folder there",
            ["analyze", "--model", Opt, "--corpus", Held, .. Window, "--out", "/proc/relu-sparsity-out"]
        );
        yield return Case(
            "merge input not an analysis",
            "is not an analysis folder: counts.json is missing",
            ["merge", "--inputs", Ws("user"), "--out", Out]
        );
        yield return Case(
            "merge input corrupt",
            "is not a valid counts file",
            ["merge", "--inputs", Ws("bad-counts"), "--out", Out]
        );
        yield return Case(
            "merge of 0/2 with 1/3",
            "shard count n differs",
            ["merge", "--inputs", Ws("shard0"), Ws("shard1of3"), "--out", Out]
        );
        yield return Case(
            "merge of the same shard twice",
            "appears twice",
            ["merge", "--inputs", Ws("shard0"), Ws("shard0"), "--out", Out]
        );
        yield return Case(
            "merge with shards missing",
            "Shards 1/2 are missing",
            ["merge", "--inputs", Ws("shard0"), "--out", Out]
        );
        yield return Case(
            "unknown precision",
            "--precision fp8: use fp32, fp16 or bf16",
            AnalyzeOpt("--precision", "fp8")
        );
        yield return Case("bf16 on the CPU", "--precision bf16 runs on a GPU only", AnalyzeOpt("--precision", "bf16"));
        yield return Case(
            "a CUDA graph on the CPU",
            "--cuda-graph captures the GPU's kernels: add --device cuda",
            AnalyzeOpt("--cuda-graph")
        );
        yield return Case(
            "more top examples than are held per unit",
            "exceeds 10,000 windows per unit",
            AnalyzeOpt("--top-examples", "100000")
        );
        yield return Case(
            "unit of an analysis without top examples",
            "re-run analyze with --top-examples",
            ["unit", "--stats", Ws("shard0"), "--layer", "0", "--unit", "0"]
        );
        yield return Case(
            "stats of another model given to prune",
            "describes another model (opt.torchscript.onnx",
            [
                "prune",
                "--model",
                Fx("gpt2.dynamo.onnx"),
                "--stats",
                Ws("shard0/stats.json"),
                "--dead-only",
                "--out",
                Ws("p.onnx"),
            ]
        );
        yield return Case(
            "stats file missing",
            "does not exist (run `analyze` first)",
            ["prune", "--model", Opt, "--stats", Ws("none/stats.json"), "--dead-only", "--out", Ws("p.onnx")]
        );
        yield return Case(
            "mask naming a unit that does not exist",
            "keeps unit 300 of layer 0, which has units 0..255",
            ["prune", "--model", Opt, "--mask", Ws("mask.json"), "--out", Ws("p.onnx")]
        );
        yield return Case(
            "two pruning rules at once",
            "give exactly one rule",
            [
                "prune",
                "--model",
                Opt,
                "--stats",
                Ws("shard0/stats.json"),
                "--dead-only",
                "--keep-fraction",
                "0.5",
                "--out",
                Ws("p.onnx"),
            ]
        );
        yield return Case(
            "k larger than d_ff",
            "k = 300 is outside 1..256",
            ["topk", "--model", Opt, "--k", "300", "--out", Ws("k.onnx")]
        );
        yield return Case(
            "k not a number",
            "--k 'ten' is not an integer",
            ["topk", "--model", Opt, "--k", "ten", "--out", Ws("k.onnx")]
        );
        yield return Case(
            "graph that loads but fails at run time",
            "ONNX Runtime could not run the model",
            ["evaluate", "--model", Ws("unrunnable.onnx"), "--corpus", Held, .. Window]
        );
        yield return Case(
            "encoder given to evaluate",
            "is not a causal language model",
            ["evaluate", "--model", Fx("bert.dynamo.onnx"), "--corpus", Held, .. Window]
        );
        yield return Case(
            "attention fusion finds no pattern it knows",
            "No attention block was recognised (Softmax '",
            ["fuse-attention", "--model", Fx("gpt_cache.torchscript.onnx"), "--out", Ws("f.onnx")]
        );
        yield return Case(
            "bench given a checkpoint and a model",
            "Give --checkpoint DIR (a model trained here) or --model M.onnx (any graph), not both.",
            ["bench", "--checkpoint", Ws("nonexistent"), "--model", Opt, "--out", Out]
        );
        yield return Case(
            "sparse-decode --device cuda on a graph without a cache",
            "has no key/value cache: the fixed-shape form (--device cuda) computes one new token per step",
            [
                "sparse-decode",
                "--model",
                Opt,
                "--stats",
                Ws("shard0/stats.json"),
                "--device",
                "cuda",
                "--out",
                Ws("s.onnx"),
            ]
        );
        yield return Case(
            "sparse-decode where no layer is sparse enough",
            "No layer is below the break-even of 1.00 % active units",
            [
                "sparse-decode",
                "--model",
                Opt,
                "--stats",
                Ws("shard0/stats.json"),
                "--break-even",
                "0.01",
                "--out",
                Ws("s.onnx"),
            ]
        );
        yield return Case(
            "generate asked to be greedy and to sample",
            "--greedy and sampling options (--temperature, --top-p, --top-k) exclude each other",
            ["generate", "--model", Opt, "--tokenizer", "bytes", "--prompt", "x", "--greedy", "--temperature", "0.7"]
        );
        yield return Case(
            "generate with a temperature of zero",
            "--temperature must be positive, --top-p in (0, 1] and --top-k at least 0",
            ["generate", "--model", Opt, "--tokenizer", "bytes", "--prompt", "x", "--temperature", "0"]
        );
        yield return Case(
            "generate with an encoder",
            "is not a causal language model (changing later tokens changes the outputs at earlier positions): generate",
            ["generate", "--model", Fx("bert.dynamo.onnx"), "--tokenizer", "bytes", "--prompt", "hi"]
        );
        yield return Case(
            "generate past an external graph's context",
            "the sequence is probably longer than the model's context; ask for fewer with --max-new-tokens",
            [
                "generate",
                "--model",
                Fx("gpt2.dynamo.onnx"), // positions made inside the graph: it does not say how many it takes
                "--tokenizer",
                "bytes",
                "--prompt",
                "The jury",
                "--max-new-tokens",
                "100",
            ]
        );
        yield return Case(
            "with-past export of the stats variant",
            "--with-past writes the dense decoder",
            ["export", "--checkpoint", Ws("ck"), "--with-past", "--variant", "stats", "--out", Ws("e.onnx")]
        );
        yield return Case(
            "checkpoint folder missing",
            "nonexistent does not exist",
            ["export", "--checkpoint", Ws("nonexistent"), "--out", Ws("e.onnx")]
        );
        yield return Case(
            "config.json of neither kind",
            "is neither a relu-sparsity checkpoint config nor a Hugging Face config",
            ["export", "--checkpoint", Ws("not-a-checkpoint"), "--out", Ws("e.onnx")]
        );
        yield return Case(
            "Hugging Face model type not supported",
            "model_type 'gpt_neox' is not supported; relu-sparsity reads opt, llama, mistral",
            ["export", "--checkpoint", Ws("hf-neox"), "--out", Ws("e.onnx")]
        );
        yield return Case(
            "Hugging Face model without ReLU",
            "hidden_act is 'silu', not relu",
            ["export", "--checkpoint", Ws("hf-silu"), "--out", Ws("e.onnx")]
        );
        yield return Case(
            "Hugging Face shard missing",
            "shard model-00002-of-00003.safetensors named by model.safetensors.index.json is missing",
            ["export", "--checkpoint", Ws("hf-shard"), "--out", Ws("e.onnx")]
        );
        yield return Case(
            "Hugging Face safetensors truncated",
            "the file is truncated or corrupt",
            ["export", "--checkpoint", Ws("hf-corrupt"), "--out", Ws("e.onnx")]
        );
        yield return Case(
            "OPT with project_in/project_out",
            "word_embed_proj_dim (32) differs from hidden_size (64)",
            ["export", "--checkpoint", Ws("hf-proj"), "--out", Ws("e.onnx")]
        );
        yield return Case(
            "hf: tokenizer folder without tokenizer files",
            "has no tokenizer.model or spiece.model (SentencePiece) and no vocab.json with merges.txt",
            Analyze(Opt, Held, "--tokenizer", "hf:" + Ws("user"), "--seq-len", "32")
        );
        yield return Case(
            "safetensors header not JSON",
            "is not a safetensors file (header is not a JSON object)",
            ["export", "--checkpoint", Ws("ck-header"), "--out", Ws("e.onnx")]
        );
        yield return Case(
            "safetensors truncated (offsets past the end)",
            "the file is truncated or corrupt",
            ["export", "--checkpoint", Ws("ck-offsets"), "--out", Ws("e.onnx")]
        );
        yield return Case(
            "truncated sparsity.jsonl",
            "is not a training-log entry (the file is truncated or corrupt)",
            ["report", "--in", Ws("own-analysis"), "--checkpoint", Ws("ck-log")]
        );
        yield return Case(
            "prune --out is its --model",
            "is the input",
            [
                "prune",
                "--model",
                Ws("mine.onnx"),
                "--stats",
                Ws("shard0/stats.json"),
                "--dead-only",
                "--out",
                Ws("mine.onnx"),
            ]
        );
        yield return Case(
            "prune --out is a user's file",
            "exists and is not an unchanged output of an earlier `prune`",
            ["prune", "--model", Opt, "--stats", Ws("shard0/stats.json"), "--dead-only", "--out", Ws("notes.onnx")]
        );
        yield return Case(
            "prune --out is our output, edited since",
            "exists and is not an unchanged output of an earlier `prune`",
            ["prune", "--model", Opt, "--stats", Ws("shard0/stats.json"), "--dead-only", "--out", Ws("edited.onnx")]
        );
        yield return Case(
            "topk --out is another command's output",
            "exists and is not an unchanged output of an earlier `topk`",
            ["topk", "--model", Opt, "--k", "8", "--out", Ws("ours.onnx")]
        );
        yield return Case(
            "fuse-attention --out is a symbolic link to --model",
            "is the input",
            ["fuse-attention", "--model", Ws("mine.onnx"), "--out", Ws("link.onnx")]
        );
        yield return Case(
            "instrument --out is a hard link to --model",
            "is the input",
            ["instrument", "--model", Ws("mine.onnx"), "--out", Ws("hard.onnx")]
        );
        yield return Case(
            "export --out onto the checkpoint's weights",
            "is the input",
            ["export", "--checkpoint", Ws("ck"), "--out", Ws("ck/model.safetensors")]
        );
        yield return Case(
            "sparse-decode --out is a user's file",
            "exists and is not an unchanged output",
            ["sparse-decode", "--model", Opt, "--stats", Ws("shard0/stats.json"), "--out", Ws("notes.onnx")]
        );
        yield return Case("threshold NaN", "--threshold NaN: give a finite number", AnalyzeOpt("--threshold", "NaN"));
        yield return Case(
            "threshold infinite",
            "--threshold Infinity: give a finite number",
            AnalyzeOpt("--threshold", "Infinity")
        );
        yield return Case(
            "tolerance NaN",
            "use metric=value with a finite value",
            [
                "check",
                "--stats",
                Ws("shard0/stats.json"),
                "--baseline",
                Ws("shard0/stats.json"),
                "--tolerance",
                "nonzero_fraction=NaN",
            ]
        );
        yield return Case(
            "evaluate with zero timed runs",
            "--runs 0: must be at least 1",
            ["evaluate", "--model", Opt, "--corpus", Held, .. Window, "--runs", "0"]
        );
        yield return Case(
            "negative batch size",
            "--batch-size -4: must be at least 1",
            Analyze(Opt, Held, "--tokenizer", "bytes", "--seq-len", "32", "--batch-size", "-4")
        );
        yield return Case(
            "batch beyond what memory allows",
            "tokens a batch exceeds the 16,777,216",
            Analyze(Opt, Held, "--tokenizer", "bytes", "--seq-len", "32", "--batch-size", "2000000000")
        );
        yield return Case(
            "empty --out",
            "--out is empty",
            ["analyze", "--model", Opt, "--corpus", Held, .. Window, "--out", ""]
        );
        yield return Case(
            "an option's value is not a number",
            "Cannot parse argument 'abc' for option '--seq-len' as an integer",
            Analyze(Opt, Held, "--tokenizer", "bytes", "--seq-len", "abc")
        );
        yield return Case(
            "misspelt option",
            "Unrecognized command or argument '--seq-lenn'",
            ["analyze", "--model", Opt, "--corpus", Held, "--seq-lenn", "32", "--out", Out]
        );
        yield return Case(
            "folder given as --model",
            "is a folder; give the .onnx file in it",
            Analyze(Ws("ck2"), Held, Window)
        );
        yield return Case(
            "truncated .txt.gz corpus",
            "is not a whole gzip file: Unexpected EOF at byte",
            Analyze(Opt, Ws("cut.txt.gz"), Window)
        );
        yield return Case(
            ".gz corpus that is not gzip",
            "is not a whole gzip file",
            Analyze(Opt, Ws("plain.txt.gz"), Window)
        );
        yield return Case(
            "counts.json with a negative count",
            "holds a negative count (-5)",
            ["merge", "--inputs", Ws("neg-counts"), "--partial", "--out", Out]
        );
        yield return Case(
            "counts.json with an impossible count",
            "a unit is active on more tokens than the",
            ["merge", "--inputs", Ws("huge-counts"), "--partial", "--out", Out]
        );
        yield return Case(
            "counts.json with a short histogram",
            "units_per_batch_histogram holds 3 values, not 257",
            ["merge", "--inputs", Ws("short-counts"), "--partial", "--out", Out]
        );
        yield return Case(
            "counts.json that is {}",
            "it has no header or no layers",
            ["merge", "--inputs", Ws("empty-counts"), "--partial", "--out", Out]
        );
        yield return Case(
            "report without counts.json",
            "is not an analysis folder: counts.json is missing",
            ["report", "--in", Ws("stats-only")]
        );
        yield return Case(
            "report of one model with another's checkpoint",
            "a report never mixes two models",
            ["report", "--in", Ws("own-analysis"), "--checkpoint", Ws("ck2")]
        );
        yield return Case(
            "window longer than an external graph's position table",
            "--seq-len 100 exceeds what gpt2.torchscript.onnx can take: its Gather '/m/transformer/wpe/Gather' reads a table of 64 rows",
            Analyze(Fx("gpt2.torchscript.onnx"), Held, "--tokenizer", "bytes", "--seq-len", "100", "--batch-size", "2")
        );
        yield return Case(
            "train into a user's folder",
            "already holds files relu-sparsity did not write (notes.txt)",
            ["train", "--corpus", Held, "--heldout", Held, "--tokenizer", "bytes", "--out", Ws("user"), "--steps", "1"]
        );
        string t5 = Fx("../t5/optimum"),
            pairs = Fx("../t5/heldout.ids.tsv");
        yield return Case(
            "encoder-decoder model on a plain text corpus",
            "An encoder-decoder model reads pairs, and",
            Analyze(t5, Held, "--tokenizer", "ids", "--seq-len", "32")
        );
        yield return Case(
            "pair option on a decoder-only model",
            "--pairs, --decoder-start-id and --pad-id are for encoder-decoder models",
            Analyze(Opt, Held, "--tokenizer", "bytes", "--seq-len", "32", "--pairs", "reconstruct")
        );
        yield return Case(
            "single encoder-decoder graph, no config.json, no start id",
            "The decoder's start id is unknown",
            Analyze(Fx("../t5/t5.torchscript.onnx"), pairs, "--tokenizer", "ids", "--seq-len", "32")
        );
        yield return Case(
            "unknown pair source",
            "--pairs both: use tsv",
            Analyze(t5, pairs, "--tokenizer", "ids", "--seq-len", "32", "--pairs", "both")
        );
        yield return Case(
            "dense activations of an encoder-decoder",
            "--dense-activations is not available for encoder-decoder models",
            Analyze(t5, pairs, "--tokenizer", "ids", "--seq-len", "32", "--dense-activations")
        );
        yield return Case(
            "decoder start id outside the vocabulary",
            "The decoder's start id 99999 is outside the model's vocabulary (0..511): give --decoder-start-id",
            Analyze(t5, pairs, "--tokenizer", "ids", "--seq-len", "32", "--decoder-start-id", "99999")
        );
        yield return Case(
            "encoder-decoder folder pruned into a .onnx file",
            "is an encoder-decoder folder: it is pruned into a folder",
            ["prune", "--model", t5, "--mask", Ws("mask.json"), "--out", Ws("t5.onnx")]
        );
    }

    [TestCaseSource(nameof(Cases))]
    public void IsOneClearLineExitTwoAndWritesNothing(string[] args, string expected)
    {
        var before = Snapshot();
        var (exit, output, error) = Cli.Run(args.Select(Real).ToArray());
        Assert.That(exit, Is.EqualTo(2), $"stdout: {output}\nstderr: {error}");
        string[] lines = error.Trim().Split('\n');
        Assert.That(lines, Has.Length.EqualTo(1), error);
        Assert.That(lines[0], Does.StartWith("error: ").And.Contain(expected));
        Assert.That(error + output, Does.Not.Contain("   at ").And.Not.Contain("Exception"), "no stack trace");
        Assert.That(Snapshot(), Is.EqualTo(before), "nothing written, nothing removed");
    }

    // Every file under the workspace with its length: a failed command must leave it as it was.
    static List<string> Snapshot() =>
        Directory
            .GetFiles(_ws, "*", SearchOption.AllDirectories)
            .Order(StringComparer.Ordinal)
            .Select(f => $"{Path.GetRelativePath(_ws, f)}:{new FileInfo(f).Length}")
            .ToList();

    /// <summary>Writes the table of docs/errors.md from the cases and the messages they get (run with
    /// RELU_SPARSITY_ERRORS_MD=path).</summary>
    [Test, Explicit("writes docs/errors.md")]
    public void WriteTheTable()
    {
        string path = Environment.GetEnvironmentVariable("RELU_SPARSITY_ERRORS_MD")
            ?? Path.Combine(TestCorpus.TempDir(), "errors.md");
        var md = new StringBuilder("| # | bad input | command | the error line (exit code 2) |\n|---:|---|---|---|\n");
        int i = 0;
        foreach (var c in Cases())
        {
            var args = (string[])c.Arguments[0]!;
            string error = Cli.Run(args.Select(Real).ToArray())
                .Err.Trim()
                .Replace(_ws, "WS")
                .Replace(HookFixture.PathOf("") + "/", "fixtures/")
                .Replace("|", "\\|");
            md.AppendLine($"| {++i} | {c.TestName} | `{args[0]}` | {error} |");
        }
        File.WriteAllText(path, md.ToString());
        TestContext.Out.WriteLine($"Wrote {path}");
    }
}
