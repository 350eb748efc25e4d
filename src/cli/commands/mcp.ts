/**
 * `hoopctl mcp` (issue 11): a Model Context Protocol server on stdio, so a tool-using AI agent gets
 * time-boxed, masked, guarded, reviewed and recorded access instead of standing credentials. It
 * runs under the agent's own identity (HOOP_TOKEN, or HOOP_CLIENT_ID/HOOP_CLIENT_SECRET exchanged
 * in memory) and goes through the same engine as `hoopctl exec` (src/client/sql-exec.ts): same
 * lease, guardrails, masking, reviews and recording.
 *
 * Tools:
 * - list_connections: the connections the identity may use.
 * - query {connection, sql, reason?, review_id?}: runs the SQL (split like psql, stops at the first
 *   failing statement); the masked result is structuredContent ({connection, lease, statements:
 *   [{statement, text, columns, rows, row_count, truncated, command}]}, rows as objects keyed by
 *   column name) plus a short text table. A failure is a tool error (isError) whose
 *   structuredContent.error carries `exit_code`, the same number `hoopctl exec` exits with (4
 *   denied, 5 review, 6 guardrail, 1 SQL error, ...), and the SQLSTATE or review id when there is one.
 *   A held statement answers "waiting for approval r_…" at once, or after waiting up to --wait;
 *   call query again with review_id once a reviewer has approved it.
 *
 * stdout is the protocol; nothing else is written there.
 */
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { authedClient } from '../../client/auth.ts';
import type { GatewayClient } from '../../client/gateway-client.ts';
import { openLease, runStatements, SqlTarget, type ColumnInfo, type ConnectionInfo, type ResultWriter } from '../../client/sql-exec.ts';
import { rowValues, type PgFields, type StatementResult } from '../../client/pg-wire.ts';
import { splitSql, type SplitStatement } from '../../client/sql-split.ts';
import { parseDuration } from '../../gateway/config/duration.ts';
import { ExitCode, HoopError, UsageError, toHoopError } from '../../errors.ts';
import { VERSION } from '../../version.ts';
import { jsonValue, valueKind } from '../exec-output.ts';

interface Opts { wait?: string; maxRows?: string; gateway?: string }

const EXIT_MEANING: Record<number, string> = {
  1: 'the target reported an error', 2: 'bad input', 3: 'not authenticated', 4: 'access denied',
  5: 'review pending, rejected or timed out', 6: 'blocked by a guardrail', 7: 'gateway unreachable',
};

interface StatementOut {
  statement: number; text: string; columns?: Array<{ name: string; type: string }>;
  rows?: Array<Record<string, unknown>>; row_count?: number; truncated?: boolean; command?: string;
  notices?: string[];
}

/** collects each statement's result, keeping at most `maxRows` rows (the rest are counted) */
class Collector implements ResultWriter {
  readonly statements: StatementOut[] = [];
  readonly #max: number;
  #cur: StatementOut | undefined;
  #keys: string[] = [];
  #kinds: number[] = [];
  constructor(maxRows: number) {
    this.#max = maxRows;
  }
  begin(stmt: SplitStatement, i: number): void {
    this.#cur = { statement: i + 1, text: stmt.text };
    this.statements.push(this.#cur);
  }
  columns(cols: ColumnInfo[]): void {
    const cur = this.#cur!;
    cur.columns = cols.map((c) => ({ name: c.name, type: c.type }));
    cur.rows = [];
    cur.row_count = 0;
    // duplicate names (select 1, 1) must not overwrite each other in a row object
    const seen = new Map<string, number>();
    this.#keys = cols.map((c) => {
      const n = (seen.get(c.name) ?? 0) + 1;
      seen.set(c.name, n);
      return n === 1 ? c.name : `${c.name}_${n}`;
    });
    this.#kinds = cols.map((c) => valueKind(c.type_oid));
  }
  row(buf: Buffer, start: number): void {
    const cur = this.#cur!;
    cur.row_count = (cur.row_count ?? 0) + 1;
    if (cur.rows!.length >= this.#max) {
      cur.truncated = true;
      return;
    }
    const v = rowValues(buf, start);
    const o: Record<string, unknown> = {};
    for (let i = 0; i < v.length; i++) o[this.#keys[i]] = jsonValue(this.#kinds[i], v[i]);
    cur.rows!.push(o);
  }
  copyData(): void { /* COPY TO STDOUT output is not returned to agents */ }
  notice(f: PgFields): void {
    if (f.routine === 'hoop_review_pending') return; // reported as the tool's answer
    (this.#cur!.notices ??= []).push(`${f.severity}: ${f.message}`);
  }
  end(_stmt: SplitStatement, _i: number, r: StatementResult): void {
    if (r.command) this.#cur!.command = r.command;
  }
}

/** a short psql-like text table of a result (the structured content has all returned rows) */
export function textTable(s: StatementOut, maxLines = 20): string {
  if (!s.columns) return s.command ?? 'OK';
  const names = s.columns.map((c) => c.name);
  const keys = Object.keys(s.rows?.[0] ?? {});
  const cell = (v: unknown) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v)).replace(/\s+/g, ' ').slice(0, 60);
  const rows = (s.rows ?? []).slice(0, maxLines).map((r) => (keys.length ? keys : names).map((k) => cell(r[k])));
  const widths = names.map((n, i) => Math.max(n.length, ...rows.map((r) => r[i]?.length ?? 0)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join(' | ').trimEnd();
  const out = [line(names), widths.map((w) => '-'.repeat(w)).join('-+-'), ...rows.map(line)];
  const n = s.row_count ?? 0;
  const shown = rows.length;
  out.push(`(${n} ${n === 1 ? 'row' : 'rows'}${shown < n ? `; ${shown} shown here${s.truncated ? `, ${s.rows?.length ?? 0} in the structured result` : ''}` : ''})`);
  return out.join('\n');
}

function toolError(e: HoopError, partial?: { connection: string; statements: StatementOut[] }) {
  const d = e.details ?? {};
  const error = {
    code: e.code, exit_code: e.exit, meaning: EXIT_MEANING[e.exit] ?? 'error', message: e.message,
    ...(e.hint ? { hint: e.hint } : {}),
    ...(d.sqlstate ? { sqlstate: d.sqlstate } : {}),
    ...(d.review_id ? { review_id: d.review_id } : {}),
    ...(d.statement ? { statement: d.statement } : {}),
  };
  return {
    isError: true,
    content: [{ type: 'text' as const, text: `error (exit code ${e.exit}, ${error.meaning}): ${e.message}${e.hint ? `\n${e.hint}` : ''}` }],
    structuredContent: { error, ...(partial ?? {}) },
  };
}

export default async function mcp(opts: Opts): Promise<number> {
  const waitMs = opts.wait === undefined ? 0 : parseDuration(opts.wait);
  if (waitMs === undefined || waitMs < 0) throw new UsageError(`--wait must be a duration such as 0s, 30s or 5m (got ${JSON.stringify(opts.wait)})`);
  const maxRows = Number(opts.maxRows ?? 500);
  if (!Number.isInteger(maxRows) || maxRows < 0) throw new UsageError(`--max-rows must be a whole number (got ${opts.maxRows})`);

  let gwP: Promise<GatewayClient> | undefined;
  // identity problems are reported per call (as tool errors), so the agent sees them
  const gateway = () => (gwP ??= authedClient(opts.gateway).catch((err) => { gwP = undefined; throw err; }));

  const server = new McpServer({ name: 'hoopctl', version: VERSION }, {
    instructions: 'Database access through the hoop gateway: list_connections shows what you may use; query runs SQL on one of them. Results are masked, dangerous statements are blocked (exit_code 6), some statements wait for a human reviewer (exit_code 5, with a review_id: ask for approval, then call query again with the same sql and review_id). Give a reason: it is recorded and shown to reviewers.',
  });

  // clients check structuredContent against the schema on errors too: the error is part of it
  const errorSchema = z.object({
    code: z.string(), exit_code: z.number(), meaning: z.string(), message: z.string(), hint: z.string().optional(),
    sqlstate: z.string().optional(), review_id: z.string().optional(), statement: z.number().optional(),
  });
  server.registerTool('list_connections', {
    title: 'List connections',
    description: 'The connections this identity may use through the hoop gateway: name, type, and whether reviews, guardrails and masking apply.',
    outputSchema: { connections: z.array(z.object({ name: z.string(), type: z.string(), database: z.string().optional(), review: z.boolean().optional(), guardrails: z.boolean().optional(), masking: z.boolean().optional() })).optional(), error: errorSchema.optional() },
    annotations: { readOnlyHint: true, openWorldHint: false },
  }, async () => {
    try {
      const gw = await gateway();
      const { connections } = await gw.request<{ connections: ConnectionInfo[] }>('GET', '/api/connections');
      const list = connections.map((c) => ({ name: c.name, type: c.type, ...(c.database ? { database: c.database } : {}), review: Boolean(c.review), guardrails: Boolean(c.guardrails), masking: Boolean(c.masking) }));
      const text = list.length
        ? list.map((c) => `${c.name} (${c.type}${c.database ? `, database ${c.database}` : ''})${c.masking ? ', masked' : ''}${c.guardrails ? ', guarded' : ''}${c.review ? ', reviews apply' : ''}`).join('\n')
        : 'No connection is available to this identity.';
      return { content: [{ type: 'text' as const, text }], structuredContent: { connections: list } };
    } catch (err) {
      return toolError(toHoopError(err));
    }
  });

  const column = z.object({ name: z.string(), type: z.string() });
  const statement = z.object({
    statement: z.number(), text: z.string(), columns: z.array(column).optional(), rows: z.array(z.record(z.string(), z.unknown())).optional(),
    row_count: z.number().optional(), truncated: z.boolean().optional(), command: z.string().optional(), notices: z.array(z.string()).optional(),
  });
  server.registerTool('query', {
    title: 'Run SQL',
    description: `Runs SQL on a postgres connection through the hoop gateway, statement by statement (stops at the first error). Returns the masked rows (at most ${maxRows} per statement) as structured content and a short text table. Guardrails may block a statement (exit_code 6); a statement that needs approval returns exit_code 5 with a review_id: once a reviewer ran \`hoopctl approve <review_id>\`, call query again with the same sql and review_id.`,
    inputSchema: {
      connection: z.string().min(1).describe('connection name, from list_connections'),
      sql: z.string().min(1).describe('one or more SQL statements'),
      reason: z.string().optional().describe('why this access is needed (recorded; shown to reviewers)'),
      review_id: z.string().regex(/^r_[A-Za-z0-9]+$/).optional().describe('an approved review (r_…) of a statement held earlier: runs it'),
    },
    // on success: connection, lease, statements; on a tool error: error, and the statements that ran
    outputSchema: { connection: z.string().optional(), lease: z.string().optional(), statements: z.array(statement).optional(), error: errorSchema.optional() },
    annotations: { readOnlyHint: false, destructiveHint: true, openWorldHint: false },
  }, async ({ connection, sql, reason, review_id }) => {
    let statements: SplitStatement[];
    try {
      statements = splitSql(sql);
      if (!statements.length) throw new UsageError('the sql holds no statement');
    } catch (err) {
      return toolError(err instanceof HoopError ? err : new UsageError((err as Error).message));
    }
    let target: SqlTarget | undefined;
    const collector = new Collector(maxRows);
    try {
      const gw = await gateway();
      const { conn, lease } = await openLease(gw, connection, { reason, waitMs: waitMs || undefined }, () => {});
      target = new SqlTarget(gw, conn, lease);
      const outcome = await runStatements(target, {
        statements, writer: collector, waitMs: waitMs || undefined, review: review_id, applicationName: 'hoopctl mcp',
      }, () => {});
      const result = { connection, lease: lease.id, statements: collector.statements };
      if (outcome.error) {
        const e = outcome.error;
        if (outcome.reviewId && e.exit === ExitCode.rejected && e.code === 'review_pending') {
          const msg = `waiting for approval ${outcome.reviewId}: ask a reviewer to run \`hoopctl approve ${outcome.reviewId}\`, then call query again with the same sql and review_id "${outcome.reviewId}"`;
          return toolError(new HoopError('review_pending', msg, { exit: ExitCode.rejected, expose: true, details: { review_id: outcome.reviewId, statement: e.details?.statement } }), result);
        }
        return toolError(e, result);
      }
      return { content: [{ type: 'text' as const, text: collector.statements.map((s) => textTable(s)).join('\n\n') }], structuredContent: result };
    } catch (err) {
      return toolError(toHoopError(err), collector.statements.length ? { connection, statements: collector.statements } : undefined);
    } finally {
      await target?.close();
    }
  });

  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
    process.stdin.once('end', () => resolve());
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await server.connect(transport);
  await closed;
  await server.close().catch(() => {});
  return 0;
}
