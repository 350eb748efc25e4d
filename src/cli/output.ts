/**
 * Output conventions: with --json stdout carries only JSON; diagnostics and progress go to
 * stderr; colours only on a TTY without NO_COLOR.
 */
import { HoopError, toHoopError } from '../errors.ts';

/**
 * Same test as ink's own (is-in-ci): under CI ink renders only the final frame, so a live view
 * would hide the device code until the login is over. In CI we print plain lines instead.
 */
export function inCi(env: NodeJS.ProcessEnv = process.env): boolean {
  const set = (k: string) => k in env && env[k] !== '0' && env[k] !== 'false';
  return set('CI') || set('CONTINUOUS_INTEGRATION');
}

export const out = {
  json: false,
  /** a long-running command: a closed stdout/stderr does not end it (see main.ts) */
  persistent: false,
  /** live (ink) views only on an interactive terminal outside CI */
  tty: Boolean(process.stdout.isTTY) && !inCi(),
};

export function color(code: number, s: string): string {
  return process.stdout.isTTY && !process.env.NO_COLOR && !out.json ? `\x1b[${code}m${s}\x1b[0m` : s;
}
export const bold = (s: string) => color(1, s);
export const dim = (s: string) => color(2, s);

export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

export function line(s = ''): void {
  process.stdout.write(`${s}\n`);
}

export function info(s: string): void {
  process.stderr.write(`${s}\n`);
}

export function table(rows: Array<Record<string, unknown>>, columns: string[]): void {
  if (!rows.length) return;
  const cell = (v: unknown) => (v === null || v === undefined ? '-' : Array.isArray(v) ? v.join(',') : String(v));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  line(columns.map((c, i) => bold(c.toUpperCase().padEnd(widths[i]))).join('  ').trimEnd());
  for (const r of rows) line(columns.map((c, i) => cell(r[c]).padEnd(widths[i])).join('  ').trimEnd());
}

/** Prints an error the user can act on and returns the exit code. */
export function reportError(err: unknown): number {
  const e = toHoopError(err);
  if (out.json) {
    printJson({ error: e.code, message: e.expose || e instanceof HoopError ? e.message : String(err), ...(e.hint ? { hint: e.hint } : {}), ...(e.details ?? {}) });
  } else {
    process.stderr.write(`hoopctl: ${e.message}\n`);
    if (e.hint) process.stderr.write(`  ${e.hint}\n`);
    if (process.env.HOOP_DEBUG && e.cause) process.stderr.write(`${String((e.cause as Error).stack ?? e.cause)}\n`);
  }
  return e.exit;
}
