using System.CommandLine;
using System.Diagnostics;
using Sparsity.Corpora;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>tokenizer learn</c> and <c>tokenizer encode</c>.</summary>
public static class TokenizerCommand
{
    /// <summary>The <c>tokenizer</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Create(TextWriter output)
    {
        var corpus = new Option<string>("--corpus")
        {
            Description = "Training text: .txt, .jsonl, .tsv, a folder of them, or .gz of any.",
            Required = true,
        };
        var vocabSize = new Option<int>("--vocab-size")
        {
            Description = "Ids in the vocabulary: 256 bytes + merges + <|endoftext|>.",
            DefaultValueFactory = _ => 4096,
        };
        var outDir = new Option<string>("--out")
        {
            Description = "Folder for vocab.json and merges.txt.",
            Required = true,
        };
        var learn = new Command("learn", "Learn a byte-level BPE vocabulary (GPT-2 format) from a corpus.")
        {
            corpus,
            vocabSize,
            outDir,
        };
        learn.SetAction(parse =>
        {
            var clock = Stopwatch.StartNew();
            var result = BytePairEncodingLearner.Learn(
                TextDocuments.Read(parse.GetValue(corpus)!),
                parse.GetValue(vocabSize),
                parse.GetValue(outDir)!
            );
            var tokenizer = TextTokenizer.FromSpec($"bpe:vocab.json,merges.txt", parse.GetValue(outDir));
            long tokens = TextDocuments.Read(parse.GetValue(corpus)!).Sum(d => (long)tokenizer.Encode(d).Count);
            output.WriteLine(
                $"Learned {result.Merges} merges ({result.VocabSize} ids) from {result.Words:N0} words ({result.DistinctWords:N0} distinct) "
                    + $"in {clock.Elapsed.TotalSeconds:0.0} s; the corpus is {tokens:N0} tokens. Spec: bpe:{Path.Combine(parse.GetValue(outDir)!, "vocab.json")},{Path.Combine(parse.GetValue(outDir)!, "merges.txt")}"
            );
            return 0;
        });

        var spec = new Option<string>("--tokenizer")
        {
            Description =
                "Tokenizer spec: tiktoken:cl100k_base, tiktoken:o200k_base, bpe:<vocab.json>,<merges.txt>, sentencepiece:<file.model>, wordpiece:<vocab.txt>, bytes, ids.",
            Required = true,
        };
        var text = new Option<string>("--text") { Description = "Text to encode.", Required = true };
        var encode = new Command("encode", "Print the token ids of a text (to check a tokenizer spec).") { spec, text };
        encode.SetAction(parse =>
        {
            var tokenizer = TextTokenizer.FromSpec(parse.GetValue(spec)!);
            output.WriteLine(string.Join(' ', tokenizer.Encode(parse.GetValue(text)!)));
            return 0;
        });
        return new Command("tokenizer", "Learn or try tokenizers.") { learn, encode };
    }
}
