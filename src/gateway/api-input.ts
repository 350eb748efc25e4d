/**
 * What the JSON API accepts: one zod schema per request body and per query string, checked before
 * a handler sees anything. Why: handlers used to read `body.duration` as they found it, so
 * `{"duration": {"toString": 1}}` or an object as `reason` threw inside String() (a 500), and a
 * query parameter that did not parse (`since=banana`) was silently ignored. Now every such input
 * is a 400 `invalid_request` naming the field (`details.field`). Unknown body keys and query
 * parameters are refused too: a misspelt `sinse=1h` would otherwise widen the answer unnoticed.
 */
import { z } from 'zod';
import { UsageError } from '../errors.ts';
import { parseDuration } from './config/duration.ts';
import { MAX_REASON_BYTES } from './session/reviews.ts';
import { formatPath } from './config/load.ts';

const reason = z.string().refine((s) => Buffer.byteLength(s) <= MAX_REASON_BYTES, `must be at most ${MAX_REASON_BYTES} bytes`).nullable().optional();

/** a duration as the CLI sends it (`30m`, `2h`; a bare number is seconds) */
const durationText = z.union([z.string().max(40), z.number().positive().finite()])
  .refine((v) => { const ms = typeof v === 'number' ? v * 1000 : parseDuration(v); return ms !== undefined && ms > 0; }, 'must be a duration like 30m or 2h')
  .transform((v) => (typeof v === 'number' ? `${v}s` : v));

/** a `?flag=1` query parameter */
const flag = z.enum(['1', 'true', '0', 'false', '']).optional().transform((v) => v === '1' || v === 'true');

/** `since=24h`: a window before now, in ms */
const since = z.string().max(40).optional().transform((v, ctx) => {
  if (v === undefined || v === '') return undefined;
  const ms = parseDuration(v);
  if (ms === undefined || !(ms > 0)) {
    ctx.addIssue({ code: 'custom', message: 'must be a duration like 24h or 7d' });
    return z.NEVER;
  }
  return ms;
});

const name = z.string().min(1).max(200);

export const bodies = {
  createLease: z.strictObject({
    connection: name,
    duration: durationText.nullable().optional(),
    reason,
    new: z.boolean().optional(),
  }),
  decide: z.strictObject({ reason }),
  /** routes that take no body: an empty one, or `{}` */
  none: z.strictObject({}),
};

export const queries = {
  none: z.strictObject({}),
  listLeases: z.strictObject({ all: flag }),
  waitLease: z.strictObject({
    timeout_ms: z.string().regex(/^\d{1,6}$/, 'must be a whole number of milliseconds').optional()
      .transform((v) => (v === undefined ? 25_000 : Number(v))).refine((n) => n <= 60_000, 'must be at most 60000'),
  }),
  listSessions: z.strictObject({ since, user: name.optional(), conn: name.optional() }),
  listReviews: z.strictObject({ mine: flag, all: flag, since }),
  audit: z.strictObject({ since }),
};

function describe(issue: z.core.$ZodIssue, input: unknown): { field: string; problem: string } {
  if (issue.code === 'unrecognized_keys') return { field: issue.keys[0], problem: 'is not a known field' };
  const field = formatPath(issue.path) || '(root)';
  let value: unknown = input;
  for (const k of issue.path) value = value && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[k] : undefined;
  const got = value === undefined ? 'is required' : `got ${JSON.stringify(value)?.slice(0, 80) ?? typeof value}`;
  if (issue.code === 'invalid_type') return { field, problem: value === undefined ? 'is required' : `must be a ${issue.expected} (${got})` };
  if (issue.code === 'invalid_value') return { field, problem: `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')} (${got})` };
  return { field, problem: `${issue.message} (${got})` };
}

/** Parses `input` with `schema`, or throws a 400 naming the first bad field. */
export function check<S extends z.ZodType>(schema: S, input: unknown, where: 'body' | 'query'): z.output<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const { field, problem } = describe(r.error.issues[0], input);
  const what = where === 'body' ? `request body field "${field}"` : `query parameter "${field}"`;
  throw new UsageError(`${what} ${problem}`, { details: { field } });
}

/** The query string as an object; a parameter given twice is refused (which one would count?). */
export function queryObject(url: URL): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of url.searchParams) {
    if (Object.hasOwn(out, k)) throw new UsageError(`query parameter "${k}" is given more than once`, { details: { field: k } });
    out[k] = v;
  }
  return out;
}
