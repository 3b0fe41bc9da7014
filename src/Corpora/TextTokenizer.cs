using System.Text;
using Microsoft.ML.Tokenizers;

namespace Sparsity.Corpora;

/// <summary>
/// One tokenizer named by a spec string, the same syntax everywhere a tokenizer is named:
/// <c>tiktoken:cl100k_base</c>, <c>tiktoken:o200k_base</c>, <c>bpe:&lt;vocab.json&gt;,&lt;merges.txt&gt;</c>
/// (GPT-2 byte-level format, GPT-2 pre-tokenizer), <c>sentencepiece:&lt;file.model&gt;</c>,
/// <c>wordpiece:&lt;vocab.txt&gt;</c>,
/// <c>hf:&lt;folder&gt;</c> (a Hugging Face checkpoint's own tokenizer: tokenizer.model as SentencePiece, else
/// vocab.json and merges.txt as byte-level BPE; no BOS is added), <c>bytes</c> (UTF-8 bytes as ids 0–255) and
/// <c>ids</c> (text already holds whitespace-separated ids).
/// </summary>
public sealed class TextTokenizer
{
    readonly Tokenizer? _library;
    readonly bool _bytes;

    TextTokenizer(string spec, Tokenizer? library, bool bytes, int? vocabSize, IReadOnlyList<string> files)
    {
        Spec = spec;
        _library = library;
        _bytes = bytes;
        VocabSize = vocabSize;
        Files = files;
    }

    /// <summary>The spec this tokenizer was made from.</summary>
    public string Spec { get; }

    /// <summary>Ids are below this; null for <c>ids</c>, whose range only the model knows.</summary>
    public int? VocabSize { get; }

    /// <summary>Files the spec names (copied into checkpoints).</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>Id of &lt;|endoftext|&gt; when the vocabulary has one (documents are separated by it in training
    /// streams).</summary>
    public int? EndOfTextId { get; private init; }

    /// <summary>Token ids of <paramref name="text"/>.</summary>
    public IReadOnlyList<int> Encode(string text)
    {
        if (_library != null)
            return _library.EncodeToIds(text, considerPreTokenization: true, considerNormalization: true);
        if (_bytes)
            return Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray();
        var ids = new List<int>();
        foreach (string part in text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
            ids.Add(
                int.TryParse(part, out int id) && id >= 0
                    ? id
                    : throw new UserInputException(
                        $"'{Shorten(part)}' is not a token id: with --tokenizer ids each line holds whitespace-separated non-negative integers."
                    )
            );
        return ids;
    }

    /// <summary>Text of <paramref name="ids"/> (for <c>ids</c>, the ids joined by spaces).</summary>
    public string Decode(IEnumerable<int> ids)
    {
        if (_library != null)
            return _library.Decode(ids);
        if (_bytes)
            return Encoding.UTF8.GetString(ids.Select(i => (byte)i).ToArray());
        return string.Join(' ', ids);
    }

    /// <summary>Parses a spec (<see cref="TokenizerSpec.Parse"/>) and loads it.</summary>
    /// <exception cref="UserInputException">Unknown spec, or a file it names is missing or unreadable.</exception>
    public static TextTokenizer FromSpec(string spec, string? baseDirectory = null) =>
        FromSpec(TokenizerSpec.Parse(spec), baseDirectory);

    /// <summary>Loads a tokenizer; file paths are resolved against <paramref name="baseDirectory"/> when
    /// relative.</summary>
    /// <exception cref="UserInputException">A file the spec names is missing or unreadable.</exception>
    public static TextTokenizer FromSpec(TokenizerSpec parsed, string? baseDirectory = null)
    {
        string spec = parsed.ToString(),
            argument = parsed.Argument;
        string Resolve(string file)
        {
            string path = baseDirectory == null || Path.IsPathRooted(file) ? file : Path.Combine(baseDirectory, file);
            return File.Exists(path)
                ? path
                : throw new UserInputException($"Tokenizer file {path} (from --tokenizer {spec}) does not exist.");
        }
        try
        {
            switch (parsed.Kind)
            {
                case TokenizerKind.Bytes:
                    return new TextTokenizer(spec, null, bytes: true, 256, []);
                case TokenizerKind.Ids:
                    return new TextTokenizer(spec, null, bytes: false, null, []);
                case TokenizerKind.Tiktoken:
                    // The library exposes no full vocabulary count for tiktoken; these are the encodings' sizes with
                    // special tokens.
                    int tiktokenSize = argument == "cl100k_base" ? 100_277 : 200_019;
                    var tiktoken = TiktokenTokenizer.CreateForEncoding(argument);
                    // Documents are separated by the encoding's own <|endoftext|> (100257 in cl100k_base, 199999 in
                    // o200k_base).
                    return new TextTokenizer(spec, tiktoken, false, tiktokenSize, [])
                    {
                        EndOfTextId =
                            tiktoken.SpecialTokens?.TryGetValue(BytePairEncodingLearner.EndOfText, out int eotId)
                            == true
                                ? eotId
                                : null,
                    };
                case TokenizerKind.Bpe:
                    string vocab = Resolve(argument.Split(',')[0]),
                        merges = Resolve(argument.Split(',')[1]);
                    var endOfText = new Dictionary<string, int>();
                    var bpeOptions = new BpeOptions(vocab, merges) { ByteLevel = true };
                    if (
                        bpeOptions.Vocabulary!.FirstOrDefault(kv => kv.Key == BytePairEncodingLearner.EndOfText) is
                        { Key: not null } eot
                    )
                        endOfText[eot.Key] = eot.Value;
                    bpeOptions.SpecialTokens = endOfText;
                    bpeOptions.PreTokenizer = new RegexPreTokenizer(
                        BytePairEncodingLearner.Gpt2PreTokenizer(),
                        endOfText
                    );
                    var bpe = BpeTokenizer.Create(bpeOptions);
                    return new TextTokenizer(spec, bpe, false, bpe.Vocabulary.Values.Max() + 1, [vocab, merges])
                    {
                        EndOfTextId = endOfText.Count > 0 ? endOfText.Values.Single() : null,
                    };
                case TokenizerKind.SentencePiece:
                    string model = Resolve(argument);
                    using (var s = new MemoryStream(SentencePieceModel.Loadable(File.ReadAllBytes(model))))
                    {
                        var sp = SentencePieceTokenizer.Create(
                            s,
                            addBeginningOfSentence: false,
                            addEndOfSentence: false
                        );
                        return new TextTokenizer(
                            spec,
                            sp,
                            false,
                            MaxId(sp.Vocabulary.Values, sp.SpecialTokens?.Values) + 1,
                            [model]
                        );
                    }
                case TokenizerKind.HuggingFace:
                    string folder =
                        baseDirectory == null || Path.IsPathRooted(argument)
                            ? argument
                            : Path.Combine(baseDirectory, argument);
                    if (!Directory.Exists(folder))
                        throw new UserInputException(
                            $"Tokenizer folder {folder} (from --tokenizer {spec}) does not exist."
                        );
                    string Absolute(string file) => Path.GetFullPath(Path.Combine(folder, file));
                    if (File.Exists(Path.Combine(folder, "tokenizer.model")))
                        return Rename(FromSpec("sentencepiece:" + Absolute("tokenizer.model")), spec, folder);
                    if (File.Exists(Path.Combine(folder, "spiece.model")))
                    {
                        // T5's tokenizer (a SentencePiece Unigram model named spiece.model, no BOS) ends every text
                        // with </s>.
                        using var s = new MemoryStream(
                            SentencePieceModel.Loadable(File.ReadAllBytes(Absolute("spiece.model")))
                        );
                        var t5 = SentencePieceTokenizer.Create(
                            s,
                            addBeginningOfSentence: false,
                            addEndOfSentence: true
                        );
                        return Rename(
                            new TextTokenizer(
                                spec,
                                t5,
                                false,
                                MaxId(t5.Vocabulary.Values, t5.SpecialTokens?.Values) + 1,
                                [Absolute("spiece.model")]
                            ),
                            spec,
                            folder
                        );
                    }
                    if (
                        File.Exists(Path.Combine(folder, "vocab.json"))
                        && File.Exists(Path.Combine(folder, "merges.txt"))
                    )
                        return Rename(FromSpec($"bpe:{Absolute("vocab.json")},{Absolute("merges.txt")}"), spec, folder);
                    throw new UserInputException(
                        $"{folder} has no tokenizer.model or spiece.model (SentencePiece) and no vocab.json with merges.txt (byte-level BPE); "
                            + "relu-sparsity cannot read a tokenizer.json alone: pass its ids with --tokenizer ids, or the vocabulary files with --tokenizer bpe:<vocab.json>,<merges.txt>."
                    );
                case TokenizerKind.WordPiece:
                    string vocabTxt = Resolve(argument);
                    var wp = WordPieceTokenizer.Create(vocabTxt);
                    return new TextTokenizer(spec, wp, false, File.ReadLines(vocabTxt).Count(), [vocabTxt]);
            }
        }
        catch (Exception e) when (e is not UserInputException)
        {
            throw new UserInputException($"Could not load tokenizer {spec}: {e.Message}");
        }
        throw new ArgumentOutOfRangeException(nameof(parsed), parsed.Kind, "unknown tokenizer kind");
    }

    // The same tokenizer under the spec the user gave (stored in statistics and checkpoints); a Hugging Face folder's
    // config.json names its end-of-text id (generation stops there).
    static TextTokenizer Rename(TextTokenizer t, string spec, string? folder = null) =>
        new(spec, t._library, t._bytes, t.VocabSize, t.Files)
        {
            EndOfTextId = (folder == null ? null : HuggingFaceConfig.EndOfTextId(folder)) ?? t.EndOfTextId,
        };

    static int MaxId(IEnumerable<int> ids, IEnumerable<int>? special) =>
        Math.Max(ids.Max(), special?.DefaultIfEmpty(0).Max() ?? 0);

    static string Shorten(string s) => s.Length <= 20 ? s : s[..20] + "…";
}
