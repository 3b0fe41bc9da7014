using System.CommandLine;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>doctor</c>: what is installed and working.</summary>
public static class DoctorCommand
{
    /// <summary>The <c>doctor</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Create(TextWriter output)
    {
        var command = new Command(
            "doctor",
            "Say what is installed and working: .NET, ONNX Runtime and its execution providers, TorchSharp (and the Debian 12 loader fix), CUDA, presets, the built-in Brown corpus."
        );
        command.SetAction(_ =>
        {
            var findings = Doctor.Check(BrownDefaults.Built);
            int width = findings.Max(f => f.Name.Length);
            foreach (var f in findings)
                output.WriteLine($"{(f.Ok ? "ok  " : "no  ")}{f.Name.PadRight(width)}  {f.Detail}");
            return findings.Any(f => f.Essential && !f.Ok) ? 1 : 0;
        });
        return command;
    }
}
