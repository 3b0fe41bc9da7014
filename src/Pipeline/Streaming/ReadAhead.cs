using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;

namespace Sparsity.Pipeline.Streaming;

/// <summary>Enumerates a sequence on a second thread, a bounded number of items ahead of its consumer.</summary>
public static class ReadAhead
{
    /// <summary>
    /// The items of <paramref name="source"/>, produced on a background thread at most <paramref name="capacity"/> ahead;
    /// a failure there is rethrown here, and stopping early stops the producer.
    /// </summary>
    public static IEnumerable<T> Of<T>(IEnumerable<T> source, int capacity)
    {
        using var stop = new CancellationTokenSource();
        using var queue = new BlockingCollection<T>(boundedCapacity: capacity);
        Exception? failure = null;
        var producer = Task.Run(() =>
        {
            try { foreach (var item in source) queue.Add(item, stop.Token); }
            catch (OperationCanceledException) when (stop.IsCancellationRequested) { }
            catch (Exception e) { failure = e; }
            finally { queue.CompleteAdding(); }
        });
        try
        {
            foreach (var item in queue.GetConsumingEnumerable()) yield return item;
            producer.Wait();
            if (failure != null) ExceptionDispatchInfo.Capture(failure).Throw();
        }
        finally
        {
            stop.Cancel();
            producer.Wait();
        }
    }
}
