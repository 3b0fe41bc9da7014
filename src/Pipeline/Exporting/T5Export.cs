using Sparsity.Export;
using Sparsity.Pipeline.Runtime;
using Sparsity.Training;

namespace Sparsity.Pipeline.Exporting;

/// <summary>What a T5 export wrote: the folder's graphs and files, and the model's shape.</summary>
public sealed record T5ExportResult(
    string Source,
    IReadOnlyList<string> Files,
    long Parameters,
    int EncoderLayers,
    int DecoderLayers,
    int DFf
);

/// <summary>
/// <c>export --checkpoint</c> for Hugging Face T5 v1.0 (<see cref="T5Checkpoint"/>): the Optimum-style folder
/// (encoder_model.onnx, decoder_model.onnx, config.json, tokenizer files) written from the safetensors weights, loaded
/// and run joined (as <c>analyze</c> runs it) before anything is moved into place.
/// </summary>
public static class T5Export
{
    // What travels with the graphs: the configuration and T5's tokenizer, as Optimum's folders hold them.
    static readonly string[] Companions =
    [
        "config.json",
        "generation_config.json",
        "spiece.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
    ];

    /// <summary>Writes the folder <paramref name="outDir"/> from <paramref name="checkpoint"/>; nothing is written when
    /// a check fails.</summary>
    public static T5ExportResult Run(string checkpoint, string outDir)
    {
        if (outDir.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            throw new UserInputException(
                $"{checkpoint} is a T5 checkpoint: it is written as a folder (encoder_model.onnx, decoder_model.onnx, config and tokenizer, as Optimum lays T5 out); give --out DIR."
            );
        OutputFolder.RequireWritable(outDir, "export");
        var t5 = T5Checkpoint.Open(checkpoint);
        var encoder = t5.Encoder(Tool.Producer);
        var decoder = t5.Decoder(Tool.Producer);
        var joined = EncoderDecoder.Join(encoder, decoder, checkpoint);
        GraphCheck.Verify(joined, "exported T5", ProbeBatch.For(joined));
        var sites = MlpSites.Find(joined);
        if (
            sites.Count(s => s.Stack == ModelStack.Encoder) != t5.EncoderLayers
            || sites.Count(s => s.Stack == ModelStack.Decoder) != t5.DecoderLayers
        )
            throw new InvalidOperationException(
                $"The exported T5 graphs hold {sites.Count} MLPs, not {t5.EncoderLayers} + {t5.DecoderLayers}. Please report this."
            );
        var files = new List<string>();
        OutputFolder.Write(outDir, "export", dir =>
        {
            ModelFiles.Save("export", encoder, Path.Combine(dir, EncoderDecoder.EncoderFile), MlpSites.Find(encoder));
            ModelFiles.Save("export", decoder, Path.Combine(dir, EncoderDecoder.DecoderFile), MlpSites.Find(decoder));
            foreach (string name in Companions.Where(n => File.Exists(Path.Combine(checkpoint, n))))
                File.Copy(Path.Combine(checkpoint, name), Path.Combine(dir, name));
            files.AddRange(
                Directory
                    .EnumerateFiles(dir)
                    .Where(f => !Path.GetFileName(f).StartsWith(".", StringComparison.Ordinal))
                    .Select(f => Path.Combine(outDir, Path.GetFileName(f)))
                    .Order(StringComparer.Ordinal)
            );
        });
        string source =
            $"Hugging Face t5 checkpoint {Path.GetFileName(Path.GetFullPath(checkpoint).TrimEnd('/'))} ({string.Join("/", t5.StoredDtypes)} weights, computed in float32)";
        return new T5ExportResult(
            source,
            files,
            Surgery.Parameters(encoder) + Surgery.Parameters(decoder),
            t5.EncoderLayers,
            t5.DecoderLayers,
            t5.DFf
        );
    }
}
