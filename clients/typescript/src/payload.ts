/**
 * Payload and result encoding, shared by producers and workers so both sides agree:
 * - `Uint8Array` / `Buffer` / `ArrayBuffer` travel as raw bytes, untouched;
 * - `undefined` is an empty payload;
 * - anything else is `JSON.stringify`-ed to UTF-8 (so a string travels as a JSON string).
 *
 * Reading back, `json<T>()` parses UTF-8 JSON (an empty payload reads as `undefined`) and
 * `text()` returns the UTF-8 string.
 */
/** A payload or result could not be decoded as JSON. */
export class PayloadError extends Error {
  override readonly name = "PayloadError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Encodes a payload or result per the rules above. */
export function encodeValue(value: unknown, what: string): Buffer {
  if (value === undefined) return Buffer.alloc(0);
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new PayloadError(`${what} cannot be JSON-encoded: ${(err as Error).message}`, { cause: err });
  }
  if (text === undefined) {
    throw new PayloadError(`${what} cannot be JSON-encoded (got a ${typeof value})`);
  }
  return Buffer.from(text, "utf8");
}

/** Parses UTF-8 JSON bytes; an empty buffer reads as `undefined`. */
export function decodeJson<T>(bytes: Uint8Array, what: string): T {
  if (bytes.length === 0) return undefined as T;
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new PayloadError(`${what} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

/** UTF-8 text of some bytes. */
export function decodeText(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
}
