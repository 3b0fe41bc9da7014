namespace Sparsity.Core;

/// <summary>Who wrote an output: the name and version stamped into checkpoints, ONNX files, manifests and
/// statistics.</summary>
public static class Tool
{
    /// <summary>The command's name.</summary>
    public const string Name = "relu-sparsity";

    /// <summary>The version every assembly shares (Directory.Build.props).</summary>
    public static string Version => typeof(Tool).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>Producer string written into every output, e.g. "relu-sparsity 0.2.0".</summary>
    public static string Producer => Name + " " + Version;
}
