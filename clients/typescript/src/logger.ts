/**
 * A minimal logging interface so the worker can report what it does without choosing a logging
 * library. Pass `logger` in the worker options (pino, winston and console all fit with a
 * one-line adapter); the default writes warnings and errors to stderr.
 */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

function format(message: string, fields?: Record<string, unknown>): string {
  if (!fields) return `jobwire: ${message}`;
  const parts = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return `jobwire: ${message} ${parts.join(" ")}`;
}

/** Warnings and errors to stderr; debug and info are dropped. */
export const defaultLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: (m, f) => console.warn(format(m, f)),
  error: (m, f) => console.error(format(m, f)),
};

/** Everything to stderr (set `JOBWIRE_LOG=debug` to get it from the default worker logger). */
export const consoleLogger: Logger = {
  debug: (m, f) => console.debug(format(m, f)),
  info: (m, f) => console.info(format(m, f)),
  warn: (m, f) => console.warn(format(m, f)),
  error: (m, f) => console.error(format(m, f)),
};

/** Drops everything. */
export const silentLogger: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
