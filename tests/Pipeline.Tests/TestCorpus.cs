namespace Sparsity.Tests;

/// <summary>Small generated English-like text, so tests need no corpus download.</summary>
public static class TestCorpus
{
    static readonly string[] Subjects = { "the cat", "a dog", "my friend", "the old man", "our teacher", "the city" };
    static readonly string[] Verbs = { "sees", "likes", "finds", "wants", "builds", "reads" };
    static readonly string[] Objects =
    {
        "a red ball",
        "the small house",
        "some bread",
        "the long letter",
        "a green tree",
        "the river",
    };

    /// <summary>Deterministic documents of a few sentences each.</summary>
    public static IEnumerable<string> Documents(int count, int seed)
    {
        var random = new Random(seed);
        for (int d = 0; d < count; d++)
            yield return string.Join(
                " ",
                Enumerable
                    .Range(0, 6)
                    .Select(_ =>
                        $"{Subjects[random.Next(Subjects.Length)]} {Verbs[random.Next(Verbs.Length)]} {Objects[random.Next(Objects.Length)]}."
                    )
            );
    }

    /// <summary>Writes train.txt and heldout.txt into a new temporary folder and returns it.</summary>
    public static string WriteSplits(int trainDocuments = 60, int heldOutDocuments = 10)
    {
        string dir = TempDir();
        File.WriteAllLines(Path.Combine(dir, "train.txt"), Documents(trainDocuments, seed: 1));
        File.WriteAllLines(Path.Combine(dir, "heldout.txt"), Documents(heldOutDocuments, seed: 2));
        return dir;
    }

    /// <summary>A fresh empty folder under the system temp folder.</summary>
    /// <summary>The repository root (the folder holding Pipeline.sln), above the test binaries.</summary>
    public static string RepositoryRoot { get; } = FindRoot();

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Pipeline.sln")))
                return dir.FullName;
        throw new InvalidOperationException("The repository root (Pipeline.sln) is not above the test folder.");
    }

    public static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "relu-sparsity-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
