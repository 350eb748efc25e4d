/**
 * `hoopctl replay <session-id>`: a session's recording as a psql-like transcript (statements,
 * masked result rows, command tags, errors, blocked statements with their rule), as NDJSON, or as
 * an asciicast v2 file for `asciinema play`. An ssh session plays as its terminal showed it
 * (views/terminal-replay.ts), with the engine's events as lines between.
 *
 * Timing: the text transcript pauses between events by their recorded time differences divided
 * by --speed, each pause capped at MAX_PAUSE_MS so an idle hour replays in seconds. Pauses happen
 * by default only when stdout is a terminal; --timing or --speed asks for them anywhere,
 * --no-timing never. NDJSON never pauses; asciicast never pauses either but carries the same
 * (capped, sped-up) timing in its timestamps, for the player to honour.
 *
 * Everything printed comes from the recording, which already holds masked values only. Recorded
 * text is still untrusted (a row may hold terminal escape sequences), so control characters are
 * shown escaped, never sent to the terminal raw.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { GatewayClient } from '../../client/gateway-client.ts';
import { authedClient } from '../../client/auth.ts';
import { UsageError } from '../../errors.ts';
import { out, bold, dim, info } from '../output.ts';
import type { SessionView } from './sessions.ts';

/** the longest pause between two events (after --speed), so a long idle gap does not hang a replay; `replay --help` (main.ts) says 3s */
export const MAX_PAUSE_MS = 3000;

export interface RecordingEntryView { sessionId: string; seq: number; at: number; event: string; hash: string }
export interface RecordingView { session: SessionView; entries: RecordingEntryView[] }
export type ChainCheck = { ok: true; entries: number } | { ok: false; seq: number; problem: string };

/**
 * A session's recording with its hash chain checked here, on the client, rather than taking the
 * gateway's word for it (an ended session's recording must also end with its closing entry).
 */
export async function fetchVerifiedRecording(gw: GatewayClient, id: string): Promise<RecordingView & { check: ChainCheck }> {
  const rec = await gw.request<RecordingView>('GET', `/api/sessions/${encodeURIComponent(id)}/recording`);
  const { verifyChain } = await import('../../gateway/recording/recorder.ts');
  return { ...rec, check: verifyChain(rec.entries, { ended: rec.session.endedAt !== null }) };
}

interface Opts { speed?: string; timing?: boolean; format?: string; gateway?: string; json?: boolean }

type Format = 'text' | 'json' | 'asciicast';

interface Event { type: string; [k: string]: unknown }
interface Result { columns: string[] | null; rows: Array<Array<string | null>>; count: number; truncated: boolean }

/** Shows control characters (ESC, CR, BEL, C1 ...) escaped; keeps newlines unless `oneLine`. */
function safe(s: string, oneLine = false): string {
  return s.replace(oneLine ? /[\u0000-\u001f\u007f-\u009f]/g : /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\t') return '\\t';
    if (c === '\r') return '\\r';
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}

function ts(ms: number): string {
  return `${new Date(ms).toISOString().replace('T', ' ').slice(0, 19)} UTC`;
}

function secs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms * 1000) / 1000} ms` : `${(ms / 1000).toFixed(1)}s`;
}

const NUMBER = /^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/;

/** A result in psql's aligned format. */
function resultTable(r: Result): string[] {
  const lines: string[] = [];
  const rows = r.rows.map((row) => row.map((v) => (v === null ? '' : safe(v, true))));
  const cols = (r.columns ?? rows[0]?.map((_, i) => `?column${i + 1}?`) ?? []).map((c) => safe(c, true));
  if (cols.length) {
    const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((row) => (row[i] ?? '').length)));
    // as psql: headers centred, numbers right-aligned (guessed from the text: the types are not recorded)
    const numeric = cols.map((_, i) => rows.some((row) => row[i]) && rows.every((row) => !row[i] || NUMBER.test(row[i])));
    lines.push(` ${cols.map((c, i) => c.padStart(c.length + Math.floor((widths[i] - c.length) / 2)).padEnd(widths[i])).join(' | ')}`.trimEnd());
    lines.push(widths.map((w) => '-'.repeat(w + 2)).join('+'));
    for (const row of rows) lines.push(` ${widths.map((w, i) => (numeric[i] ? (row[i] ?? '').padStart(w) : (row[i] ?? '').padEnd(w))).join(' | ')}`.trimEnd());
  }
  if (r.truncated || r.rows.length < r.count) lines.push(`... truncated: the recording kept ${r.rows.length} of ${r.count} rows`);
  lines.push(`(${r.count} ${r.count === 1 ? 'row' : 'rows'})`);
  return lines;
}

/** The transcript block of one event, one string per line; `paint` adds colours on a terminal. */
export function renderEvent(ev: Event, atMs: number, sessionStart: number, prompt: string, paint = { bold: (s: string) => s, dim: (s: string) => s }): string[] {
  const lines: string[] = [];
  // a statement is stamped with when it was sent; its event is written when it completed
  const sent = typeof ev.startedAt === 'number' ? ev.startedAt : atMs;
  const at = `[+${((sent - sessionStart) / 1000).toFixed(3)}s]`;
  const head = paint.dim(at);
  const statement = (text: unknown) => {
    const t = safe(String(text ?? '')).split('\n');
    lines.push(`${head} ${paint.bold(`${prompt}=>`)} ${t[0]}`);
    // psql's continuation prompt for the statement's further lines
    for (const l of t.slice(1)) lines.push(`${' '.repeat(at.length)} ${paint.bold(`${prompt}->`)} ${l}`);
  };
  const params = (p: unknown) => {
    if (Array.isArray(p) && p.length) lines.push(paint.dim(`-- parameters: ${p.map((v, i) => `$${i + 1}=${v === null ? 'NULL' : `'${safe(String(v), true)}'`}`).join(', ')}`));
  };
  switch (ev.type) {
    case 'query.completed': {
      statement(ev.text);
      params(ev.params);
      const results = (ev.results as Result[] | undefined) ?? [];
      for (const r of results) lines.push(...resultTable(r));
      if (!results.length && typeof ev.rows === 'number' && ev.rows > 0) lines.push(`(${ev.rows} rows; results not recorded)`);
      if (ev.error) lines.push(`ERROR:  ${safe(String(ev.error))}`);
      const tag = ev.tag ? safe(String(ev.tag), true) : '';
      const took = typeof ev.durationMs === 'number' ? paint.dim(`(${secs(ev.durationMs)})`) : '';
      if (tag || took) lines.push([tag, took].filter(Boolean).join(' '));
      break;
    }
    case 'query.started':
      statement(ev.text);
      params(ev.params);
      lines.push(paint.dim(`-- still running after ${secs(atMs - sent)}`));
      break;
    case 'recording.closed':
      lines.push(paint.dim(`-- session ended${ev.reason ? `: ${safe(String(ev.reason), true)}` : ''}`));
      break;
    case 'review.requested':
      lines.push(`${head} ${paint.dim(`-- held for review ${safe(String(ev.review), true)} (guardrail "${safe(String(ev.rule ?? '?'), true)}"), waiting for ${safe(Array.isArray(ev.groups) ? ev.groups.join(' or ') : 'a reviewer', true)}: ${safe(String(ev.statement ?? ''), true).replace(/\s+/g, ' ').slice(0, 200)}`)}`);
      break;
    case 'review.decided': {
      const by = ev.by ? ` by ${safe(String(ev.by), true)}` : '';
      const why = ev.reason ? `: ${safe(String(ev.reason), true)}` : '';
      const more = Array.isArray(ev.approvals) && ev.approvals.length > 1 ? ` (approvals: ${ev.approvals.join(', ')})` : '';
      lines.push(`${head} ${paint.dim(`-- held for review ${safe(String(ev.review), true)} — ${safe(String(ev.status), true)}${by}${why}${more}`)}`);
      break;
    }
    case 'review.used':
      lines.push(`${head} ${paint.dim(`-- runs under review ${safe(String(ev.review), true)}, approved earlier${ev.by ? ` by ${safe(String(ev.by), true)}` : ''}${ev.reason ? `: ${safe(String(ev.reason), true)}` : ''}`)}`);
      break;
    case 'review.detached':
      lines.push(`${head} ${paint.dim(`-- the client left; review ${safe(String(ev.review), true)} stays open`)}`);
      break;
    case 'query.blocked':
      statement(ev.text);
      if (typeof ev.routine === 'string' && ev.routine.startsWith('hoop_review')) lines.push('NOT RUN (review)');
      else lines.push(`BLOCKED by guardrail rule "${safe(String(ev.rule ?? '?'), true)}"`);
      // what the client was told
      if (ev.message) lines.push(`ERROR:  ${safe(String(ev.message))}`);
      break;
    default: {
      const { type, ...rest } = ev;
      lines.push(`${head} ${safe(String(type), true)} ${safe(JSON.stringify(rest), true)}`);
    }
  }
  return lines;
}

export function sessionHeader(s: SessionView, events: number): string[] {
  const duration = s.endedAt ? `duration ${secs(s.endedAt - s.startedAt)}` : 'still open';
  return [
    `Session ${s.id} · connection ${safe(s.connection, true)} (${s.type}) · user ${safe(s.user, true)}`,
    `Started ${ts(s.startedAt)} · ${duration}${s.closeReason ? ` · closed: ${safe(s.closeReason, true)}` : ''} · ${events} recorded ${events === 1 ? 'event' : 'events'}`,
  ];
}

/** What to say when there is nothing to replay. */
function emptyNote(s: SessionView): string {
  if (s.type === 'postgres') return 'No statements were recorded in this session.';
  return `A ${s.type} session records no events: the gateway relays its bytes without reading them. ` +
    `All there is: ${s.bytesIn} bytes in, ${s.bytesOut} bytes out${s.endedAt ? ` over ${secs(s.endedAt - s.startedAt)}` : ''}.`;
}

function parseSpeed(v: string | undefined): number {
  if (v === undefined) return 1;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`invalid --speed ${JSON.stringify(v)}: a number above 0, e.g. 2 or 0.5`);
  return n;
}

/** The pause before each entry: its time since the previous one (the session start for the first), sped up and capped. */
function pauses(startedAt: number, entries: RecordingEntryView[], speed: number): number[] {
  let prev = startedAt;
  return entries.map((e) => {
    const p = Math.min(MAX_PAUSE_MS, Math.max(0, e.at - prev) / speed);
    prev = e.at;
    return p;
  });
}

function parseEvent(e: RecordingEntryView): Event {
  try {
    const v = JSON.parse(e.event) as unknown;
    if (v && typeof v === 'object' && typeof (v as Event).type === 'string') return v as Event;
  } catch { /* shown below as unreadable */ }
  return { type: 'unreadable', seq: e.seq };
}

export default async function replay(id: string, opts: Opts): Promise<number> {
  if (opts.json && opts.format && opts.format !== 'json') throw new UsageError(`--json and --format ${opts.format} contradict each other`);
  const format: Format = opts.json ? 'json' : (opts.format as Format | undefined) ?? 'text';
  if (format === 'json') out.json = true;
  const speed = parseSpeed(opts.speed);
  const gw = await authedClient(opts.gateway);
  const { session, entries, check } = await fetchVerifiedRecording(gw, id);

  // replaying is not verifying, but nobody should watch an altered recording unawares
  if (!check.ok) info(`warning: the recording of ${session.id} was altered (${check.problem}); run \`hoopctl sessions verify ${session.id}\``);

  // `hoopctl replay … | head` closes the pipe mid-replay: stop quietly
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  const events = entries.map(parseEvent);
  const prompt = safe(session.connection, true);

  if (format === 'json') {
    if (!entries.length) info(emptyNote(session));
    for (let i = 0; i < entries.length; i++) {
      const { seq, at } = entries[i];
      process.stdout.write(`${JSON.stringify(Object.assign({ seq, at }, events[i], { seq, at }))}\n`);
    }
    return 0;
  }

  const delays = opts.timing === false ? entries.map(() => 0) : pauses(session.startedAt, entries, speed);
  if (session.type === 'ssh') return replayTerminal(session, entries, events, delays, format, opts);

  if (format === 'asciicast') {
    const blocks = [sessionHeader(session, entries.length), ...events.map((ev, i) => ['', ...renderEvent(ev, entries[i].at, session.startedAt, prompt)])];
    if (!entries.length) blocks.push(['', emptyNote(session)]);
    const width = Math.min(240, Math.max(80, ...blocks.flat().map((l) => l.length)));
    process.stdout.write(`${JSON.stringify({ version: 2, width, height: 40, timestamp: Math.floor(session.startedAt / 1000), title: `hoopctl replay ${session.id}`, env: { TERM: 'xterm-256color' } })}\n`);
    let t = 0;
    blocks.forEach((b, i) => {
      if (i > 0 && i <= delays.length) t += delays[i - 1];
      process.stdout.write(`${JSON.stringify([Math.round(t * 1000) / 1e6, 'o', `${b.join('\r\n')}\r\n`])}\n`);
    });
    return 0;
  }

  const paced = opts.timing !== false && (opts.timing === true || opts.speed !== undefined || Boolean(process.stdout.isTTY));
  const paint = { bold, dim };
  for (const l of sessionHeader(session, entries.length)) process.stdout.write(`${l}\n`);
  if (!entries.length) return process.stdout.write(`\n${emptyNote(session)}\n`), 0;
  for (let i = 0; i < entries.length; i++) {
    if (paced && delays[i] > 0) await sleep(delays[i]);
    process.stdout.write(`\n${renderEvent(events[i], entries[i].at, session.startedAt, prompt, paint).join('\n')}\n`);
  }
  return 0;
}

/**
 * An ssh session: terminal output played as output (sanitized, views/terminal-replay.ts), the
 * engine's events as transcript lines; asciicast carries output, input and resizes as such.
 */
async function replayTerminal(session: SessionView, entries: RecordingEntryView[], events: Event[], delays: number[], format: Format, opts: Opts): Promise<number> {
  const { TerminalPlayer } = await import('../views/terminal-replay.ts');
  const player = new TerminalPlayer();
  const { width, height } = player.size(events);
  const write = (s: string) => process.stdout.write(s);
  if (format === 'asciicast') {
    write(`${JSON.stringify({ version: 2, width, height, timestamp: Math.floor(session.startedAt / 1000), title: `hoopctl replay ${session.id} (${session.connection}, ${session.user})`, env: { TERM: 'xterm-256color' } })}\n`);
    let t = 0;
    const ev = (kind: string, data: string) => write(`${JSON.stringify([Math.round(t * 1000) / 1e6, kind, data])}\n`);
    events.forEach((e, i) => {
      t += delays[i];
      const r = player.render(e);
      if (r.out) ev('o', r.out);
      if (r.input) ev('i', r.input);
      if (r.resize) ev('r', r.resize);
      if (r.lines) ev('o', `\r\n${r.lines.join('\r\n')}\r\n`);
    });
    return 0;
  }
  const paced = opts.timing !== false && (opts.timing === true || opts.speed !== undefined || Boolean(process.stdout.isTTY));
  for (const l of sessionHeader(session, entries.length)) write(`${l}\n`);
  write('\n');
  for (let i = 0; i < events.length; i++) {
    if (paced && delays[i] > 0) await sleep(delays[i]);
    const r = player.render(events[i]);
    if (r.out) write(r.out);
    if (r.lines) write(`\r\n${r.lines.map((l) => dim(l)).join('\r\n')}\r\n`);
  }
  return 0;
}
