/** Structured JSON logs (pino) to stderr; `HOOP_LOG_LEVEL` sets the level (default info). */
import { pino } from 'pino';

export type Logger = pino.Logger;

export function createLogger(bindings: Record<string, unknown> = {}, level = process.env.HOOP_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { ...bindings }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: false }));
}
