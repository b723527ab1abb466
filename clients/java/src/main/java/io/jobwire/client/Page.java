package io.jobwire.client;

import java.util.List;

/**
 * One page of a listing.
 *
 * @param items the page's entries
 * @param nextPageToken pass it to get the next page; empty on the last page
 * @param <T> the entries' type
 */
public record Page<T>(List<T> items, String nextPageToken) {
  /**
   * Whether another page follows.
   *
   * @return true when {@link #nextPageToken()} is not empty
   */
  public boolean hasNext() {
    return !nextPageToken.isEmpty();
  }
}
