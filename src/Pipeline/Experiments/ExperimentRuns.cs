using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Exporting;
using Sparsity.Pipeline.Report;
using Sparsity.Pipeline.Streaming;
using Sparsity.Pipeline.Variants;
using Sparsity.Training;
using Sparsity.Training.Model;

namespace Sparsity.Pipeline.Experiments;

/// <summary>What every experiment shares: the base recipe, the texts, where runs are kept.</summary>
/// <param name="PresetName">Preset the base recipe came from (for the report).</param>
/// <param name="Model">Base architecture (vocabulary size from the tokenizer).</param>
/// <param name="Training">Base training options.</param>
/// <param name="TrainCorpus">Training documents.</param>
/// <param name="HeldOutCorpus">Held-out documents: analysis and evaluation run on them.</param>
/// <param name="Tokenizer">Tokenizer spec.</param>
/// <param name="WorkDir">One folder per run; a run whose recipe is unchanged is reused, not retrained.</param>
/// <param name="Output">Progress and results.</param>
/// <param name="Progress">Where training runs report their progress.</param>
/// <param name="Cancel">Stops training between steps.</param>
/// <param name="Seeds">Training seeds per configuration (the preset's seed, then the next ones): figures are reported
/// as mean ± sd over them.</param>
public sealed record ExperimentSetup(
    string PresetName,
    ModelConfig Model,
    TrainOptions Training,
    string TrainCorpus,
    string HeldOutCorpus,
    string Tokenizer,
    string WorkDir,
    TextWriter Output,
    IProgress<TrainProgress> Progress,
    CancellationToken Cancel,
    int Seeds = 1
)
{
    /// <summary>Runs asked for so far, by name (an experiment's report states what its runs cost).</summary>
    public Dictionary<string, RunOutcome> Used { get; } = [];
}

/// <summary>One training run: the base recipe with the experiment's changes.</summary>
/// <param name="Name">Folder name, e.g. <c>dff_1024</c>.</param>
/// <param name="Model">Architecture of the run.</param>
/// <param name="Training">Training options of the run.</param>
/// <param name="Data">Training and held-out documents and tokenizer of the run, when not the setup's (random
/// data).</param>
public sealed record RunSpec(string Name, ModelConfig Model, TrainOptions Training, RunData? Data = null);

/// <summary>Documents and tokenizer a run trains and is measured on.</summary>
public sealed record RunData(string TrainCorpus, string HeldOutCorpus, string Tokenizer);

/// <summary>A trained, exported, analysed and evaluated run.</summary>
/// <param name="Spec">The recipe.</param>
/// <param name="Dir">Checkpoint folder (also holds model.onnx, analysis/ and evaluation.json).</param>
/// <param name="TrainSeconds">Training wall time.</param>
/// <param name="Log">sparsity.jsonl of the run.</param>
/// <param name="Death">unit_death.json of the run.</param>
/// <param name="HeldOut">Held-out unit use (batch and window as in training).</param>
/// <param name="Evaluation">Held-out loss, accuracy, ECE, noisy accuracy.</param>
public sealed record RunOutcome(
    RunSpec Spec,
    string Dir,
    double TrainSeconds,
    IReadOnlyList<TrainingLogEntry> Log,
    UnitDeathLog Death,
    SparsityStats HeldOut,
    Evaluation Evaluation
)
{
    /// <summary>The dense ONNX export of the run.</summary>
    public string OnnxModel => Path.Combine(Dir, "model.onnx");

    /// <summary>Held-out nonzero fraction averaged over layers.</summary>
    public double MeanNonzeroFraction => HeldOut.Layers.Average(l => l.NonzeroFraction);
}

/// <summary>
/// Trains, exports, analyses and evaluates experiment runs, each once: a run folder records the exact
/// recipe it was made from (experiment.json, written last), so a rerun with the same recipe is reused and
/// an interrupted or changed one is redone.
/// </summary>
public static class ExperimentRuns
{
    const string RecordFile = "experiment.json";

    sealed record RunKey(RunSpec Spec, string TrainCorpus, string HeldOutCorpus, string Tokenizer);

    sealed record RunRecord(RunKey Key, double TrainSeconds);

    /// <summary>
    /// The run of <paramref name="spec"/> for each of the setup's seeds (the spec's own seed, then the next ones;
    /// folders
    /// <c>NAME</c>, <c>NAME_seedS</c>), each trained first if missing.
    /// </summary>
    public static IReadOnlyList<RunOutcome> EnsureSeeds(ExperimentSetup s, RunSpec spec) =>
        Enumerable
            .Range(0, s.Seeds)
            .Select(i =>
                Ensure(
                    s,
                    i == 0
                        ? spec
                        : spec with
                        {
                            Name = $"{spec.Name}_seed{spec.Training.Seed + i}",
                            Training = spec.Training with { Seed = spec.Training.Seed + i },
                        }
                )
            )
            .ToList();

    /// <summary>Returns the finished run, training it first if no run with this recipe exists.</summary>
    public static RunOutcome Ensure(ExperimentSetup s, RunSpec spec)
    {
        string dir = Path.Combine(s.WorkDir, spec.Name);
        var data = spec.Data ?? new RunData(s.TrainCorpus, s.HeldOutCorpus, s.Tokenizer);
        var key = new RunKey(
            spec with
            {
                Data = null,
            },
            Path.GetFullPath(data.TrainCorpus),
            Path.GetFullPath(data.HeldOutCorpus),
            data.Tokenizer
        );
        string recordPath = Path.Combine(dir, RecordFile);
        var record = File.Exists(recordPath)
            ? JsonSerializer.Deserialize<RunRecord>(File.ReadAllText(recordPath), ProjectJson.Options)
            : null;
        if (record == null || Json(record.Key) != Json(key))
        {
            record = Make(s, spec, data, key, dir);
            AtomicFile.WriteAllText(recordPath, JsonSerializer.Serialize(record, ProjectJson.Options));
        }
        else
            s.Output.WriteLine($"Run {spec.Name}: reusing {dir} (same recipe).");

        var log = File.ReadLines(Path.Combine(dir, Checkpoint.LogFile))
            .Select(l => JsonSerializer.Deserialize<TrainingLogEntry>(l, ProjectJson.Lines)!)
            .ToList();
        var death = JsonSerializer.Deserialize<UnitDeathLog>(
            File.ReadAllText(Path.Combine(dir, Checkpoint.DeathFile)),
            ProjectJson.Options
        )!;
        var stats = SparsityStats.Load(Path.Combine(dir, "analysis", SparsityStats.FileName));
        var evaluation = JsonSerializer.Deserialize<Evaluation>(
            File.ReadAllText(Path.Combine(dir, "evaluation.json")),
            ProjectJson.Options
        )!;
        var outcome = new RunOutcome(spec, dir, record.TrainSeconds, log, death, stats, evaluation);
        s.Used[spec.Name] = outcome;
        return outcome;
    }

    /// <summary>Held-out evaluation of any ONNX language model with the experiments' settings.</summary>
    public static Evaluation Evaluate(ExperimentSetup s, string onnxModel) =>
        Evaluator.Run(
            new EvaluationRequest(
                onnxModel,
                s.HeldOutCorpus,
                s.Tokenizer,
                s.Model.SeqLen,
                s.Training.BatchSize,
                Threads: Environment.ProcessorCount
            )
        );

    static RunRecord Make(ExperimentSetup s, RunSpec spec, RunData data, RunKey key, string dir)
    {
        s.Output.WriteLine(
            $"Run {spec.Name}: training {spec.Model.Layers} layers × d_ff {spec.Model.DFf}"
                + $"{(spec.Model.UsesTopK ? $", top-k {spec.Model.TopK}" : "")}{(spec.Training.L1 > 0 ? $", L1 {spec.Training.L1}" : "")}{(spec.Training.RandomTargets ? ", random targets" : "")}{(spec.Data != null ? $", on {spec.Data.TrainCorpus}" : "")}, seed {spec.Training.Seed}"
                + $"{(spec.Training.MaskUnusedAt > 0 ? $", masking at step {spec.Training.MaskUnusedAt} (window {spec.Training.MaskWindow})" : "")} for {spec.Training.Steps} steps."
        );
        var clock = Stopwatch.StartNew();
        var summary = Trainer.Run(
            new TrainRequest(
                spec.Model,
                spec.Training,
                TextTokenizer.FromSpec(data.Tokenizer),
                data.TrainCorpus,
                data.HeldOutCorpus,
                dir
            ),
            s.Progress,
            s.Cancel
        );
        double trainSeconds = clock.Elapsed.TotalSeconds;

        var (model, _, _) = Checkpoint.Load(dir);
        using (model)
            CheckedExport.Write(model, ExportVariant.Dense, 0f, Path.Combine(dir, "model.onnx"));
        var heldOut = Analyzer.Run(
            new AnalysisRequest
            {
                Model = Path.Combine(dir, "model.onnx"),
                Corpus = data.HeldOutCorpus,
                Tokenizer = TokenizerSpec.Parse(data.Tokenizer),
                SeqLen = spec.Model.SeqLen,
                BatchSize = spec.Training.BatchSize,
                OutDir = Path.Combine(dir, "analysis"),
            },
            null,
            s.Cancel
        );
        var evaluation = Evaluator.Run(
            new EvaluationRequest(
                Path.Combine(dir, "model.onnx"),
                data.HeldOutCorpus,
                data.Tokenizer,
                s.Model.SeqLen,
                s.Training.BatchSize,
                Threads: Environment.ProcessorCount
            )
        );
        AtomicFile.WriteAllText(
            Path.Combine(dir, "evaluation.json"),
            JsonSerializer.Serialize(evaluation, ProjectJson.Options)
        );
        s.Output.WriteLine(
            $"Run {spec.Name}: trained in {Markdown.Clock(summary.Elapsed)}; held-out loss {evaluation.Loss:0.0000}, "
                + $"nonzero {string.Join(" ", heldOut.Layers.Select(l => l.NonzeroFraction.ToString("0.000")))}."
        );
        return new RunRecord(key, trainSeconds);
    }

    static string Json<T>(T value) => JsonSerializer.Serialize(value, ProjectJson.Options);
}
