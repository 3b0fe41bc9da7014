using System.Text;
using NUnit.Framework;
using Sparsity.Training;

namespace Sparsity.Tests;

/// <summary>Half-precision weights as Hugging Face checkpoints store them, and a corrupt header, read by hand-made
/// files.</summary>
[TestFixture]
public class SafetensorsTests
{
    static string Write(string header, byte[] data)
    {
        string path = Path.Combine(TestCorpus.TempDir(), "weights.safetensors");
        byte[] json = Encoding.UTF8.GetBytes(header);
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)json.Length), .. json, .. data]);
        return path;
    }

    [Test]
    public void Fp16AndBf16TensorsAreReadAsTheirFloat32Values()
    {
        float[] halves = [1.5f, -2.25f, 1f / 1024, 65504f];
        float[] brains = [1f, -3.140625f, 256f];
        var data = new List<byte>();
        foreach (float v in halves)
            data.AddRange(BitConverter.GetBytes((Half)v));
        foreach (float v in brains)
            data.AddRange(BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(v) >>> 16))); // bf16: the top half of float32
        string path = Write(
            """{"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},"__metadata__":{"format":"pt"}}""",
            [.. data]
        );
        var tensors = Safetensors.Load(path);
        Assert.That(tensors["a"].shape, Is.EqualTo(new long[] { 2, 2 }));
        Assert.That(tensors["a"].data<float>().ToArray(), Is.EqualTo(halves));
        Assert.That(tensors["b"].data<float>().ToArray(), Is.EqualTo(brains));
    }

    [TestCase(
        """{"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,6]}}""",
        "holds 6 bytes, but shape [2, 2] in F16 needs 8"
    )]
    [TestCase(
        """{"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,800]}}""",
        "claims bytes 0..800 of a data section of 8"
    )]
    [TestCase(
        """{"a":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}}""",
        "has dtype I8; only F32, F16 and BF16 are supported"
    )]
    [TestCase(
        """{"a":{"dtype":"F16","shape":"2x2","data_offsets":[0,8]}}""",
        "lacks a valid dtype, shape or data_offsets"
    )]
    [TestCase("""[1, 2, 3]""", "header is not a JSON object")]
    public void CorruptHeadersAreClearErrors(string header, string message)
    {
        var e = Assert.Throws<UserInputException>(() => Safetensors.Load(Write(header, new byte[8])))!;
        Assert.That(e.Message, Does.Contain(message));
    }
}
