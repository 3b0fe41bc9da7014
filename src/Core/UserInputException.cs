namespace Sparsity.Core;

/// <summary>
/// A problem with what the user asked for (a path, a spec, an option). The command line prints
/// its message as one line and exits non-zero, without a stack trace.
/// </summary>
public sealed class UserInputException(string message) : Exception(message);
