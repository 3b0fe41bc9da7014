using System.CommandLine;
using Sparsity.Corpora;
using Sparsity.Export;
using Sparsity.Pipeline.Generation;

namespace Sparsity.Pipeline.Commands;

/// <summary><c>generate</c>: continue a prompt with a causal ONNX model, streaming the text as it is
/// produced.</summary>
public static class GenerateCommand
{
    /// <summary>The <c>generate</c> command, writing to <paramref name="output"/>.</summary>
    public static Command Create(TextWriter output)
    {
        var model = SharedOptions.ModelOption();
        var tokenizer = new Option<string>("--tokenizer")
        {
            Description = "Tokenizer spec of the model (default: the built-in Brown tokenizer).",
        };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue.", Required = true };
        var maxNew = new Option<int>("--max-new-tokens")
        {
            Description = "Most tokens to add (stops earlier at <|endoftext|> or the model's context).",
            DefaultValueFactory = _ => 64,
        };
        var greedy = new Option<bool>("--greedy")
        {
            Description = "Pick the most likely token each step (the default when no sampling option is given).",
        };
        var temperature = new Option<float?>("--temperature") { Description = "Sample at this softmax temperature." };
        var topP = new Option<float?>("--top-p")
        {
            Description = "Sample from the smallest set of tokens whose probability reaches p.",
        };
        var topK = new Option<int?>("--top-k") { Description = "Sample from the k most likely tokens." };
        var seed = new Option<int>("--seed") { Description = "Seed of the sampler.", DefaultValueFactory = _ => 0 };
        var noCache = new Option<bool>("--no-cache")
        {
            Description = "Recompute the whole sequence each step even when the graph has a key/value cache.",
        };
        var threads = new Option<int>("--threads")
        {
            Description = "ONNX Runtime intra-op threads.",
            DefaultValueFactory = _ => 2,
        };
        var command = new Command(
            "generate",
            "Continue a prompt with a causal ONNX model (greedy or sampled), using its key/value cache when it has one."
        )
        {
            model,
            tokenizer,
            prompt,
            maxNew,
            greedy,
            temperature,
            topP,
            topK,
            seed,
            noCache,
            threads,
        };
        command.SetAction(parse =>
        {
            bool sampled =
                parse.GetValue(temperature) != null || parse.GetValue(topP) != null || parse.GetValue(topK) != null;
            if (sampled && parse.GetValue(greedy))
                throw new UserInputException(
                    "--greedy and sampling options (--temperature, --top-p, --top-k) exclude each other: give one."
                );
            if (parse.GetValue(maxNew) < 1)
                throw new UserInputException("--max-new-tokens must be at least 1.");
            var spec = BrownDefaults.Apply(
                output,
                (tokenizer.Name, parse.GetValue(tokenizer), BrownDefaults.Kind.Tokenizer)
            )[0];
            var text = TextTokenizer.FromSpec(spec);
            var sampling = sampled
                ? new Sampling(
                    parse.GetValue(temperature) ?? 1f,
                    parse.GetValue(topP) ?? 1f,
                    parse.GetValue(topK) ?? 0,
                    parse.GetValue(seed)
                )
                : null;
            using var generator = new Generator(
                OnnxGraph.Load(parse.GetValue(model)!),
                parse.GetValue(threads),
                useCache: !parse.GetValue(noCache)
            );
            var promptIds = text.Encode(parse.GetValue(prompt)!);
            output.Write(parse.GetValue(prompt));
            var produced = new List<int>();
            string shown = "";
            var clock = System.Diagnostics.Stopwatch.StartNew();
            foreach (int id in generator.Generate(promptIds, parse.GetValue(maxNew), sampling, text.EndOfTextId))
            {
                produced.Add(id);
                string decoded = text.Decode(produced);
                if (decoded.StartsWith(shown, StringComparison.Ordinal))
                    output.Write(decoded[shown.Length..]); // a byte-level piece may complete a character later
                else
                    output.Write(decoded);
                shown = decoded;
                output.Flush();
            }
            output.WriteLine();
            output.WriteLine(
                $"[{produced.Count} tokens in {clock.Elapsed.TotalSeconds:0.00} s, {(generator.UsesCache ? "key/value cache" : "recomputed each step")}, {(sampling == null ? "greedy" : "sampled")}]"
            );
            return 0;
        });
        return command;
    }
}
