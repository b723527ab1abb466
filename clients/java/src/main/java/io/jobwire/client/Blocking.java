package io.jobwire.client;

import io.grpc.Status;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;

/**
 * Blocking use of the client's asynchronous calls: {@code Blocking.get(client.add(job))} waits for
 * the answer and throws the call's own {@link JobwireException} (not the {@code
 * CompletionException} that {@code join()} would wrap it in), so that a {@code catch
 * (NotFoundException e)} works as written.
 */
public final class Blocking {
  private Blocking() {}

  /**
   * Waits for a call of this client and returns its value.
   *
   * @param future a call of this client
   * @param <T> the call's value
   * @return the value
   * @throws JobwireException the call's failure, of its kind; CANCELLED if this thread is
   *     interrupted while waiting (the interrupt flag stays set)
   */
  public static <T> T get(CompletableFuture<T> future) {
    try {
      return future.get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new JobwireException("interrupted while waiting", Status.Code.CANCELLED, null, e);
    } catch (ExecutionException e) {
      throw Errors.from(e, null);
    }
  }
}
