/**
 * One error hierarchy for the CLI and the gateway (after openid-client's ClientError and
 * oidc-provider's helpers/errors.js): every error carries a stable `code`, an HTTP `status`
 * for the gateway API, an exit code for the CLI, and `expose` — whether its message may be
 * shown to a remote caller. Unexposed errors reach API clients as a generic server error.
 */

/** CLI exit codes (PRODUCT.md). Printed in `hoopctl --help`. */
export const ExitCode = {
  ok: 0,
  /** the target reported an error (SQL error, non-zero remote exit) */
  target: 1,
  /** usage or config error */
  usage: 2,
  /** not logged in / token expired */
  auth: 3,
  /** access denied by policy */
  denied: 4,
  /** review rejected or timed out */
  rejected: 5,
  /** blocked by a guardrail */
  blocked: 6,
  /** gateway unreachable */
  unreachable: 7,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export const exitCodeTable = `Exit codes:
  0 ok                     1 the target reported an error
  2 usage or config error  3 not logged in / token expired
  4 access denied          5 review rejected or timed out
  6 blocked by guardrail   7 gateway unreachable`;

export interface HoopErrorOptions {
  cause?: unknown;
  status?: number;
  exit?: ExitCode;
  expose?: boolean;
  /** what the user should do next; appended on the CLI */
  hint?: string;
  details?: Record<string, unknown>;
}

export class HoopError extends Error {
  readonly code: string;
  readonly status: number;
  readonly exit: ExitCode;
  readonly expose: boolean;
  readonly hint?: string;
  readonly details?: Record<string, unknown>;

  constructor(code: string, message: string, opts: HoopErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = opts.status ?? 500;
    this.exit = opts.exit ?? ExitCode.target;
    this.expose = opts.expose ?? this.status < 500;
    this.hint = opts.hint;
    this.details = opts.details;
  }

  toJSON(): Record<string, unknown> {
    return this.expose
      ? { error: this.code, message: this.message, ...(this.hint ? { hint: this.hint } : {}), ...(this.details ?? {}) }
      : { error: 'server_error', message: 'internal gateway error' };
  }
}

export class UsageError extends HoopError {
  constructor(message: string, opts: HoopErrorOptions = {}) {
    super('usage', message, { status: 400, exit: ExitCode.usage, ...opts });
  }
}

export class ConfigError extends HoopError {
  readonly file: string;
  readonly path: string;
  constructor(file: string, path: string, problem: string) {
    super('config_invalid', `${file}: ${path ? `${path}: ` : ''}${problem}`, { status: 500, exit: ExitCode.usage, expose: true });
    this.file = file;
    this.path = path;
  }
}

export class AuthError extends HoopError {
  constructor(code: string, message: string, opts: HoopErrorOptions = {}) {
    super(code, message, { status: 401, exit: ExitCode.auth, hint: 'run `hoopctl login`', ...opts });
  }
}

export class AccessDenied extends HoopError {
  constructor(message: string, opts: HoopErrorOptions & { code?: string } = {}) {
    super(opts.code ?? 'access_denied', message, { status: 403, exit: ExitCode.denied, ...opts });
  }
}

export class NotFound extends HoopError {
  constructor(message: string, opts: HoopErrorOptions = {}) {
    super('not_found', message, { status: 404, exit: ExitCode.denied, ...opts });
  }
}

export class Unreachable extends HoopError {
  constructor(message: string, opts: HoopErrorOptions = {}) {
    super('gateway_unreachable', message, { status: 502, exit: ExitCode.unreachable, expose: true, ...opts });
  }
}

/** A review did not let the request through (yet): pending without --wait, rejected, timed out (exit 5). */
export class ReviewNotApproved extends HoopError {
  readonly reviewId: string | undefined;
  constructor(code: 'review_pending' | 'review_rejected' | 'review_expired' | 'review_failed', message: string, opts: HoopErrorOptions & { reviewId?: string } = {}) {
    super(code, message, { status: 403, exit: ExitCode.rejected, expose: true, ...opts, details: { ...(opts.reviewId ? { review_id: opts.reviewId } : {}), ...opts.details } });
    this.reviewId = opts.reviewId;
  }
}

/** Normalizes anything thrown into a HoopError (the one normalizer at each boundary). */
export function toHoopError(err: unknown): HoopError {
  if (err instanceof HoopError) return err;
  const e = err as { code?: string; message?: string };
  if (e && (e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'EHOSTUNREACH' || e.code === 'ECONNRESET'))
    return new Unreachable(`gateway unreachable: ${e.message}`, { cause: err, hint: 'check HOOP_GATEWAY / --gateway and that the gateway runs' });
  return new HoopError('internal', e?.message ?? String(err), { cause: err, expose: false });
}
