/**
 * The PostgreSQL engine: speaks the v3 protocol to the client and to the target and applies
 * policy in the data path (see README.md beside this file for the handshake diagram).
 *
 *   client ──► clientFramer ──► onClientMessage ──(judge: allow/deny/review)──► targetOut ──► target
 *   client ◄── clientOut ◄── onTargetMessage (mask, record) ◄── targetFramer ◄──────────────── target
 *
 * Every client message that the server answers is queued as an `Op`, so each backend message is
 * attributed to the request it answers (which statement's rows, which Describe, where an error
 * ends an extended-protocol batch). Answers the gateway makes itself (a blocked statement's
 * ErrorResponse, ReadyForQuery for a swallowed Sync) are queued as synthetic ops and go out in
 * their turn, so the client always sees responses in request order.
 *
 * Hot path: each read chunk is framed without copying, messages that pass unchanged are written
 * as ranges of the chunk they came in (one write per chunk), statement texts are judged once
 * (the guardrail session caches by text) and RowDescriptions are parsed only when masking or the
 * recording needs them. Promises appear only off the hot path: login, catalog lookups, reviews.
 */
import type { Duplex } from 'node:stream';
import type { TunnelLink } from '../../../shared/ws-duplex.ts';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Parser } from 'pg-protocol/dist/parser.js';
import type { BackendMessage, CopyResponse, Field, RowDescriptionMessage } from 'pg-protocol/dist/messages.js';
import { clientLink, type Engine, type EngineContext, type EngineFactory, type ReviewOutcome } from '../engine.ts';
import { formatDuration } from '../../config/duration.ts';
import { MessageFramer, ProtocolError } from './framer.ts';
import {
  B, F, authenticationOk, backendKeyData, cancelRequest, describeStatement, errorField, errorResponse, flushMessage,
  negotiateProtocolVersion, noticeResponse, parameterStatus, parseBind, parseErrorFields, parseExecute, parseParse, parseQuery,
  parseStartupPacket, parseTargetRef, queryMessage, readyForQuery, runNamed, sslNo, syncMessage, terminateMessage,
} from './messages.ts';
import { Outbox } from './outbox.ts';
import { loginToTarget, openTarget, TargetLoginError, type TargetChannel, type TargetSession } from './target-login.ts';
import { lookupBackend, registerBackend } from './cancel-registry.ts';
import { startupParams } from './startup-params.ts';
import { loadPolicy, type CopyFormat, type Derivation, type Judge, type Policy, type Screen, type Verdict } from './policy.ts';
import { Catalog, mayChangeCatalog } from './catalog.ts';
import { buildShape, copyColumnsMasked, maskCopyData, maskDataRow, maskErrorMessage, maskNotification, maskParameterStatusMessage, rowValues, type ResultShape } from './masking-stage.ts';

/** largest message accepted from a client (CopyData chunks, Bind with big parameters) */
export const MAX_CLIENT_MESSAGE = 64 * 1024 * 1024;
/** what a client may send behind a statement held for review before it is paused (backpressure) */
const HELD_BUFFER = 1024 * 1024;
/** the server's own allocation limit for one value is 1 GiB */
const MAX_TARGET_MESSAGE = 1024 * 1024 * 1024;


interface StmtInfo {
  text: string;
  /** guardrails.max_rows applies to its Executes */
  guard?: boolean;
  /** guardrails.review matched at Parse: each Execute of it waits for its own approval */
  review?: Exclude<Verdict, { action: 'allow' }>;
  /** RowDescription of the statement (Describe 'S'); null until known, [] for NoData */
  fields: Field[] | null;
  shape: ResultShape | null;
  /** the RowDescription bytes `fields` came from (a view of the chunk read) */
  tBytes: Buffer | null;
}

interface PortalInfo {
  stmt: StmtInfo;
  formats: number[];
  params: Array<string | null>;
  fields: Field[] | null;
  shape: ResultShape | null;
  tBytes: Buffer | null;
}

/** Per-statement result state: the rows of one SELECT inside a simple query, or of one Execute. */
interface Result {
  /** raw RowDescription (parsed lazily) */
  tBuf: Buffer | null;
  tStart: number;
  tEnd: number;
  fields: Field[] | null;
  shape: ResultShape | null;
  formats: number[] | undefined;
  rows: number;
  rec: Array<Array<string | null>> | null;
  truncated: boolean;
  // COPY TO STDOUT
  copyMasked: boolean[] | null;
  copyFormat: CopyFormat;
  copyRefused: boolean;
  /** the next CopyData row is COPY's header (column names): no column rules, detectors still apply */
  copyHeader: boolean;
}

type OpKind = 'simple' | 'function' | 'parse' | 'bind' | 'describe' | 'execute' | 'close' | 'sync' | 'synthetic' | 'barrier';

/** One result recorded inside a statement's `query.completed` event. */
interface RecordedResult {
  columns: string[] | null;
  rows: Array<Array<string | null>>;
  count: number;
  truncated: boolean;
}

interface Op {
  kind: OpKind;
  text: string;
  /** performance.now() when sent to the target (statements only) */
  t0: number;
  /** performance.now() when it completed */
  t1: number;
  /** Bind parameters of an Execute (raw: masked when recorded) */
  params: Array<string | null> | null;
  /** results recorded so far (a simple query may hold several statements) */
  results: RecordedResult[] | null;
  /** a `query.started` was recorded because it ran long */
  announced: boolean;
  rows: number;
  tag: string;
  error: string | null;
  res: Result | null;
  stmt: StmtInfo | null;
  portal: PortalInfo | null;
  describe: 'S' | 'P' | null;
  injected: boolean;
  bytes: Buffer | null;
  ready: boolean;
  /** max_rows: the client's statement runs inside the gateway's transaction or savepoint */
  guarded: boolean;
  /** an injected statement whose ErrorResponse and ReadyForQuery are the client's */
  relay: boolean;
  /** drop what the target still sends for it (an over-limit statement, up to its ReadyForQuery) */
  swallow: boolean;
  /** barrier: runs when every earlier request got its answer (false: the batch failed before it) */
  run: ((ok: boolean) => void) | null;
  skipped: boolean;
  /** its statement touches a masked column (lineage): what answers it is masked strongly */
  touched: boolean;
}

function newOp(kind: OpKind): Op {
  return { kind, text: '', t0: 0, t1: 0, params: null, results: null, announced: false, rows: 0, tag: '', error: null, res: null, stmt: null, portal: null, describe: null, injected: false, bytes: null, ready: false, touched: false, guarded: false, relay: false, swallow: false, run: null, skipped: false };
}

const TEXT_COPY: CopyFormat = { csv: false };
/** a statement running this long is recorded as `query.started` before it completes */
const ANNOUNCE_MS = 500;

function newResult(): Result {
  return { tBuf: null, tStart: 0, tEnd: 0, fields: null, shape: null, formats: undefined, rows: 0, rec: null, truncated: false, copyMasked: null, copyFormat: TEXT_COPY, copyRefused: false, copyHeader: false };
}

/** COPY's output options from the statement text (FORMAT csv / CSV, DELIMITER, NULL), for a connection without the SQL parser. */
function copyFormat(text: string): CopyFormat {
  const tail = text.replace(/^[\s\S]*\bto\s+stdout\b/i, '');
  const csv = /\bcsv\b/i.test(tail);
  const delim = /\bdelimiter\s+(?:as\s+)?E?'((?:[^']|'')+)'/i.exec(tail)?.[1];
  const nul = /\bnull\s+(?:as\s+)?E?'((?:[^']|'')*)'/i.exec(tail)?.[1];
  return { csv, delimiter: delim?.replace(/''/g, "'"), null: nul?.replace(/''/g, "'") };
}

type Phase = 'startup' | 'login' | 'ready' | 'closed';

const TX_IDLE = 0x49; // I
const TX_BLOCK = 0x54; // T
const TX_FAILED = 0x45; // E
/** the savepoint and the statement/portal name the gateway uses for max_rows */
const GUARD_NAME = 'hoop_max_rows_guard';

/**
 * guardrails.max_rows: a DELETE/UPDATE running inside a transaction the gateway opened
 * ('tx', the client was in autocommit) or a savepoint it set ('savepoint', inside the
 * client's transaction), until its command tag's count is known.
 */
interface Guard {
  mode: 'tx' | 'savepoint';
  protocol: 'simple' | 'extended';
  /** the error sent instead of an over-limit command tag */
  over: string | null;
  /** extended: the statement failed; the server skips to Sync: end the guard at ReadyForQuery */
  failed: boolean;
}
class PostgresEngine implements Engine {
  private readonly ctx: EngineContext;
  private client: TunnelLink | null = null;
  private target: Socket | null = null;
  private phase: Phase = 'startup';
  private readonly clientFramer: MessageFramer;
  private targetFramer: MessageFramer | null = null;
  private readonly clientOut = new Outbox();
  private readonly targetOut = new Outbox();
  private readonly parser = new Parser();
  private parsed: BackendMessage | null = null;
  private readonly onParsed = (m: BackendMessage) => { this.parsed = m; };

  private policy: Policy | null = null;
  private judge: Judge | null = null;
  private catalog: Catalog | null = null;
  /** detectors' pre-check over the bytes of result values and COPY rows */
  private screen: Screen | null = null;
  private readonly derivations = new Map<string, Derivation | null>();
  private derivationsGen = 0;
  /** simple-query text → its last RowDescription and mask plan */
  private readonly shapeCache = new Map<string, { t: Buffer; fields: Field[]; shape: ResultShape }>();
  /** see sameColumns() */
  private plainT: { t: Buffer; fields: Field[]; shape: ResultShape } | null = null;

  private readonly ops: Op[] = [];
  /** completed statements whose events are built after the next write to the client */
  private readonly completed: Op[] = [];
  private readonly stmts = new Map<string, StmtInfo>();
  private readonly portals = new Map<string, PortalInfo>();
  private txStatus = TX_IDLE;
  private guard: Guard | null = null;
  /** the client framer is paused until the guarded statement's count is known */
  private guardHeld = false;
  private readonly maxRows: { delete?: number; update?: number } | undefined;
  /**
   * A statement that touched a masked column is in flight or in the open transaction: error and
   * notice texts, our own notifications and ParameterStatus values are masked strongly (issue 10).
   * Transaction-wide: notifications and deferred-constraint errors arrive at COMMIT.
   */
  private tainted = false;
  /** the target backend's pid: a notification from it was sent by this session's statements */
  private targetPid = 0;
  /** the login the gateway uses on the target (the credential floor protects it) */
  private targetUser = '';
  /** after a blocked extended-protocol message: drop client messages until Sync */
  private discarding = false;
  /** an extended-protocol message went to the target since the last Sync */
  private batchOpen = false;
  private sawFatal = false;
  private recordResults: boolean;
  private readonly maxRowsPerStatement: number;
  private sessionRowsLeft: number;
  private readonly maskCounter = { masked: 0 };
  private lastT: Buffer | null = null;
  private announceTimer: NodeJS.Timeout | null = null;
  /** a statement that may change tables went to the target: reload the catalog once committed */
  private catalogChanged = false;
  private lastTNames: string[] = [];

  private clientHeld = { login: false, review: false, drain: false };
  /** the statement held for review: aborting it withdraws the request */
  private held: AbortController | null = null;
  /** startup parameters `hoop.detach_reviews` and `hoop.review` (see ReviewRequest) */
  private reviewDetach = false;
  private reviewResume: string | null = null;
  private targetHeld = { lookup: false, drain: false };
  private releaseKey: (() => void) | null = null;
  private done: (() => void) | null = null;
  private closed = false;

  constructor(ctx: EngineContext) {
    this.ctx = ctx;
    this.clientFramer = new MessageFramer((c, b, s, e) => this.onClientMessage(c, b, s, e), { untagged: true, maxMessageSize: MAX_CLIENT_MESSAGE });
    const rec = ctx.connection.recording;
    this.recordResults = rec.results;
    this.maxRowsPerStatement = rec.max_rows_per_statement;
    this.sessionRowsLeft = rec.max_rows_per_session;
    const m = ctx.connection.guardrails?.max_rows;
    this.maxRows = m && (m.delete !== undefined || m.update !== undefined) ? m : undefined;
  }

  handle(client: Duplex): Promise<void> {
    this.preDial();
    return new Promise<void>((resolve) => {
      this.done = resolve;
      this.client = clientLink(client, {
        data: (chunk) => this.onClientData(chunk),
        end: () => this.close(),
        close: () => this.close(),
        // the client took what we wrote: the target may send again
        drain: () => { this.targetHeld.drain = false; this.resumeTarget(); },
      });
      this.client.start();
    });
  }

  terminate(reason: string): void {
    if (this.closed || !this.client) return;
    this.cancelInFlight(reason);
    this.clientOut.push(errorResponse('FATAL', '57P01', reason || 'terminating connection'));
    this.flushClient();
    this.close();
  }

  // ---------------------------------------------------------------- client → target

  private onClientData(chunk: Buffer): void {
    if (this.closed) return;
    if (this.phase === 'ready') this.ctx.stats.bytesIn += chunk.length;
    try {
      this.clientFramer.push(chunk);
    } catch (err) {
      this.clientProtocolError(err);
      return;
    }
    if (this.clientHeld.review && this.clientFramer.pendingBytes > HELD_BUFFER) this.client?.pause();
    this.flushTarget();
    this.flushClient();
  }

  private clientProtocolError(err: unknown): void {
    const msg = err instanceof ProtocolError || err instanceof RangeError ? err.message : String((err as Error)?.message ?? err);
    if (!(err instanceof ProtocolError) && !(err instanceof RangeError)) this.ctx.log.warn({ err }, 'postgres engine error on client message');
    this.clientOut.clear();
    this.clientOut.push(errorResponse('FATAL', '08P01', `invalid frontend message: ${msg}`));
    this.flushClient();
    this.close();
  }

  private onClientMessage(code: number, buf: Buffer, start: number, end: number): void {
    if (this.phase !== 'ready') { this.onStartupPacket(code, buf, start, end); return; }
    if (this.discarding) {
      if (code === F.Sync) { this.discarding = false; this.answerSync(buf, start, end); }
      else if (code === F.Terminate) this.close();
      return;
    }
    switch (code) {
      case F.Query: this.onQuery(buf, start, end); return;
      case F.Parse: this.onParse(buf, start, end); return;
      case F.Bind: this.onBind(buf, start, end); return;
      case F.Describe: {
        const ref = parseTargetRef(buf, start, end);
        const op = newOp('describe');
        op.describe = ref.kind;
        if (ref.kind === 'S') op.stmt = this.stmt(ref.name);
        else op.portal = this.portals.get(ref.name) ?? null;
        this.ops.push(op);
        this.forwardExtended(buf, start, end);
        return;
      }
      case F.Execute: this.onExecute(buf, start, end); return;
      case F.Close: {
        const ref = parseTargetRef(buf, start, end);
        if (ref.kind === 'S') this.stmts.delete(ref.name); else this.portals.delete(ref.name);
        this.ops.push(newOp('close'));
        this.forwardExtended(buf, start, end);
        return;
      }
      case F.Sync: this.answerSync(buf, start, end); return;
      case F.Flush: this.forward(buf, start, end); return;
      case F.FunctionCall:
        if (this.judge) {
          // a fast-path function call carries no SQL to judge: deny rather than wave it through
          this.block('simple', '', { rule: 'function_call', message: 'hoopctl: fast-path function calls are not allowed on a connection with guardrails' });
          return;
        }
        this.ops.push(Object.assign(newOp('function'), { text: '<function call>', t0: performance.now() }));
        this.armAnnounce();
        this.forward(buf, start, end);
        return;
      case F.Terminate:
        // close() sends Terminate to the target after what is queued
        this.flushTarget();
        this.close();
        return;
      default:
        // CopyData/CopyDone/CopyFail of COPY FROM STDIN, and anything else: the server decides
        this.forward(buf, start, end);
    }
  }

  private forward(buf: Buffer, start: number, end: number): void {
    this.targetOut.range(buf, start, end);
  }

  private forwardExtended(buf: Buffer, start: number, end: number): void {
    this.batchOpen = true;
    this.targetOut.range(buf, start, end);
  }

  private stmt(name: string): StmtInfo {
    let s = this.stmts.get(name);
    if (!s) { s = { text: '', fields: null, shape: null, tBytes: null }; this.stmts.set(name, s); }
    return s;
  }

  private answerSync(buf: Buffer, start: number, end: number): void {
    if (this.batchOpen) {
      this.batchOpen = false;
      this.ops.push(newOp('sync'));
      this.forward(buf, start, end);
    } else {
      // nothing of this batch reached the server (it was blocked): answer the Sync ourselves
      this.pushSynthetic(null, true);
    }
  }

  /**
   * What no configuration can allow, judged before the guardrails: a statement changing the
   * gateway's own login (credential floor, issue 10 §2), and one moving a value derived from a
   * masked column into a side channel (pg_notify, set_config, ...: issue 10 §1).
   */
  private floorVerdict(text: string): { rule: string; message: string } | null {
    const policy = this.policy!;
    const floor = policy.floor(text, this.targetUser);
    if (floor !== null) return { rule: 'credential_floor', message: `hoopctl: blocked: ${floor}` };
    const side = policy.lineage(text, this.catalog?.relations)?.sideChannel;
    if (side) return { rule: 'masking_side_channel', message: `hoopctl: blocked: ${side}() would carry a value derived from a masked column outside the masked result` };
    return null;
  }

  /** Marks `op` and the session tainted when its text touches a masked column. */
  private taint(op: Op, text: string): void {
    if (this.policy?.lineage(text, this.catalog?.relations)?.touches) { op.touched = true; this.tainted = true; }
  }

  private onQuery(buf: Buffer, start: number, end: number): void {
    const text = parseQuery(buf, start, end);
    const refused = this.floorVerdict(text);
    if (refused) { this.block('simple', text, refused, { code: '42501', routine: 'hoop_floor' }); return; }
    const verdict = this.judge ? this.judge(text) : null;
    if (verdict && verdict.action !== 'allow') {
      this.decide('simple', text, verdict, buf, start, end);
      return;
    }
    this.sendQuery(text, buf, start, end, verdict?.guard);
  }

  private sendQuery(text: string, buf: Buffer, start: number, end: number, guard = false, guarded = false): void {
    if (guard && this.maxRows) { this.runGuarded('simple', (g) => this.sendQuery(text, buf, start, end, false, g)); return; }
    const op = newOp('simple');
    op.guarded = guarded;
    op.text = text;
    op.t0 = performance.now();
    this.taint(op, text);
    this.ops.push(op);
    this.armAnnounce();
    if (this.catalog) this.watchCatalog(text, op.t0);
    this.forward(buf, start, end);
  }

  private onParse(buf: Buffer, start: number, end: number): void {
    const p = parseParse(buf, start, end);
    const refused = this.floorVerdict(p.text);
    if (refused) { this.block('extended', p.text, refused, { code: '42501', routine: 'hoop_floor' }); return; }
    const verdict = this.judge ? this.judge(p.text, p.statement || undefined) : null;
    if (verdict && verdict.action !== 'allow') {
      this.decide('extended', p.text, verdict, buf, start, end, p.statement);
      return;
    }
    this.sendParse(p.statement, p.text, buf, start, end, verdict?.guard);
  }

  private sendParse(name: string, text: string, buf: Buffer, start: number, end: number, guard = false): void {
    const s: StmtInfo = { text, fields: null, shape: null, tBytes: null, ...(guard ? { guard } : {}) };
    this.stmts.set(name, s);
    if (this.catalog) this.watchCatalog(text, performance.now());
    const parseOp = newOp('parse');
    this.taint(parseOp, text);
    this.ops.push(parseOp);
    this.forwardExtended(buf, start, end);
    if (this.policy?.mask) {
      // learn the statement's result columns even if the client never asks (pgbench -M prepared):
      // the answer is swallowed; rows are masked against it
      const d = newOp('describe');
      d.describe = 'S';
      d.stmt = s;
      d.injected = true;
      this.ops.push(d);
      this.targetOut.push(describeStatement(name));
    }
  }

  private onBind(buf: Buffer, start: number, end: number): void {
    const b = parseBind(buf, start, end);
    const stmt = this.stmts.get(b.statement) ?? { text: '', fields: null, shape: null, tBytes: null };
    const params = b.params.map((v, i) => (v === null ? null : (b.paramFormats.length === 1 ? b.paramFormats[0] : (b.paramFormats[i] ?? 0)) === 1 ? '\\x' + v.toString('hex') : v.toString('utf8')));
    this.portals.set(b.portal, { stmt, formats: b.resultFormats, params, fields: null, shape: null, tBytes: null });
    this.ops.push(newOp('bind'));
    this.forwardExtended(buf, start, end);
  }

  private onExecute(buf: Buffer, start: number, end: number): void {
    const { portal: name } = parseExecute(buf, start, end);
    const portal = this.portals.get(name) ?? null;
    const review = portal?.stmt.review;
    if (review) {
      // held here, not at Parse: the reviewer sees the values bound to it, and one approval
      // runs one Execute
      const text = portal.stmt.text;
      const exact = portal.params.length ? `${text}\n-- parameters: ${JSON.stringify(portal.params)}` : text;
      this.hold('extended', review, text, exact, this.policy?.reviewText(text, portal.params) ?? text, () => this.sendExecute(portal, buf, start, end));
      return;
    }
    this.sendExecute(portal, buf, start, end);
  }

  private sendExecute(portal: PortalInfo | null, buf: Buffer, start: number, end: number, guarded?: boolean): void {
    if (guarded === undefined && portal?.stmt.guard && this.maxRows) {
      if (parseExecute(buf, start, end).maxRows > 0) {
        // a row-limited Execute reports its count only at the last fetch, after the rows went out
        this.block('extended', portal.stmt.text, { rule: 'max_rows', message: 'hoopctl: a DELETE or UPDATE cannot be executed with a row limit on a connection with guardrails.max_rows' }, { code: '42501', routine: 'hoop_max_rows' });
        return;
      }
      this.runGuarded('extended', (g) => this.sendExecute(portal, buf, start, end, g));
      return;
    }
    const op = newOp('execute');
    op.guarded = guarded ?? false;
    op.portal = portal;
    op.text = portal?.stmt.text ?? '';
    op.t0 = performance.now();
    op.res = newResult();
    op.res.formats = portal?.formats;
    op.params = portal && portal.params.length > 0 ? portal.params : null;
    this.taint(op, op.text);
    this.catalog?.refreshIfOld(op.t0);
    this.ops.push(op);
    this.armAnnounce();
    this.forwardExtended(buf, start, end);
  }

  /** A statement the guardrails did not allow outright: deny it, or hold it for review. */
  private decide(mode: 'simple' | 'extended', text: string, verdict: Exclude<Verdict, { action: 'allow' }>, buf: Buffer, start: number, end: number, stmtName = ''): void {
    if (verdict.action === 'deny' || !this.ctx.requestReview) {
      const message = verdict.action === 'deny' ? `hoopctl: ${verdict.message}` : `hoopctl: ${verdict.message} (guardrail "${verdict.rule}"), and this session cannot ask for a review`;
      this.block(mode, text, { rule: verdict.rule, message });
      return;
    }
    if (mode === 'extended') {
      // Parse runs nothing: it goes on, and each Execute of the statement is held (onExecute)
      this.sendParse(stmtName, text, buf, start, end, verdict.guard);
      this.stmts.get(stmtName)!.review = verdict;
      return;
    }
    this.hold('simple', verdict, text, text, this.policy?.reviewText(text) ?? text, () => this.sendQuery(text, buf, start, end, verdict.guard));
  }

  /**
   * Holds one statement (a Query, or an Execute with everything after it up to Sync) until its
   * review ends: the client gets a NoticeResponse naming the review, then either the statement's
   * own results (approved: `run` sends exactly the bytes that were reviewed, once) or an
   * ErrorResponse, and the session goes on. A CancelRequest or a disconnect withdraws it.
   */
  private hold(mode: 'simple' | 'extended', verdict: Exclude<Verdict, { action: 'allow' }>, text: string, exact: string, display: string, run: () => void): void {
    // the client link keeps reading (its later messages queue in the framer, up to
    // HELD_BUFFER): so a client that leaves while its statement is held is noticed at once
    this.clientFramer.pause();
    this.clientHeld.review = true;
    this.flushTarget();
    const held = new AbortController();
    this.held = held;
    const groups = this.ctx.connection.review?.groups;
    this.ctx.requestReview!({
      rule: verdict.rule, statement: exact, display, kind: 'statement', signal: held.signal, detach: this.reviewDetach, resume: this.reviewResume ?? undefined,
      onPending: (r) => {
        if (this.closed) return;
        this.clientOut.push(noticeResponse('01000', `hoopctl: statement held for review ${r.id} (guardrail "${verdict.rule}"): waiting for approval${groups ? ` by ${groups.join(' or ')}` : ''} — ${r.approveCommand}`, {
          detail: `review ${r.id} expires at ${new Date(r.expiresAt).toISOString()}; the statement runs once, as reviewed, the moment it is approved`,
          hint: 'cancel the query (Ctrl-C) to withdraw the request',
          routine: 'hoop_review_pending',
        }));
        this.flushClient();
      },
    }).then(
      (o) => this.reviewed(o, mode, text, verdict, run),
      (err) => { this.ctx.log.warn({ err }, 'review failed'); this.reviewed({ id: '', status: 'cancelled', by: null, reason: String((err as Error)?.message ?? err) }, mode, text, verdict, run); },
    );
  }

  /** a CancelRequest for this session: withdraw the held statement, if any */
  private withdraw(): void {
    this.held?.abort('withdrawn by the client (cancel request)');
  }

  private reviewed(o: ReviewOutcome, mode: 'simple' | 'extended', text: string, verdict: Exclude<Verdict, { action: 'allow' }>, run: () => void): void {
    this.held = null;
    if (this.closed) return;
    if (o.status === 'approved') run();
    else {
      const timeout = formatDuration(this.ctx.connection.review?.timeout ?? 15 * 60_000);
      const [code, message, routine] = o.status === 'rejected'
        ? ['42501', `hoopctl: statement rejected in review ${o.id} by ${o.by}${o.reason ? `: ${o.reason}` : ''}`, 'hoop_review_rejected']
        : o.status === 'expired'
          ? ['42501', `hoopctl: statement not approved within ${timeout}: review ${o.id} timed out`, 'hoop_review_expired']
          : o.id
            ? ['57014', 'canceling statement due to user request', 'hoop_review_cancelled']
            : ['42501', `hoopctl: the statement could not be reviewed (${o.reason}); it did not run`, 'hoop_review_failed'];
      this.block(mode, text, { rule: verdict.rule, message }, { code, routine, hint: o.status === 'cancelled' ? undefined : `review ${o.id || '(none)'} on connection "${this.ctx.connection.name}"` });
    }
    this.clientHeld.review = false;
    if (!this.guardHeld) this.resumeClientFramer();
  }

  private resumeClientFramer(): void {
    try {
      this.clientFramer.resume();
    } catch (err) {
      this.clientProtocolError(err);
      return;
    }
    this.flushTarget();
    this.flushClient();
    this.resumeClient();
  }

  // ---------------------------------------------------------------- guardrails.max_rows

  /**
   * Runs a DELETE/UPDATE so that it can be undone. Later client messages wait in the framer;
   * a barrier waits until every earlier request is answered, so the transaction status is
   * exact. Then, in autocommit, BEGIN goes before the statement; inside the client's
   * transaction, SAVEPOINT. The count in the command tag decides (endGuard). `send(true)`
   * sends the client's statement as guarded; `send(false)` as is (the transaction has
   * already failed, or an earlier message of the batch failed: the server will refuse it).
   */
  private runGuarded(protocol: 'simple' | 'extended', send: (guarded: boolean) => void): void {
    this.clientFramer.pause();
    this.guardHeld = true;
    const b = newOp('barrier');
    b.run = (ok) => {
      const st = this.txStatus;
      if (!ok || st === TX_FAILED || this.closed) { send(false); this.releaseGuardHold(); return; }
      const mode = st === TX_IDLE ? 'tx' : 'savepoint';
      this.guard = { mode, protocol, over: null, failed: false };
      this.inject(protocol, mode === 'tx' ? 'BEGIN' : `SAVEPOINT ${GUARD_NAME}`, false);
      send(true);
      // the server holds extended-protocol answers until Sync or Flush: the count is needed now
      if (protocol === 'extended') this.targetOut.push(flushMessage);
      this.flushTarget();
    };
    this.ops.push(b);
    if (this.batchOpen) this.targetOut.push(flushMessage);
    this.flushTarget();
    this.checkBarrier();
  }

  /** Runs a barrier that reached the head of the queue. */
  private checkBarrier(): void {
    const ops = this.ops;
    if (ops.length > 0 && ops[0].kind === 'barrier') {
      const b = ops.shift()!;
      b.run!(!b.skipped);
    }
  }

  private releaseGuardHold(): void {
    if (!this.guardHeld) return;
    this.guardHeld = false;
    if (!this.clientHeld.review) this.resumeClientFramer();
  }

  /**
   * Sends a statement of the gateway's own: a simple Query where the client's own protocol is
   * simple (at a ReadyForQuery boundary), else the named Parse/Bind/Execute/Close (the client's
   * unnamed statement and portal stay), followed by Sync when `sync`. Answers are swallowed but
   * for a `relay` query's ErrorResponse and ReadyForQuery, which the client gets as its own.
   */
  private inject(protocol: 'simple' | 'extended', sql: string, relay: boolean, sync = false): void {
    if (protocol === 'simple') {
      const op = Object.assign(newOp('simple'), { injected: true, relay, text: sql });
      this.ops.push(op);
      this.targetOut.push(queryMessage(sql));
      return;
    }
    for (const kind of ['parse', 'bind', 'execute', 'close', 'close'] as const) this.ops.push(Object.assign(newOp(kind), { injected: true }));
    this.targetOut.push(runNamed(GUARD_NAME, sql));
    if (sync) {
      this.ops.push(Object.assign(newOp('sync'), { injected: true, relay }));
      this.targetOut.push(syncMessage);
    }
  }

  /** The error for a command tag over the connection's limit, or null. */
  private overLimit(tag: string): string | null {
    const m = /^(DELETE|UPDATE|MERGE) (\d+)$/.exec(tag);
    if (!m || !this.maxRows) return null;
    const n = Number(m[2]);
    const { delete: d, update: u } = this.maxRows;
    // MERGE's tag counts all its actions together: the lower limit holds
    const limit = m[1] === 'DELETE' ? d : m[1] === 'UPDATE' ? u : Math.min(d ?? Infinity, u ?? Infinity);
    if (limit === undefined || n <= limit) return null;
    const key = m[1] === 'MERGE' ? (d !== undefined && (u === undefined || d <= u) ? 'delete' : 'update') : m[1].toLowerCase();
    return `hoopctl: ${m[1]} affected ${n} rows, more than guardrails.max_rows.${key} = ${limit} on connection "${this.ctx.connection.name}": rolled back, no row was changed`;
  }

  /** The guarded statement's CommandComplete: forward it, or replace it with the max_rows error. */
  private guardedTag(op: Op, tag: string, buf: Buffer, start: number, end: number): void {
    const g = this.guard!;
    const over = this.overLimit(tag);
    if (over) {
      g.over = over;
      op.error = over;
      this.ctx.stats.blocked++;
      this.ctx.audit('query.blocked', { rule: 'max_rows', statement: this.policy ? this.policy.reviewText(op.text) : op.text, message: over });
      this.clientOut.push(errorResponse('ERROR', '42501', over, {
        hint: `the gateway's guardrails for connection "${this.ctx.connection.name}" limit how many rows one statement may change`,
        routine: 'hoop_max_rows',
      }));
      // the rest of a multi-statement query is not run, as after any error
      if (op.kind === 'simple') op.swallow = true;
    } else this.clientOut.range(buf, start, end);
    if (g.protocol === 'extended') this.endGuardExtended();
  }

  /**
   * Extended protocol: the guarded Execute completed (the server is still inside the batch):
   * COMMIT / RELEASE, or undo it. After an over-limit error the client's messages up to Sync
   * are dropped, as the server does after an error.
   */
  private endGuardExtended(): void {
    const g = this.guard!;
    this.guard = null;
    const sql = g.mode === 'tx' ? (g.over ? 'ROLLBACK' : 'COMMIT') : g.over ? `ROLLBACK TO SAVEPOINT ${GUARD_NAME}` : `RELEASE SAVEPOINT ${GUARD_NAME}`;
    this.inject('extended', sql, false);
    if (g.over && g.mode === 'savepoint') this.inject('extended', `RELEASE SAVEPOINT ${GUARD_NAME}`, false);
    if (g.over) this.discarding = true;
    this.flushTarget();
    this.releaseGuardHold();
  }

  /**
   * The ReadyForQuery after a guarded simple query (or after a guarded Execute that failed):
   * end the gateway's transaction or savepoint. Returns false when the ReadyForQuery goes to
   * the client as it is; true when an injected statement's ReadyForQuery will stand for it.
   */
  private endGuardAtReady(status: number): boolean {
    const g = this.guard!;
    this.guard = null;
    let sql: string | null;
    if (g.mode === 'tx') sql = g.over || status !== TX_BLOCK ? 'ROLLBACK' : 'COMMIT';
    // the client's transaction failed on its own: it stays failed, as without the gateway
    else if (status === TX_FAILED) sql = null;
    else sql = g.over ? `ROLLBACK TO SAVEPOINT ${GUARD_NAME}; RELEASE SAVEPOINT ${GUARD_NAME}` : `RELEASE SAVEPOINT ${GUARD_NAME}`;
    if (sql !== null) {
      if (g.protocol === 'simple') this.inject('simple', sql, true);
      else this.inject('extended', sql, true, true);
      this.flushTarget();
    }
    this.releaseGuardHold();
    return sql !== null;
  }

  /**
   * Answers to the gateway's own statements: swallowed, but for a relayed error and
   * ReadyForQuery. False: not its answer (a notification, ParameterStatus), handle as usual.
   */
  private onInjected(op: Op, code: number, buf: Buffer, start: number, end: number): boolean {
    switch (code) {
      case B.ReadyForQuery:
        this.txStatus = buf[start + 5];
        this.ops.shift();
        if (op.relay) this.clientOut.range(buf, start, end);
        this.emitSynthetic();
        return true;
      case B.ErrorResponse:
        // a COMMIT can fail (a deferred constraint, a serialization failure): the client's statement did not persist
        this.ctx.log.info({ sql: op.text }, 'a statement of the gateway (max_rows) failed');
        if (op.relay) this.forwardMasked(buf, start, end, this.policy?.mask && ((b, s0, e0, mk, c) => maskErrorMessage(b, s0, e0, mk, c, this.tainted).bytes));
        if (op.kind !== 'simple' && op.kind !== 'sync') {
          // extended: the server skips to the next Sync
          while (this.ops.length > 0 && this.ops[0].injected && this.ops[0].kind !== 'sync') this.ops.shift();
        }
        return true;
      case B.ParseComplete:
      case B.BindComplete:
      case B.CloseComplete:
        this.ops.shift();
        return true;
      case B.CommandComplete:
      case B.EmptyQueryResponse:
        if (op.kind === 'execute') this.ops.shift();
        return true;
      case B.NoticeResponse:
        // WARNING: there is no transaction in progress, and the like: not the client's
        return true;
      default:
        return false;
    }
  }

  /** Follows BEGIN/COMMIT/ROLLBACK inside an extended-protocol batch (ReadyForQuery comes only at Sync). */
  private noteTxTag(tag: string, text: string): void {
    if (tag === 'BEGIN' || tag === 'START TRANSACTION') this.txStatus = TX_BLOCK;
    else if (tag === 'COMMIT' || tag === 'PREPARE TRANSACTION' || (tag === 'ROLLBACK' && !/^\s*(rollback|abort)\s+((work|transaction)\s+)?to\b/i.test(text))) this.txStatus = TX_IDLE;
  }

  private block(mode: 'simple' | 'extended', text: string, v: { rule: string; message: string }, as: { code: string; routine: string; hint?: string } = { code: '42501', routine: 'hoop_guardrail' }): void {
    const ctx = this.ctx;
    ctx.stats.blocked++;
    const statement = this.policy ? this.policy.reviewText(text) : text;
    ctx.audit('query.blocked', { rule: v.rule, statement, message: v.message });
    if (this.completed.length > 0) this.recordCompletedOps(); // keep the recording in order
    ctx.record({ type: 'query.blocked', text: statement, rule: v.rule, message: v.message, ...(as.routine !== 'hoop_guardrail' ? { routine: as.routine } : {}) });
    const hint = as.routine === 'hoop_guardrail' ? `the gateway's guardrails for connection "${ctx.connection.name}" do not allow this statement`
      : as.routine === 'hoop_floor' ? `built into the gateway for every connection ("${ctx.connection.name}"); no configuration allows it` : as.hint;
    const err = errorResponse('ERROR', as.code, v.message, { hint, routine: as.routine });
    if (mode === 'simple') this.pushSynthetic(err, true);
    else {
      this.pushSynthetic(err, false);
      this.discarding = true;
    }
  }

  private pushSynthetic(bytes: Buffer | null, ready: boolean): void {
    const op = newOp('synthetic');
    op.bytes = bytes;
    op.ready = ready;
    this.ops.push(op);
    if (this.ops.length === 1) this.emitSynthetic();
  }

  /** Sends the gateway's own answers that have reached the head of the queue. */
  private emitSynthetic(): void {
    while (this.ops.length > 0 && this.ops[0].kind === 'synthetic') {
      const op = this.ops.shift()!;
      if (op.bytes) this.clientOut.push(op.bytes);
      if (op.ready) this.clientOut.push(readyForQuery(this.txStatus));
    }
    this.checkBarrier();
  }

  // ---------------------------------------------------------------- startup and login

  private onStartupPacket(code: number, buf: Buffer, start: number, end: number): void {
    if (this.phase !== 'startup' || code !== 0) throw new ProtocolError('unexpected message before startup completed');
    const pkt = parseStartupPacket(buf, start, end);
    switch (pkt.name) {
      case 'sslRequest':
      case 'gssEncRequest':
        // the tunnel is already encrypted; libpq then continues in the clear on the same stream
        this.clientOut.push(sslNo);
        this.clientFramer.untagged = true;
        return;
      case 'cancelRequest':
        this.phase = 'closed';
        void this.forwardCancel(pkt.pid, pkt.secret);
        return;
      case 'startup':
        this.phase = 'login';
        this.clientFramer.pause();
        this.clientHeld.login = true;
        void this.login(pkt.minor, pkt.params);
    }
  }

  /**
   * The target connection is opened as the session starts, before the client's startup message:
   * libpq first asks for SSL and waits for our 'N', a round trip through the tunnel during which
   * the target accepts the connection, forks its backend and settles TLS with us (measured: -C
   * sessions/s, see bench/RESULTS.md). PostgreSQL does not log a connection closed before its
   * first message, so a session that never logs in costs the target only that backend. A
   * connection that died meanwhile (authentication_timeout, a target restart) is replaced by a
   * fresh one; a failure to open it is reported when login needs it.
   */
  private early: Promise<TargetChannel | Error> | null = null;
  private preDial(): void {
    this.early = this.connectTarget().then((ch) => {
      if (this.closed) { ch.socket.destroy(); return new Error('closed'); }
      const s = ch.socket;
      const dead = () => { s.destroy(); };
      // nothing may arrive before our startup message: data or an end makes the connection unusable
      s.once('readable', dead).once('close', dead).on('error', dead);
      this.unwatchEarly = () => { s.off('readable', dead).off('close', dead).off('error', dead); };
      return ch;
    }, (err: Error) => err);
  }

  private unwatchEarly: (() => void) | null = null;

  /** a new connection to the target, TLS settled */
  private connectTarget(): Promise<TargetChannel> {
    return this.ctx.dialTarget().then((raw) => openTarget(raw, this.ctx.connection.target));
  }

  /** the early connection when it is still fresh, else a new one */
  private async takeTarget(): Promise<TargetChannel> {
    const early = this.early;
    this.early = null;
    const ch = early ? await early : null;
    if (ch instanceof Error) throw ch;
    if (ch) {
      this.unwatchEarly?.();
      this.unwatchEarly = null;
      if (!ch.socket.destroyed && ch.socket.writable && ch.socket.readableLength === 0) return ch;
      ch.socket.destroy();
    }
    return this.connectTarget();
  }

  /**
   * Lease end (issue 10 §4): closing the target connection does not stop a running statement
   * (the backend notices the closed socket only when it next reads or writes), so a statement
   * that sleeps and then writes would still commit. When the target has not answered
   * everything yet, a CancelRequest with the real backend key goes out on a new connection
   * first; the Terminate that close() sends is read after the cancelled statement.
   */
  private cancelInFlight(reason: string): void {
    const key = this.backend;
    if (!key || !this.ops.some((o) => o.kind !== 'synthetic' && o.kind !== 'barrier')) return;
    this.ctx.audit('query.cancelled', { reason });
    void this.connectTarget().then(({ socket: s }) => new Promise<void>((resolve) => {
      s.once('error', () => resolve());
      s.once('close', () => resolve());
      s.end(cancelRequest(key.pid, key.secret));
      setTimeout(() => { s.destroy(); resolve(); }, 5000).unref();
    })).catch((err: Error) => this.ctx.log.warn({ err: err.message }, 'cancelling the running statement at lease end failed'));
  }

  /** the real backend's key (for cancelling at lease end) */
  private backend: { pid: number; secret: number } | null = null;

  private async forwardCancel(pid: number, secret: number): Promise<void> {
    const entry = lookupBackend(pid, secret);
    try {
      if (!entry || entry.connection !== this.ctx.connection.name) {
        this.ctx.log.info('cancel request for an unknown backend key ignored');
        return;
      }
      entry.withdraw?.();
      const { socket: s } = await this.takeTarget();
      await new Promise<void>((resolve) => { s.end(cancelRequest(entry.pid, entry.secret), () => resolve()); s.once('error', () => resolve()); s.once('close', () => resolve()); });
      s.destroy();
      this.ctx.audit('query.cancelled', {});
    } catch (err) {
      this.ctx.log.warn({ err: (err as Error).message }, 'forwarding cancel request failed');
    } finally {
      this.close();
    }
  }

  private async login(minor: number, clientParams: Map<string, string>): Promise<void> {
    const ctx = this.ctx;
    const t = ctx.connection.target;
    // GUCs go on but for a deny-list of what would bypass policy (startup-params.ts)
    const { params, unrecognized, database: clientDb, hoop, dropped } = startupParams(clientParams);
    const detach = hoop.get('hoop.detach_reviews');
    if (detach !== undefined) this.reviewDetach = ['on', 'true', '1', 'yes'].includes(detach.toLowerCase());
    this.reviewResume = hoop.get('hoop.review') ?? null;
    if (dropped.length > 0) ctx.log.info({ dropped }, 'startup parameters not forwarded to the target');
    const user = t.user ?? 'postgres';
    const database = (t.allow_client_database && clientDb) || t.database || user;
    let session: TargetSession;
    try {
      const policyP = loadPolicy(ctx.connection);
      session = await loginToTarget({ target: t, user, password: ctx.secret.password, database, params, open: () => this.takeTarget(), signal: ctx.signal });
      try {
        this.policy = await policyP;
      } catch (err) {
        session.socket.destroy();
        throw err;
      }
    } catch (err) {
      if (this.closed) return;
      const sqlstate = err instanceof TargetLoginError ? err.sqlstate : '08006';
      const message = (err as Error).message;
      ctx.log.info({ err: message }, 'target login failed');
      ctx.audit('session.target_login_failed', { message });
      this.clientOut.push(errorResponse('FATAL', sqlstate, `gateway could not log in to the target: ${message}`));
      this.flushClient();
      this.close();
      return;
    }
    if (this.closed) { session.socket.destroy(); return; }

    this.judge = this.policy.newJudge();
    this.screen = this.policy.mask?.newScreen() ?? null;
    if (this.policy.mask?.columnRules) this.catalog = Catalog.for({ target: t, user, password: ctx.secret.password, database, tls: session.tls });
    const key = registerBackend({ connection: ctx.connection.name, pid: session.pid, secret: session.secret, withdraw: () => this.withdraw() });
    this.releaseKey = key.release;
    this.backend = { pid: session.pid, secret: session.secret };
    this.txStatus = session.txStatus;
    this.targetPid = session.pid;
    this.targetUser = user;

    if (minor > 0 || unrecognized.length > 0) this.clientOut.push(negotiateProtocolVersion(unrecognized));
    this.clientOut.push(authenticationOk);
    const mask = this.policy.mask;
    for (const [k, v] of session.params) this.clientOut.push(parameterStatus(k, mask ? mask.parameterStatus(k, v, false, this.maskCounter) : v));
    this.takeMaskCount();
    this.clientOut.push(backendKeyData(key.pid, key.secret));
    this.clientOut.push(readyForQuery(session.txStatus));
    this.flushClient();

    const target = session.socket;
    this.target = target;
    this.targetFramer = new MessageFramer((c, b, s, e) => this.onTargetMessage(c, b, s, e), { maxMessageSize: MAX_TARGET_MESSAGE });
    target.on('data', (chunk: Buffer) => this.onTargetData(chunk));
    target.on('drain', () => { this.clientHeld.drain = false; this.resumeClient(); });
    target.on('error', (err) => { ctx.log.info({ err: err.message }, 'target connection error'); this.targetGone(); });
    target.on('close', () => this.targetGone());
    target.on('end', () => this.targetGone());
    target.resume();

    this.phase = 'ready';
    this.clientHeld.login = false;
    try {
      this.clientFramer.resume();
    } catch (err) {
      this.clientProtocolError(err);
      return;
    }
    this.flushTarget();
    this.flushClient();
  }

  // ---------------------------------------------------------------- target → client

  private onTargetData(chunk: Buffer): void {
    if (this.closed) return;
    try {
      this.targetFramer!.push(chunk);
    } catch (err) {
      this.targetProtocolError(err);
      return;
    }
    this.flushClient();
  }

  private targetProtocolError(err: unknown): void {
    this.ctx.log.warn({ err: (err as Error)?.message ?? String(err) }, 'invalid message from the target');
    this.clientOut.clear();
    this.clientOut.push(errorResponse('FATAL', '08P01', `gateway received an invalid message from the target: ${(err as Error)?.message ?? err}`));
    this.flushClient();
    this.close();
  }

  private parseBackend(buf: Buffer, start: number, end: number): BackendMessage {
    this.parsed = null;
    this.parser.parse(start === 0 && end === buf.length ? buf : buf.subarray(start, end), this.onParsed);
    if (!this.parsed) throw new ProtocolError('incomplete backend message');
    return this.parsed;
  }

  private onTargetMessage(code: number, buf: Buffer, start: number, end: number): void {
    const out = this.clientOut;
    const ops = this.ops;
    const op = ops.length > 0 ? ops[0] : null;
    const mask = this.policy?.mask ?? null;
    if (op !== null) {
      if (op.injected && op.kind !== 'describe' && this.onInjected(op, code, buf, start, end)) return;
      if (op.swallow && code !== B.ReadyForQuery) return;
    }
    switch (code) {
      case B.DataRow: {
        const res = op?.res;
        if (!res) {
          // a row we cannot attribute to a statement: with masking on, every value goes (fail closed)
          const m = mask ? maskDataRow(buf, start, end, null, undefined, mask, this.maskCounter) : null;
          this.takeMaskCount();
          if (m) out.push(m); else out.range(buf, start, end);
          return;
        }
        res.rows++;
        if (mask) {
          if (res.copyRefused) return;
          const shape = this.shapeOf(op!, res);
          if (!shape || shape.needsWork) {
            const m = maskDataRow(buf, start, end, shape, res.formats, mask, this.maskCounter, this.screen);
            if (m) {
              this.takeMaskCount();
              this.recordRow(res, m, 0, m.length);
              out.push(m);
              return;
            }
          }
        }
        this.recordRow(res, buf, start, end);
        out.range(buf, start, end);
        return;
      }
      case B.RowDescription: {
        if (op?.kind === 'describe') {
          // the same columns as the last plain result: its fields and mask plan hold (no parse)
          const same = mask ? this.sameColumns(buf, start, end) : null;
          const fields = same ? same.fields : (this.parseBackend(buf, start, end) as RowDescriptionMessage).fields;
          const shape = same ? same.shape : null;
          const target = op.describe === 'S' ? op.stmt : op.portal;
          if (target) { target.fields = fields; target.shape = shape; target.tBytes = same ? null : buf.subarray(start, end); }
          if (!op.injected) out.range(buf, start, end);
          this.complete();
          if (!same) this.ensureCatalog(fields, (op.describe === 'S' ? op.stmt?.text : op.portal?.stmt.text) ?? null);
          return;
        }
        if (op && (op.kind === 'simple' || op.kind === 'execute')) {
          const res = op.kind === 'simple' ? (op.res = newResult()) : op.res!;
          res.tBuf = buf; res.tStart = start; res.tEnd = end;
          if (mask) {
            // the same columns as the last plain result, or the same text and columns again:
            // reuse the fields and mask plan
            const hit = this.sameColumns(buf, start, end) ?? (op.kind === 'simple' ? this.shapeCache.get(op.text) : undefined);
            if (hit && hit.shape.gen === (this.catalog?.generation ?? 0) && (hit === this.plainT || hit.t.equals(buf.subarray(start, end)))) {
              res.fields = hit.fields;
              res.shape = hit.shape;
              out.range(buf, start, end);
              return;
            }
            res.fields = (this.parseBackend(buf, start, end) as RowDescriptionMessage).fields;
            out.range(buf, start, end);
            this.ensureCatalog(res.fields, op.text);
            return;
          }
        }
        out.range(buf, start, end);
        return;
      }
      case B.CommandComplete:
      case B.EmptyQueryResponse:
      case B.PortalSuspended: {
        if (op?.kind === 'simple' || op?.kind === 'execute') {
          const res = op.res;
          if (code === B.CommandComplete) op.tag = buf.toString('utf8', start + 5, end - 1);
          if (res?.copyRefused) {
            out.push(errorResponse('ERROR', '42501', 'hoopctl: binary COPY output cannot be masked on this connection; use text or csv format'));
            op.error = 'binary COPY refused';
          } else if (op.guarded && this.guard) this.guardedTag(op, op.tag, buf, start, end);
          else out.range(buf, start, end);
          this.ctx.stats.statements++;
          if (res) { op.rows += res.rows; this.recordResult(op, res); }
          if (op.kind === 'simple') op.res = null;
          else {
            if (this.batchOpen) this.noteTxTag(op.tag, op.text);
            this.complete();
            if (op.guarded && this.guard) this.endGuardExtended();
          }
          return;
        }
        out.range(buf, start, end);
        return;
      }
      case B.ReadyForQuery: {
        this.txStatus = buf[start + 5];
        const g = this.guard;
        const endsGuard = g !== null && (g.protocol === 'extended' ? g.failed : op?.guarded === true);
        // committed (idle outside a transaction): the side connection now sees the change
        if (this.catalogChanged && this.txStatus === 0x49) { this.catalogChanged = false; this.catalog?.invalidate(); }
        // the Sync or simple query this answers; anything still before it was skipped after an error
        while (ops.length > 0 && ops[0].kind !== 'synthetic' && ops[0].kind !== 'barrier') {
          const o = ops.shift()!;
          if (o.kind === 'simple' || o.kind === 'function' || o.kind === 'sync') {
            if (o.kind !== 'sync') this.recordCompleted(o);
            break;
          }
          if (o.kind === 'execute') {
            o.error = 'not executed: an earlier message of the batch failed';
            this.recordCompleted(o);
          }
        }
        // the transaction is over: nothing of a touched statement can still come back
        if (this.tainted && this.txStatus === 0x49) this.tainted = ops.some((o) => o.touched);
        // max_rows: the injected COMMIT/ROLLBACK's ReadyForQuery will stand for this one
        if (!(endsGuard && this.endGuardAtReady(this.txStatus))) out.range(buf, start, end);
        this.emitSynthetic();
        return;
      }
      case B.ErrorResponse: {
        const fields = parseErrorFields(buf, start, end);
        const severity = errorField(fields, 'V') ?? errorField(fields, 'S');
        if (severity === 'FATAL' || severity === 'PANIC') this.sawFatal = true;
        let msg = errorField(fields, 'M') ?? 'error';
        if (mask) {
          const m = maskErrorMessage(buf, start, end, mask, this.maskCounter, this.tainted);
          this.takeMaskCount();
          if (m.bytes) { out.push(m.bytes); msg = m.message ?? msg; } else out.range(buf, start, end);
        } else out.range(buf, start, end);
        if (op?.kind === 'execute' && op.guarded && this.guard) {
          // the server skips to Sync; the gateway's transaction ends at the ReadyForQuery
          this.guard.failed = true;
          this.releaseGuardHold();
        }
        if (op && (op.kind === 'simple' || op.kind === 'function')) {
          op.error = msg;
          this.ctx.stats.statements++;
          if (op.res) { op.rows += op.res.rows; this.recordResult(op, op.res); op.res = null; }
        } else if (op && op.kind !== 'sync' && op.kind !== 'synthetic') {
          // extended protocol: the server skips everything up to the next Sync
          while (ops.length > 0 && ops[0].kind !== 'sync' && !(ops[0].kind === 'synthetic' && ops[0].ready)) {
            if (ops[0].kind === 'barrier') { ops[0].skipped = true; break; }
            const o = ops.shift()!;
            if (o.kind === 'execute') {
              o.error = msg;
              this.ctx.stats.statements++;
              if (o.res) { o.rows += o.res.rows; this.recordResult(o, o.res); }
              this.recordCompleted(o);
            }
          }
          this.emitSynthetic();
        }
        return;
      }
      case B.ParseComplete:
      case B.BindComplete:
      case B.CloseComplete:
        out.range(buf, start, end);
        if (op && (op.kind === 'parse' || op.kind === 'bind' || op.kind === 'close')) this.complete();
        return;
      case B.ParameterDescription:
        if (!(op?.kind === 'describe' && op.injected)) out.range(buf, start, end);
        return;
      case B.NoData:
        if (op?.kind === 'describe') {
          if (op.describe === 'S' && op.stmt) op.stmt.fields = [];
          else if (op.describe === 'P' && op.portal) op.portal.fields = [];
          if (!op.injected) out.range(buf, start, end);
          this.complete();
          return;
        }
        out.range(buf, start, end);
        return;
      case B.CopyOutResponse: {
        const res = op?.res ?? (op && op.kind === 'simple' ? (op.res = newResult()) : null);
        if (mask && res && op) {
          const m = this.parseBackend(buf, start, end) as CopyResponse;
          if (m.binary) { res.copyRefused = true; return; }
          this.planCopy(op, res, m.columnTypes.length);
        }
        out.range(buf, start, end);
        return;
      }
      case B.CopyData: {
        const res = op?.res;
        if (mask && res) {
          if (res.copyRefused) return;
          const header = res.copyHeader;
          res.copyHeader = false;
          const m = maskCopyData(buf, start, end, header ? null : res.copyMasked, res.copyFormat, mask, this.maskCounter, this.screen);
          this.takeMaskCount();
          if (m) { out.push(m); return; }
        }
        out.range(buf, start, end);
        return;
      }
      case B.CopyDone:
        if (op?.res?.copyRefused) return;
        out.range(buf, start, end);
        return;
      case B.NoticeResponse:
        this.forwardMasked(buf, start, end, mask && ((b, s0, e0, mk, c) => maskErrorMessage(b, s0, e0, mk, c, this.tainted).bytes));
        return;
      case B.NotificationResponse:
        this.forwardMasked(buf, start, end, mask && ((b, s0, e0, mk, c) => maskNotification(b, s0, e0, mk, c, this.tainted, this.targetPid)));
        return;
      case B.ParameterStatus:
        this.forwardMasked(buf, start, end, mask && ((b, s0, e0, mk, c) => maskParameterStatusMessage(b, s0, e0, mk, c, this.tainted)));
        return;
      case B.FunctionCallResponse:
      default:
        out.range(buf, start, end);
    }
  }

  /** Forwards one backend message, rewritten by `masker` when it changes anything. */
  private forwardMasked(buf: Buffer, start: number, end: number, masker: ((buf: Buffer, start: number, end: number, mask: NonNullable<Policy['mask']>, counter: { masked: number }) => Buffer | null) | null | false | undefined): void {
    const mask = this.policy?.mask;
    if (masker && mask) {
      const m = masker(buf, start, end, mask, this.maskCounter);
      this.takeMaskCount();
      if (m) { this.clientOut.push(m); return; }
    }
    this.clientOut.range(buf, start, end);
  }

  private takeMaskCount(): void {
    this.ctx.stats.masked += this.maskCounter.masked;
    this.maskCounter.masked = 0;
  }

  /** Shifts the head op (it got its answer) and sends any synthetic answers now due. */
  private complete(): void {
    const op = this.ops.shift();
    if (op?.kind === 'execute') this.recordCompleted(op);
    if (this.ops.length > 0 && this.ops[0].kind === 'synthetic') this.emitSynthetic();
  }

  /** The mask plan of the rows now arriving; computed once per statement/portal. */
  private shapeOf(op: Op, res: Result): ResultShape | null {
    if (res.shape) return res.shape;
    const mask = this.policy!.mask!;
    const gen = this.catalog?.generation ?? 0;
    if (op.kind === 'simple') {
      if (!res.fields) return null;
      res.shape = buildShape(res.fields, mask, this.catalog, () => this.derivation(op.text));
      if (res.tBuf) this.rememberColumns(op.text, res.tBuf.subarray(res.tStart, res.tEnd), res.fields, res.shape);
      return res.shape;
    }
    const portal = op.portal;
    if (!portal) return null;
    if (portal.fields) {
      if (portal.shape?.gen !== gen) {
        portal.shape = buildShape(portal.fields, mask, this.catalog, () => this.derivation(portal.stmt.text));
        if (portal.tBytes) this.rememberColumns(null, portal.tBytes, portal.fields, portal.shape);
      }
      res.shape = portal.shape;
    } else if (portal.stmt.fields) {
      if (portal.stmt.shape?.gen !== gen) {
        portal.stmt.shape = buildShape(portal.stmt.fields, mask, this.catalog, () => this.derivation(portal.stmt.text));
        if (portal.stmt.tBytes) this.rememberColumns(null, portal.stmt.tBytes, portal.stmt.fields, portal.stmt.shape);
      }
      res.shape = portal.stmt.shape;
    }
    return res.shape;
  }

  /**
   * The last RowDescription whose mask plan did not depend on the statement text (every column
   * a table column under its own name, or no column rules): a later identical RowDescription
   * gets the same fields and plan whatever its text (pgbench -M simple sends a new text each
   * time). Null on a miss or when the catalog changed since.
   */
  private sameColumns(buf: Buffer, start: number, end: number): { t: Buffer; fields: Field[]; shape: ResultShape } | null {
    const p = this.plainT;
    if (p === null || p.t.length !== end - start || p.shape.gen !== (this.catalog?.generation ?? 0)) return null;
    return p.t.compare(buf, start, end) === 0 ? p : null;
  }

  private rememberColumns(text: string | null, t: Buffer, fields: Field[], shape: ResultShape): void {
    if (shape.unresolved) return;
    if (!shape.usedDerivation) this.plainT = { t: Buffer.from(t), fields, shape };
    else if (text !== null) {
      if (this.shapeCache.size >= 500) this.shapeCache.clear();
      this.shapeCache.set(text, { t: Buffer.from(t), fields, shape });
    }
  }

  private derivation(text: string): Derivation | null {
    if (!this.policy?.mask?.columnRules) return null;
    // views are expanded with the catalog's snapshot: a new one invalidates the cached answers
    const gen = this.catalog?.generation ?? 0;
    if (gen !== this.derivationsGen) { this.derivations.clear(); this.derivationsGen = gen; }
    if (this.derivations.has(text)) return this.derivations.get(text)!;
    let d: Derivation | null = null;
    try { d = this.policy.derive(text, this.catalog?.relations); } catch (err) { this.ctx.log.debug({ err }, 'output derivation failed'); }
    if (this.derivations.size >= 1000) this.derivations.clear();
    this.derivations.set(text, d);
    return d;
  }

  /** Notes statements that may change tables; refreshes old catalog entries in the background. */
  private watchCatalog(text: string, now: number): void {
    if (mayChangeCatalog(text)) this.catalogChanged = true;
    this.catalog!.refreshIfOld(now);
  }

  /**
   * Holds the target's messages until what masking `fields` needs is known: the columns of
   * their tables, the views (definitions of those used, or named in `text`).
   */
  private ensureCatalog(fields: readonly Field[], text: string | null): void {
    const p = this.catalog?.prepare(fields, text);
    if (!p) return;
    this.holdTargetFor(p.catch((err) => {
      // fail closed: columns of tables we cannot resolve are masked (buildShape)
      this.ctx.log.warn({ err: (err as Error).message }, 'catalog lookup failed; masking unresolved columns');
    }));
  }

  private planCopy(op: Op, res: Result, ncols: number): void {
    const mask = this.policy!.mask!;
    // the parse tree when the parser is loaded (guardrails or column rules), else the text
    const options = this.policy!.copyOptions(op.text);
    res.copyFormat = options ?? copyFormat(op.text);
    if (!mask.columnRules) return;
    res.copyHeader = options?.header ?? false;
    // every field gets the column rules until (unless) the columns are known
    res.copyMasked = new Array(ncols).fill(true);
    if (!this.catalog) return;
    this.holdTargetFor(copyColumnsMasked(op.text, ncols, mask, this.catalog, (sql) => this.derivation(sql)).then(
      (m) => { res.copyMasked = m; },
      (err) => { this.ctx.log.warn({ err: (err as Error).message }, 'COPY columns could not be described; masking every column'); },
    ));
  }

  private holdTargetFor(p: Promise<void>): void {
    this.targetFramer!.pause();
    this.targetHeld.lookup = true;
    this.target?.pause();
    this.flushClient();
    void p.then(() => {
      if (this.closed) return;
      this.targetHeld.lookup = false;
      try {
        this.targetFramer!.resume();
      } catch (err) {
        this.targetProtocolError(err);
        return;
      }
      this.flushClient();
      this.resumeTarget();
    });
  }

  // ---------------------------------------------------------------- recording

  private recordRow(res: Result, buf: Buffer, start: number, end: number): void {
    if (!this.recordResults) return;
    if (res.rec === null) res.rec = [];
    if (res.rec.length >= this.maxRowsPerStatement || this.sessionRowsLeft <= 0) { res.truncated = true; return; }
    this.sessionRowsLeft--;
    res.rec.push(rowValues(buf, start, end, res.formats));
  }

  private recordResult(op: Op, res: Result): void {
    if (!this.recordResults || res.rows === 0) return;
    let columns: string[] | null = null;
    if (res.fields) columns = res.fields.map((f) => f.name);
    else if (res.tBuf) columns = this.columnNames(res.tBuf.subarray(res.tStart, res.tEnd));
    else {
      const fields = op.portal?.fields ?? op.portal?.stmt.fields;
      if (fields) columns = fields.map((f) => f.name);
    }
    (op.results ??= []).push({ columns, rows: res.rec ?? [], count: res.rows, truncated: res.truncated });
    res.rec = null;
  }

  /** Column names of a RowDescription; a repeated one (same query again) is not parsed again. */
  private columnNames(t: Buffer): string[] {
    if (this.lastT && this.lastT.equals(t)) return this.lastTNames;
    this.lastTNames = (this.parseBackend(t, 0, t.length) as RowDescriptionMessage).fields.map((f) => f.name);
    this.lastT = Buffer.from(t);
    return this.lastTNames;
  }

  /** The statement's text and parameters as recorded (through the text masker when masking is on). */
  private statementFields(op: Op): Record<string, unknown> {
    const rec = this.policy ? this.policy.recordText(op.text, op.params) : { text: op.text, params: op.params };
    const ev: Record<string, unknown> = { protocol: op.kind === 'execute' ? 'extended' : op.kind, text: rec.text };
    if (op.params) ev.params = rec.params;
    ev.startedAt = Math.round(performance.timeOrigin + op.t0);
    return ev;
  }

  /**
   * One event per statement, when it completes: text, parameters, start time, duration, rows,
   * command tag, error, and the (masked, capped) result rows. A statement still running after
   * ANNOUNCE_MS is also recorded as `query.started` then, so one that never completes (the
   * gateway crashes, the target hangs) is still in the recording.
   */
  private recordCompleted(op: Op): void {
    op.t1 = performance.now();
    op.announced = true;
    this.completed.push(op);
  }

  /**
   * Builds the events of the statements completed since the last call. flushClient() queues it
   * behind the write to the client, so masking the statement text and building the event are not
   * on the statement's round trip.
   */
  private recordCompletedOps(): void {
    const done = this.completed;
    for (let i = 0; i < done.length; i++) {
      const op = done[i];
      const ev = this.statementFields(op) as { type: string; [k: string]: unknown };
      ev.type = 'query.completed';
      ev.durationMs = Math.round((op.t1 - op.t0) * 1000) / 1000;
      ev.rows = op.rows;
      ev.tag = op.tag;
      if (op.error) ev.error = op.error;
      if (op.results) ev.results = op.results;
      op.results = null;
      this.ctx.record(ev);
    }
    done.length = 0;
  }

  private armAnnounce(): void {
    if (this.announceTimer) return;
    this.announceTimer = setTimeout(this.onAnnounce, ANNOUNCE_MS);
    this.announceTimer.unref();
  }

  /** Records `query.started` for the statements in flight for ANNOUNCE_MS or more. */
  private readonly onAnnounce = (): void => {
    this.announceTimer = null;
    if (this.closed) return;
    const now = performance.now();
    let waiting = false;
    for (const op of this.ops) {
      if (op.announced || op.t0 === 0 || !(op.kind === 'simple' || op.kind === 'execute' || op.kind === 'function')) continue;
      if (now - op.t0 < ANNOUNCE_MS) { waiting = true; continue; }
      op.announced = true;
      if (this.completed.length > 0) this.recordCompletedOps(); // keep the recording in order
      this.ctx.record({ type: 'query.started', ...this.statementFields(op) });
    }
    if (waiting) this.armAnnounce();
  };

  /** At close: statements that never got their answer are recorded as not completed. */
  private recordUnfinished(): void {
    for (const op of this.ops) {
      if (op.t0 === 0 || !(op.kind === 'simple' || op.kind === 'execute' || op.kind === 'function')) continue;
      if (op.res) { op.rows += op.res.rows; this.recordResult(op, op.res); op.res = null; }
      op.error ??= 'the session ended before the statement completed';
      this.recordCompleted(op);
    }
  }

  // ---------------------------------------------------------------- flow control and shutdown

  private flushTarget(): void {
    const t = this.target;
    if (!t) { this.targetOut.clear(); return; }
    const r = this.targetOut.flush(t);
    if (!r.ok && !this.clientHeld.drain) {
      this.clientHeld.drain = true;
      this.client?.pause();
    }
  }

  private flushClient(): void {
    this.checkBarrier();
    const c = this.client;
    if (!c) return;
    const r = this.clientOut.flush(c);
    this.ctx.stats.bytesOut += r.bytes;
    if (!r.ok && !this.targetHeld.drain) {
      this.targetHeld.drain = true;
      this.target?.pause();
    }
    // after the write has left: a multiplexed tunnel sends at the end of the event-loop turn
    // (setImmediate, src/shared/mux.ts), so building the events here would delay the answer
    if (this.completed.length > 0 && !this.recordQueued) {
      this.recordQueued = true;
      setImmediate(this.recordLater);
    }
  }

  private recordQueued = false;
  private readonly recordLater = (): void => {
    this.recordQueued = false;
    if (!this.closed && this.completed.length > 0) this.recordCompletedOps();
  };

  private resumeTarget(): void {
    if (this.closed || this.targetHeld.drain || this.targetHeld.lookup) return;
    this.target?.resume();
  }

  private resumeClient(): void {
    const h = this.clientHeld;
    if (this.closed || h.drain || h.review || h.login) return;
    this.client?.resume();
  }

  private targetGone(): void {
    if (this.closed) return;
    if (!this.sawFatal) {
      this.clientOut.push(errorResponse('FATAL', '08006', 'hoopctl: the connection to the target database was lost'));
    }
    this.flushClient();
    this.close();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.phase = 'closed';
    this.releaseKey?.();
    this.releaseKey = null;
    this.held?.abort('the client disconnected');
    if (this.early) { void this.early.then((ch) => { if (!(ch instanceof Error)) ch.socket.destroy(); }); this.early = null; }
    if (this.announceTimer) { clearTimeout(this.announceTimer); this.announceTimer = null; }
    try {
      this.recordUnfinished();
      this.recordCompletedOps();
    } catch (err) { this.ctx.log.warn({ err }, 'recording unfinished statements failed'); }
    if (this.catalogChanged) this.catalog?.invalidate();
    const t = this.target;
    if (t && !t.destroyed) {
      if (t.writable) t.end(terminateMessage);
      setTimeout(() => t.destroy(), 1000).unref();
    }
    const c = this.client;
    if (c && !c.destroyed) {
      c.end();
      setTimeout(() => c.destroy(), 1000).unref();
    }
    this.done?.();
  }
}

export const postgresEngine: EngineFactory = {
  type: 'postgres',
  create: (ctx) => new PostgresEngine(ctx),
};
