using Onnx;
using Sparsity.Analysis;
using Sparsity.Corpora;
using Sparsity.Export;

namespace Sparsity.Pipeline.Streaming;

/// <summary>Where an encoder-decoder's pairs come from (<c>--pairs</c>).</summary>
public enum PairSource
{
    /// <summary>A .tsv corpus of lines source&lt;TAB&gt;target (the default).</summary>
    Tsv,

    /// <summary>Each window of a text or token corpus is its own target.</summary>
    Reconstruct,
}

/// <summary>
/// How an encoder-decoder model (<see cref="EncoderDecoder"/>) reads a corpus: pairs from a .tsv (lines
/// source&lt;TAB&gt;target), or <c>--pairs reconstruct</c> (each window of a text corpus its own target); the decoder
/// teacher-forced with the target shifted right after its start id. <c>analyze</c> and <c>evaluate</c> read it the same
/// way.
/// </summary>
public static class PairCorpus
{
    /// <summary>
    /// The pair settings for <paramref name="model"/> (null for a model without decoder_input_ids, which must not be
    /// given the pair options): <paramref name="pairs"/> "tsv" (default) or "reconstruct"; the decoder start and pad
    /// ids from the options, else from config.json beside <paramref name="modelPath"/> (or in it, for a folder).
    /// </summary>
    public static PairSettings? SettingsFor(
        string modelPath,
        ModelProto model,
        string corpus,
        PairSource? pairs,
        long? decoderStartId,
        long? padId
    )
    {
        if (!EncoderDecoder.Is(model))
        {
            if (pairs != null || decoderStartId != null || padId != null)
                throw new UserInputException(
                    $"--pairs, --decoder-start-id and --pad-id are for encoder-decoder models (a graph taking decoder_input_ids, or Optimum's folder); {modelPath} is not one."
                );
            return null;
        }
        string config = Path.Combine(
            Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath))!,
            "config.json"
        );
        long? start = null,
            pad = null;
        if (File.Exists(config))
        {
            try
            {
                using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(config));
                long? Id(string name) =>
                    json.RootElement.TryGetProperty(name, out var v)
                    && v.ValueKind == System.Text.Json.JsonValueKind.Number
                        ? v.GetInt64()
                        : null;
                (start, pad) = (Id("decoder_start_token_id"), Id("pad_token_id"));
            }
            catch (System.Text.Json.JsonException e)
            {
                throw new UserInputException(
                    $"{config} is not valid JSON ({e.Message.Split('.')[0]}): fix it, or give --decoder-start-id and --pad-id."
                );
            }
        }
        string source = (pairs ?? PairSource.Tsv).ToString().ToLowerInvariant();
        if (source == "tsv")
            _ = TextDocuments.ReadPairs(corpus); // a corpus that is not pairs is refused before anything is written
        return new PairSettings(
            source,
            decoderStartId
                ?? start
                ?? throw new UserInputException(
                    $"The decoder's start id is unknown: no config.json with decoder_start_token_id beside {modelPath}; give --decoder-start-id (T5: 0)."
                ),
            padId
                ?? pad
                ?? throw new UserInputException(
                    $"The pad id is unknown: no config.json with pad_token_id beside {modelPath}; give --pad-id (T5: 0)."
                )
        );
    }

    /// <summary><c>--pairs</c> as given: tsv or reconstruct (null: not given).</summary>
    public static PairSource? ParseSource(string? option) =>
        option switch
        {
            null => null,
            "tsv" => PairSource.Tsv,
            "reconstruct" => PairSource.Reconstruct,
            _ => throw new UserInputException(
                $"--pairs {option}: use tsv (lines source<TAB>target, the default) or reconstruct (each window of a text corpus is its own target)."
            ),
        };

    /// <summary>The batches of pairs of a whole corpus (one shard of one), as <c>analyze</c> forms them.</summary>
    public static IEnumerable<BatchRow> Batches(
        string corpus,
        TextTokenizer tokenizer,
        PairSettings pairs,
        int seqLen,
        int batchSize,
        long? maxTokens,
        long vocab,
        PairTally? tally = null
    ) =>
        CorpusBatches.PackPairs(
            CorpusBatches.PairTokens(corpus, tokenizer, seqLen, pairs.Source == "reconstruct"),
            seqLen,
            batchSize,
            maxTokens,
            0,
            1,
            vocab,
            pairs.DecoderStartId,
            pairs.PadId,
            tally ?? new PairTally()
        );
}
