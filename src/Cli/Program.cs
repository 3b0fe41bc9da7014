using System.CommandLine;
using Sparsity.Pipeline.Commands;
using Sparsity.Pipeline.Runtime;
using Sparsity.Training;

namespace Sparsity.Pipeline;

/// <summary>Entry point of relu-sparsity. Commands are thin wrappers over library calls.</summary>
public static class Program
{
    /// <summary>Runs the command line; returns its exit code (2 for bad input).</summary>
    public static int Main(string[] args)
    {
        NativeAllocator.KeepFreedMemory();
        return Run(args, Console.Out, Console.Error, interactive: !Console.IsOutputRedirected);
    }

    /// <summary>Parses and runs a command line; user errors become one line on <paramref name="error"/> and exit code
    /// 2.</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error, bool interactive = false)
    {
        var root = new RootCommand(
            "relu-sparsity: train ReLU transformers and measure how their MLP hidden units are used."
        )
        {
            CorpusCommand.Create(output),
            TokenizerCommand.Create(output),
            TrainCommand.Create(output, interactive),
            ExportCommands.Export(output),
            ExportCommands.Instrument(output),
            ExportCommands.FuseAttention(output),
            GenerateCommand.Create(output),
            VariantCommands.Prune(output),
            VariantCommands.TopK(output),
            VariantCommands.SparseDecode(output),
            VariantCommands.Evaluate(output),
            AnalyzeCommands.Analyze(output, interactive),
            AnalyzeCommands.Merge(output),
            AnalyzeCommands.Report(output),
            AnalyzeCommands.Unit(output),
            AnalyzeCommands.Check(output),
            ExperimentCommand.Create(output, interactive),
            BenchCommand.Create(output),
            DecodeBenchCommand.Create(output),
            DoctorCommand.Create(output),
        };
        var verbose = new Option<bool>("--verbose")
        {
            Description = "On an unexpected failure (a bug), print its stack trace too.",
            Recursive = true,
        };
        root.Options.Add(verbose);
        OptionRules.Apply(root);
        var parsed = root.Parse(args);
        string name =
            parsed.CommandResult.Command == root ? Tool.Name : $"{Tool.Name} {parsed.CommandResult.Command.Name}";
        if (args.Length == 0)
        {
            parsed = root.Parse(["--help"]);
            parsed.Invoke(new InvocationConfiguration { Output = output, Error = error });
            return 2;
        }
        if (parsed.Errors.Count > 0)
        {
            // One line, exit 2 as for every bad input (check's 1 means "outside tolerance" only).
            string message = string.Join(
                    " ",
                    parsed
                        .Errors[0]
                        .Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                )
                .Replace("as expected type 'System.Int32'", "as an integer")
                .Replace("as expected type 'System.Int64'", "as an integer")
                .Replace("as expected type 'System.Single'", "as a number")
                .Replace("as expected type 'System.Double'", "as a number");
            error.WriteLine($"error: {message} (see `{name} --help`)");
            return 2;
        }
        try
        {
            return parsed.Invoke(
                new InvocationConfiguration
                {
                    Output = output,
                    Error = error,
                    EnableDefaultExceptionHandler = false,
                }
            );
        }
        catch (UserInputException e)
        {
            error.WriteLine("error: " + e.Message);
            return 2;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A folder that cannot be written (read-only, full disk, no permission): the system's reason, one line.
            error.WriteLine($"error: {e.Message.Split('\n')[0]} Nothing was written; check the path and free space.");
            return 2;
        }
        catch (Exception e)
            when (e is Microsoft.ML.OnnxRuntime.OnnxRuntimeException
                || e.GetBaseException() is Microsoft.ML.OnnxRuntime.OnnxRuntimeException
            )
        {
            // A graph ONNX Runtime loads but cannot run (a node's shapes disagree at run time): its message, one line.
            error.WriteLine(
                $"error: ONNX Runtime could not run the model: {e.GetBaseException().Message.Split('\n')[0].Trim()} Nothing was written; check that the graph runs in ONNX Runtime as it is."
            );
            return 2;
        }
        catch (OperationCanceledException)
        {
            error.WriteLine("error: cancelled; no output was written.");
            return 130;
        }
        catch (Exception e)
        {
            // Anything else is our bug, not the user's input: one line (the trace with --verbose), exit 70
            // (EX_SOFTWARE).
            var cause = e.GetBaseException();
            error.WriteLine(
                $"error: `{name}` failed unexpectedly ({cause.GetType().Name}: {cause.Message.Split('\n')[0].Trim()}). Nothing was written. "
                    + $"This is a bug in {Tool.Producer}: please report it with the command line"
                    + (parsed.GetValue(verbose) ? "." : " and the output of the same command with --verbose.")
            );
            if (parsed.GetValue(verbose))
                error.WriteLine(e.ToString());
            return 70;
        }
    }
}
