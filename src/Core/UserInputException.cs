namespace Sparsity.Core;

/// <summary>
/// A problem with what the user asked for (a path, a spec, an option). The command line prints
/// its message as one line and exits non-zero, without a stack trace.
/// </summary>
public sealed class UserInputException : Exception
{
    /// <summary>A problem described in one line.</summary>
    public UserInputException(string message)
        : base(message) { }

    /// <summary>A problem described in one line, caused by <paramref name="inner"/> (kept for callers that tell causes
    /// apart).</summary>
    public UserInputException(string message, Exception inner)
        : base(message, inner) { }
}
