using Onnx;
using Sparsity.Analysis;
using Sparsity.Export;
using Sparsity.Pipeline.Runtime;

namespace Sparsity.Pipeline.Variants;

/// <summary>
/// An Optimum encoder-decoder folder (encoder_model.onnx, decoder_model.onnx) rewritten graph by graph: the encoder's
/// MLP layers are the analysis's encoder.0…, the decoder's its decoder.0…; the rewritten pair is checked joined, as
/// <c>analyze</c> runs it, and written beside the folder's other files (config, tokenizer). Graphs with a past
/// (decoder_with_past_model.onnx, decoder_model_merged.onnx) are not rewritten: they are left out, and the output says
/// so; a folder with only the merged decoder gets decoder_model.onnx, its branch without a cache.
/// </summary>
public sealed record EncoderDecoderFolder(
    string Dir,
    ModelProto Encoder,
    ModelProto Decoder,
    IReadOnlyList<MlpSite> EncoderSites,
    IReadOnlyList<MlpSite> DecoderSites
)
{
    /// <summary>Reads the folder's encoder and decoder and finds their MLPs.</summary>
    public static EncoderDecoderFolder Load(string dir, IReadOnlyList<string> activations)
    {
        var encoder = OnnxGraph.Load(Path.Combine(dir, EncoderDecoder.EncoderFile));
        var decoder = EncoderDecoder.LoadDecoder(dir); // a merged decoder is rewritten as the decoder without past

        return new EncoderDecoderFolder(
            dir,
            encoder,
            decoder,
            MlpSites.Find(encoder, activations),
            MlpSites.Find(decoder, activations)
        );
    }

    /// <summary>Layer sizes in the analysis's order: the encoder's, then the decoder's.</summary>
    public IReadOnlyList<int> LayerSizes => [.. EncoderSites.Select(s => s.DFf), .. DecoderSites.Select(s => s.DFf)];

    /// <summary>The pair as one graph, as <c>analyze</c> runs it.</summary>
    public ModelProto Joined() => EncoderDecoder.Join(Encoder, Decoder, Dir);

    /// <summary>The part of <paramref name="mask"/> for one stack (the encoder's layers first), numbered within it;
    /// null when it keeps every unit there.</summary>
    public UnitMask? MaskOf(UnitMask mask, ModelStack stack)
    {
        int first = stack == ModelStack.Encoder ? 0 : EncoderSites.Count,
            count = stack == ModelStack.Encoder ? EncoderSites.Count : DecoderSites.Count;
        var layers = mask
            .Layers.Where(l => l.Layer >= first && l.Layer < first + count && l.Kept.Length < l.DFf)
            .Select(l => l with { Layer = l.Layer - first })
            .ToList();
        return layers.Count == 0 ? null : mask with { Layers = layers };
    }

    /// <summary>
    /// Writes the rewritten encoder and decoder into <paramref name="dir"/> with every other file of the input folder
    /// except graphs with a past; returns the files left out.
    /// </summary>
    public IReadOnlyList<string> WriteTo(string dir, string command)
    {
        var leftOut = new List<string>();
        foreach (string file in Directory.EnumerateFiles(Dir).Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(file);
            if (name is EncoderDecoder.EncoderFile or EncoderDecoder.DecoderFile)
                continue;
            if (
                name.EndsWith(".onnx", StringComparison.Ordinal)
                || name.EndsWith(".onnx.data", StringComparison.Ordinal)
                || name.EndsWith(".onnx_data", StringComparison.Ordinal)
            )
            {
                leftOut.Add(name);
                continue;
            }
            File.Copy(file, Path.Combine(dir, name));
        }
        ModelFiles.Save(command, Encoder, Path.Combine(dir, EncoderDecoder.EncoderFile), EncoderSites);
        ModelFiles.Save(command, Decoder, Path.Combine(dir, EncoderDecoder.DecoderFile), DecoderSites);
        return leftOut;
    }

    /// <summary>A line for the files <see cref="WriteTo"/> left out, or null.</summary>
    public static string? LeftOutLine(IReadOnlyList<string> leftOut) =>
        leftOut.Count == 0
            ? null
            : $"Left out (graphs with a past, which relu-sparsity does not rewrite; re-export them from the rewritten model if you decode with a cache): {string.Join(", ", leftOut)}.";
}
