using System.Globalization;

namespace Sparsity.Corpora;

/// <summary>
/// Random data for Li et al.'s "sparsity emerges from training dynamics, not data" (§3): token sequences drawn
/// uniformly from a vocabulary, and random next-token targets for real inputs. Seeded, so a run repeats.
/// </summary>
public static class RandomTokens
{
    /// <summary>
    /// Writes <paramref name="documents"/> documents of <paramref name="tokensPerDocument"/> ids drawn uniformly from
    /// [0, <paramref name="vocabSize"/>) to <paramref name="path"/>, one document per line, ids separated by spaces:
    /// the corpus format the <c>ids</c> tokenizer reads. Returns the path.
    /// </summary>
    public static string WriteCorpus(string path, int documents, int tokensPerDocument, int vocabSize, int seed)
    {
        if (documents < 1 || tokensPerDocument < 1 || vocabSize < 1)
            throw new ArgumentOutOfRangeException(
                nameof(documents),
                "Documents, tokens and vocabulary must be positive."
            );
        var rng = new Random(seed);
        AtomicFile.Write(path, temp =>
        {
            using var writer = new StreamWriter(temp);
            var line = new System.Text.StringBuilder();
            for (int d = 0; d < documents; d++)
            {
                line.Clear();
                for (int t = 0; t < tokensPerDocument; t++)
                {
                    if (t > 0)
                        line.Append(' ');
                    line.Append(rng.Next(vocabSize).ToString(CultureInfo.InvariantCulture));
                }
                writer.WriteLine(line);
            }
        });
        return path;
    }

    /// <summary>Fills <paramref name="targets"/> with ids drawn uniformly from [0,
    /// <paramref name="vocabSize"/>).</summary>
    public static void FillTargets(Span<long> targets, Random rng, int vocabSize)
    {
        for (int i = 0; i < targets.Length; i++)
            targets[i] = rng.Next(vocabSize);
    }
}
