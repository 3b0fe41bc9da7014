using NUnit.Framework;
using Sparsity.Analysis;
using Sparsity.Training;
using Sparsity.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Sparsity.Tests;

[TestFixture]
public class ModelTests
{
    static readonly ModelConfig Tiny = new(Layers: 2, DModel: 32, Heads: 4, DFf: 64, SeqLen: 16, VocabSize: 50);

    static Tensor RandomIds(int batch, int seq, int seed)
    {
        var random = new Random(seed);
        return tensor(
            Enumerable.Range(0, batch * seq).Select(_ => (long)random.Next(50)).ToArray(),
            new long[] { batch, seq }
        );
    }

    [Test]
    public void ForwardAndBackwardRunOnThisMachine()
    {
        // Proves the native libraries load (the GLIBCXX fix) and autograd works end to end.
        torch.random.manual_seed(1);
        using var model = new ReluTransformer(Tiny);
        using var ids = RandomIds(3, 16, 1);
        var (logits, hidden) = model.Forward(ids);
        Assert.That(logits.shape, Is.EqualTo(new long[] { 3, 16, 50 }));
        Assert.That(hidden.Select(h => h.shape), Is.All.EqualTo(new long[] { 3, 16, 64 }));
        var loss = nn.functional.cross_entropy(logits.view(-1, 50), ids.reshape(-1));
        loss.backward();
        var upGrad = model.Mlps[0].Up.weight!.grad;
        Assert.That(upGrad, Is.Not.Null);
        Assert.That(upGrad!.abs().sum().item<float>(), Is.GreaterThan(0f));
    }

    [Test]
    public void InitialisationActivatesAboutHalfTheUnits()
    {
        // LeCun-normal kernels on LayerNorm'd inputs: pre-activations are roughly symmetric around 0.
        torch.random.manual_seed(3);
        using var model = new ReluTransformer(Tiny with { DFf = 256 });
        using var ids = RandomIds(8, 16, 3);
        var (_, hidden) = model.Forward(ids);
        foreach (var h in hidden)
            Assert.That((h > 0).to_type(ScalarType.Float32).mean().item<float>(), Is.EqualTo(0.5).Within(0.06));
    }

    [Test]
    public void HiddenActivationsAreCausal()
    {
        torch.random.manual_seed(2);
        using var model = new ReluTransformer(Tiny);
        using var a = RandomIds(1, 16, 5);
        using var b = a.clone();
        b[0, 10] = tensor(7L);
        var ha = model.Forward(a).Hidden[1];
        var hb = model.Forward(b).Hidden[1];
        Assert.That(
            ha.narrow(1, 0, 10).allclose(hb.narrow(1, 0, 10)),
            Is.True,
            "positions before the change must not see it"
        );
        Assert.That(ha.narrow(1, 10, 6).allclose(hb.narrow(1, 10, 6)), Is.False);
    }

    [TestCase(1)]
    [TestCase(5)]
    [TestCase(17)]
    public void TopKKeepsExactlyK(int k)
    {
        torch.random.manual_seed(4);
        using var dense = new ReluTransformer(Tiny);
        using var topK = new ReluTransformer(Tiny with { TopK = k });
        CopyWeights(dense, topK);
        using var ids = RandomIds(4, 16, 4);
        var hidden = topK.Forward(ids).Hidden;
        var denseHidden = dense.Forward(ids).Hidden[0];
        var active = (hidden[0] > 0).sum(-1); // (B, T)
        Assert.That(active.max().item<long>(), Is.LessThanOrEqualTo(k));
        // Every token of the dense model has more than k active units here, so Top-k keeps exactly k.
        Assert.That((denseHidden > 0).sum(-1).min().item<long>(), Is.GreaterThan(k));
        Assert.That(active.min().item<long>(), Is.EqualTo(k));
        // The kept values are the k largest of the dense layer-0 activations.
        var expected = denseHidden.topk(k, dim: -1).values.sum(-1);
        Assert.That(hidden[0].sum(-1).allclose(expected, rtol: 1e-5, atol: 1e-5), Is.True);
    }

    [Test]
    public void TopKOfDFfIsTheUnmodifiedModel()
    {
        torch.random.manual_seed(5);
        using var dense = new ReluTransformer(Tiny);
        using var full = new ReluTransformer(Tiny with { TopK = Tiny.DFf });
        CopyWeights(dense, full);
        using var ids = RandomIds(2, 16, 6);
        Assert.That(full.forward(ids).allclose(dense.forward(ids), rtol: 0, atol: 0), Is.True);
    }

    [Test]
    public void MaskedUnitsStayZero()
    {
        torch.random.manual_seed(6);
        using var model = new ReluTransformer(Tiny);
        var keep = Enumerable.Range(0, Tiny.DFf).Select(i => i % 3 != 0).ToArray();
        model.Mlps[1].SetUnitMask(keep);
        using var ids = RandomIds(4, 16, 7);
        var hidden = model.Forward(ids).Hidden[1];
        var masked = tensor(Enumerable.Range(0, Tiny.DFf).Where(i => !keep[i]).Select(i => (long)i).ToArray());
        Assert.That(hidden.index_select(-1, masked).abs().max().item<float>(), Is.EqualTo(0f));
        Assert.That(hidden.abs().max().item<float>(), Is.GreaterThan(0f));
    }

    [Test]
    public void DeviceReductionsEqualTheAnalysisMathOnHostCopies()
    {
        // The trainer reduces activations to counts with TorchSharp; LayerUnitUse.AddDense is the
        // independent host computation of the same statistics.
        torch.random.manual_seed(8);
        using var model = new ReluTransformer(Tiny);
        using var ids = RandomIds(5, 16, 8);
        var h = model.Forward(ids).Hidden[0].detach();
        var active = h > 0;
        var reduced = new LayerUnitUse(Tiny.DFf);
        reduced.AddBatch(
            active.sum(-1, type: ScalarType.Int32).data<int>().ToArray(),
            active.any(1).sum(-1, type: ScalarType.Int32).data<int>().ToArray(),
            active.sum(new long[] { 0, 1 }, type: ScalarType.Int64).data<long>().ToArray()
        );
        var dense = new LayerUnitUse(Tiny.DFf);
        dense.AddDense(h.data<float>().ToArray(), 5, 16, default);

        AssertCounts.Equal(reduced, dense);
    }

    [Test]
    public void SafetensorsRoundTripGivesIdenticalLogits()
    {
        torch.random.manual_seed(9);
        using var model = new ReluTransformer(Tiny with { TiedEmbeddings = false });
        model.Mlps[0].SetUnitMask(Enumerable.Range(0, 64).Select(i => i != 3).ToArray());
        string path = Path.Combine(TestCorpus.TempDir(), "model.safetensors");
        Checkpoint.SaveWeights(model, path);

        torch.random.manual_seed(10);
        using var loaded = new ReluTransformer(Tiny with { TiedEmbeddings = false });
        Checkpoint.LoadWeights(loaded, path);
        using var ids = RandomIds(3, 16, 11);
        Assert.That(loaded.forward(ids).allclose(model.forward(ids), rtol: 0, atol: 0), Is.True);

        var names = Safetensors.Load(path).Keys;
        Assert.That(
            names,
            Does.Contain("h.1.mlp.up.weight")
                .And.Contain("h.0.mlp.unit_mask")
                .And.Contain("lm_head.weight")
                .And.Contain("wpe.weight")
        );
    }

    [Test]
    public void WeightsWithoutUnitMasksLoadAsUnmasked()
    {
        // A PyTorch model of the same architecture has no unit_mask buffers.
        torch.random.manual_seed(12);
        using var model = new ReluTransformer(Tiny);
        string path = Path.Combine(TestCorpus.TempDir(), "pytorch.safetensors");
        Safetensors.Save(path, model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)));
        using var loaded = new ReluTransformer(Tiny);
        loaded.Mlps[0].SetUnitMask(new bool[64]);
        Checkpoint.LoadWeights(loaded, path);
        Assert.That(loaded.Mlps[0].UnitMask.sum().item<float>(), Is.EqualTo(0f), "absent masks leave the model's own");
        using var fresh = new ReluTransformer(Tiny);
        Checkpoint.LoadWeights(fresh, path);
        using var ids = RandomIds(2, 16, 13);
        Assert.That(fresh.forward(ids).allclose(model.forward(ids), rtol: 0, atol: 0), Is.True);
    }

    [Test]
    public void WeightsOfAnotherShapeAreRejectedWithTheTensorName()
    {
        using var model = new ReluTransformer(Tiny);
        string path = Path.Combine(TestCorpus.TempDir(), "model.safetensors");
        Checkpoint.SaveWeights(model, path);
        using var wider = new ReluTransformer(Tiny with { DFf = 128 });
        var e = Assert.Throws<UserInputException>(() => Checkpoint.LoadWeights(wider, path));
        Assert.That(e!.Message, Does.Contain("h.0.mlp.up.weight").And.Contain("[64, 32]"));
    }

    static void CopyWeights(ReluTransformer from, ReluTransformer to)
    {
        using var _ = no_grad();
        var source = from.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in to.named_parameters())
            p.copy_(source[name]);
    }
}
