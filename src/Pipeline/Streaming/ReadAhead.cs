using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;

namespace Sparsity.Pipeline.Streaming;

/// <summary>Enumerates a sequence on a second thread, a bounded number of items ahead of its consumer.</summary>
public static class ReadAhead
{
    /// <summary>
    /// The items of <paramref name="source"/>, produced on a background thread at most <paramref name="capacity"/>
    /// ahead; a failure there is rethrown here, and stopping early stops the producer.
    /// </summary>
    public static IEnumerable<T> Of<T>(IEnumerable<T> source, int capacity)
    {
        using var dealer = new Dealer<T>(source, capacity); // dealt to one consumer
        foreach (var item in dealer.Take())
            yield return item;
    }
}

/// <summary>
/// One sequence read once on a background thread and dealt to several consumers, each taking the next item when it is
/// ready (so a faster device takes more); at most <c>capacity</c> items wait. A failure while reading is rethrown to
/// every consumer; <see cref="Stop"/> (a consumer failed) ends every consumer's enumeration with a cancellation.
/// </summary>
public sealed class Dealer<T> : IDisposable
{
    readonly BlockingCollection<T> _queue;
    readonly CancellationTokenSource _stop = new();
    readonly Task _producer;
    Exception? _failure;

    /// <summary>Reads <paramref name="source"/> on a thread of its own, at most <paramref name="capacity"/> items ahead
    /// of the takers.</summary>
    public Dealer(IEnumerable<T> source, int capacity)
    {
        _queue = new BlockingCollection<T>(boundedCapacity: capacity);
        _producer = Task.Run(() =>
        {
            try
            {
                foreach (var item in source)
                    _queue.Add(item, _stop.Token);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
            catch (Exception e)
            {
                _failure = e;
            }
            finally
            {
                _queue.CompleteAdding();
            }
        });
    }

    /// <summary>The reading failed (rethrown to the consumers too).</summary>
    public Exception? Failure => _failure;

    /// <summary>One consumer's share: the items it takes, until the source ends.</summary>
    public IEnumerable<T> Take()
    {
        foreach (var item in _queue.GetConsumingEnumerable(_stop.Token))
            yield return item;
        _producer.Wait();
        if (_failure != null)
            ExceptionDispatchInfo.Capture(_failure).Throw();
    }

    /// <summary>Stops reading and ends every consumer's enumeration.</summary>
    public void Stop() => _stop.Cancel();

    /// <inheritdoc/>
    public void Dispose()
    {
        _stop.Cancel();
        _producer.Wait(); // the producer catches its own failures
        _queue.Dispose();
        _stop.Dispose();
    }
}
