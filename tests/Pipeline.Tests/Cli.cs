using Sparsity.Pipeline;

namespace Sparsity.Tests;

/// <summary>Runs the command line in-process and captures its output, error and exit code.</summary>
public static class Cli
{
    public static (int Exit, string Out, string Err) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int exit = Program.Run(args, output, error);
        return (exit, output.ToString(), error.ToString());
    }
}
