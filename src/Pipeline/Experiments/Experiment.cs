using System.Globalization;
using System.Text;
using ScottPlot;
using Sparsity.Pipeline.Report;

namespace Sparsity.Pipeline.Experiments;

/// <summary>Where an experiment's plots go, and the Markdown that shows one.</summary>
/// <param name="Dir">Folder the PNGs are written to.</param>
/// <param name="Link">The same folder as the report links it (relative to results.md).</param>
public sealed record Figures(string Dir, string Link)
{
    /// <summary>Saves the plot as <paramref name="file"/> and returns the Markdown image line.</summary>
    public string Add(string file, Plot plot, string alt)
    {
        SparsityReport.Save(Dir, file, plot);
        return $"![{alt}]({Link}/{file})";
    }
}

/// <summary>One reproduction of a published finding: its name, what it reproduces, and the code that runs it.</summary>
/// <param name="Name">CLI and Cake name (experiment NAME, Experiment-Name).</param>
/// <param name="Title">Section title in results.md.</param>
/// <param name="Specs">The training runs it needs, one seed each (trained for every seed before any report, so the work
/// is sized and resumable up front).</param>
/// <param name="Run">Reads its runs (every seed), writes its plots, returns its Markdown section body.</param>
public sealed record Experiment(
    string Name,
    string Title,
    Func<ExperimentSetup, IReadOnlyList<RunSpec>> Specs,
    Func<ExperimentSetup, Figures, string> Run
)
{
    /// <summary>The experiments, in the order results.md presents them.</summary>
    public static IReadOnlyList<Experiment> All { get; } =
    [
        new("dynamics", "1. Sparsity during training (Li et al. Fig. 1)", s => [Base(s)], DynamicsExperiment.Run),
        new(
            "layers",
            "2. Per-token against per-batch unit use by layer (Wild & Anderson §3)",
            s => [Base(s)],
            LayerPatternExperiment.Run
        ),
        new(
            "death",
            "3. Neuron death and masking unused units (Wild & Anderson §4)",
            DeathExperiment.Specs,
            DeathExperiment.Run
        ),
        new(
            "width",
            "4. Active units against MLP width (the blog's √n law)",
            WidthExperiment.Specs,
            WidthExperiment.Run
        ),
        new(
            "topk",
            "5. Top-k trained against Top-k applied after training (Li et al. §4.2)",
            TopKExperiment.Specs,
            TopKExperiment.Run
        ),
        new("l1", "6. L1 activation penalty sweep (Li et al. Table C.1)", L1Experiment.Specs, L1Experiment.Run),
        new(
            "random",
            "7. Sparsity with random data (Li et al. §3)",
            RandomDataExperiment.Specs,
            RandomDataExperiment.Run
        ),
        new("depth", "8. Sparsity against depth (Li et al.)", DepthExperiment.Specs, DepthExperiment.Run),
        new(
            "inversion",
            "9. Per-batch inversion, examined (Wild & Anderson §3)",
            s => [Base(s)],
            BatchInversionExperiment.Run
        ),
    ];

    /// <summary>The base run every experiment compares against: the preset unchanged.</summary>
    public static RunSpec Base(ExperimentSetup s) => new("base", s.Model, s.Training);
}
