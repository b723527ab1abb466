package io.jobwire.client;

/**
 * What an add answered.
 *
 * @param id the job's id ({@code <queue>/<ULID>}), opaque and sortable by creation time
 * @param duplicate true when the idempotency key was seen within the window and no job was added
 *     ({@code id} is then the first job's)
 */
public record AddResult(String id, boolean duplicate) {}
