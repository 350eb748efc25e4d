/**
 * The PostgreSQL store (`store: postgres://...`) on a real PostgreSQL: the same conformance
 * assertions run against SqliteStore and PgStore; recordings are append-only in the database;
 * lease changes reach other replicas by LISTEN/NOTIFY (and after a lost listener); two gateway
 * processes on one store share leases and sessions, and a revoke on one closes the other's
 * tunnel; a bad store URL fails the start naming `store`, without printing the password.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { pino } from 'pino';
import { startPostgres, freePort, type PgCluster } from './helpers/postgres.ts';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';
import { echoServer, holdOpen } from './helpers/net.ts';
import { SqliteStore } from '../src/gateway/store/sqlite-store.ts';
import { PgStore, SCHEMA_VERSION } from '../src/gateway/store/pg-store.ts';
import { openStore } from '../src/gateway/store/open-store.ts';
import { Recorder, verifyChain } from '../src/gateway/recording/recorder.ts';
import { TunnelTokens } from '../src/gateway/session/tunnel-token.ts';
import type { Lease, Review, SessionRow, Store } from '../src/gateway/store/store.ts';

const log = pino({ level: 'silent' });
let pg: PgCluster;
let echo: Awaited<ReturnType<typeof echoServer>>;
const tmp: string[] = [];
let dbs = 0;

before(async () => {
  [pg, echo] = await Promise.all([startPostgres(), echoServer()]);
});
after(async () => {
  await echo?.close();
  await pg?.stop();
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

/** a fresh database owned by `app`; its URL (with the password) */
async function freshDb(): Promise<string> {
  const name = `hoop_t${++dbs}`;
  await pg.psql(`CREATE DATABASE ${name} OWNER app`);
  return pg.url(name, 'app');
}

interface Backend { name: string; open(): Promise<{ store: Store; reopen(): Promise<Store>; sql(q: string): Promise<unknown> }> }

const backends: Backend[] = [
  {
    name: 'sqlite',
    async open() {
      const dir = mkdtempSync(join(tmpdir(), 'hoop-store-'));
      tmp.push(dir);
      const file = join(dir, 'hoop.db');
      return {
        store: new SqliteStore(file),
        reopen: async () => new SqliteStore(file),
        async sql(q) {
          const db = new DatabaseSync(file);
          try { return db.exec(q); } finally { db.close(); }
        },
      };
    },
  },
  {
    name: 'postgres',
    async open() {
      const url = await freshDb();
      return {
        store: await PgStore.open(url),
        reopen: () => PgStore.open(url),
        sql: (q) => pg.psql(q, { db: new URL(url).pathname.slice(1), user: 'app' }),
      };
    },
  },
];

const lease = (over: Partial<Lease>): Lease => ({
  id: 'ls_x', connection: 'db', user: 'alice', groups: ['eng', 'dba'], status: 'active', reason: null, createdAt: 1_000,
  durationMs: 60_000, expiresAt: 61_000, endedAt: null, endedBy: null, endReason: null, ...over,
});
const session = (over: Partial<SessionRow>): SessionRow => ({
  id: 'se_x', leaseId: 'ls_1', user: 'alice', connection: 'db', type: 'postgres', startedAt: 1_000, endedAt: null,
  bytesIn: 0, bytesOut: 0, statements: 0, blocked: 0, masked: 0, closeReason: null, ...over,
});

const review = (over: Partial<Review>): Review => ({
  id: 'r_x', kind: 'statement', connection: 'db', requester: 'alice', leaseId: 'ls_1', sessionId: 'se_1', rule: 'delete', statement: "delete from t where ssn = '***'",
  statementHash: 'h', reason: 'INC-1', groups: ['dba'], minApprovals: 1, status: 'pending', createdAt: Date.now(), expiresAt: Date.now() + 60_000,
  decidedAt: null, decidedBy: null, decisionReason: null, detached: false, consumedAt: null, decisions: [], ...over,
});
const approve = (reviewer: string, reason: string | null = null, at = Date.now()) => ({ reviewer, decision: 'approve' as const, reason, at });

for (const b of backends) {
  test(`reviews: decisions are atomic, each reviewer once, expiry and withdrawal conditional: ${b.name}`, async () => {
    const { store, reopen } = await b.open();
    // a second handle on the same database: another replica (PostgreSQL) or connection (SQLite)
    const other = b.name === 'postgres' ? await reopen() : store;
    try {
      await store.createReview(review({ id: 'r_two', minApprovals: 2 }));
      const back = await other.getReview('r_two');
      assert.equal(back?.statement, "delete from t where ssn = '***'");
      assert.deepEqual(back?.groups, ['dba']);
      assert.equal(back?.detached, false);
      // five reviewers at the same instant, on two handles: two approvals decide it, the rest arrive too late
      const results = await Promise.all(['b1', 'b2', 'b3', 'b4', 'b5'].map((r, i) => (i % 2 ? other : store).decideReview('r_two', approve(r))));
      const kinds = results.map((r) => r.result).sort();
      assert.deepEqual(kinds, ['decided', 'not_pending', 'not_pending', 'not_pending', 'recorded']);
      const done = (await store.getReview('r_two'))!;
      assert.equal(done.status, 'approved');
      assert.equal(done.decisions.length, 2);
      assert.equal(new Set(done.decisions.map((d) => d.reviewer)).size, 2);
      // approve against reject at the same instant: one outcome, and the row says which
      for (let i = 0; i < 5; i++) {
        const id = `r_race${i}`;
        await store.createReview(review({ id }));
        const [x, y] = await Promise.all([store.decideReview(id, approve('b1')), other.decideReview(id, { reviewer: 'b2', decision: 'reject', reason: 'no', at: Date.now() })]);
        assert.deepEqual([x.result, y.result].sort(), ['decided', 'not_pending']);
        const winner = x.result === 'decided' ? 'approved' : 'rejected';
        assert.equal((await store.getReview(id))!.status, winner);
      }
      // each reviewer once
      await store.createReview(review({ id: 'r_dup', minApprovals: 2 }));
      assert.equal((await store.decideReview('r_dup', approve('b1'))).result, 'recorded');
      assert.equal((await other.decideReview('r_dup', approve('b1'))).result, 'duplicate');
      assert.equal((await store.decideReview('r_nope', approve('b1'))).result, 'not_found');
      // past its deadline: refused, and marked expired
      await store.createReview(review({ id: 'r_old', expiresAt: Date.now() - 1 }));
      assert.equal((await store.decideReview('r_old', approve('b1'))).result, 'expired');
      assert.equal((await store.getReview('r_old'))!.status, 'expired');
      // expiry / withdrawal only while pending; a decided review stays decided
      assert.equal(await store.finishReview('r_two', 'cancelled', Date.now(), 'x'), false);
      await store.createReview(review({ id: 'r_w' }));
      const both = await Promise.all([store.finishReview('r_w', 'cancelled', Date.now(), 'client left'), other.finishReview('r_w', 'expired', Date.now(), null)]);
      assert.deepEqual(both.filter(Boolean).length, 1, 'one of two replicas ends it');
      // an approved review is used once
      assert.equal(await store.consumeReview('r_w', Date.now()), false, 'not approved: cannot be used');
      const used = await Promise.all([store.consumeReview('r_two', Date.now()), other.consumeReview('r_two', Date.now())]);
      assert.deepEqual(used.filter(Boolean).length, 1);
      assert.deepEqual((await store.listReviews({ status: 'pending' })).map((r) => r.id), ['r_dup']);
      assert.equal((await store.listReviews({ leaseId: 'ls_1' })).length, 9);
    } finally {
      if (other !== store) await other.close();
      await store.close();
    }
  });

  test(`store conformance: ${b.name}`, async () => {
    const { store, reopen } = await b.open();
    let again: Store | undefined;
    try {
      assert.equal(store.kind, b.name);
      // meta
      assert.equal(await store.getMeta('k'), undefined);
      await store.setMeta('k', 'v1');
      await store.setMeta('k', 'v2');
      assert.equal(await store.getMeta('k'), 'v2');
      assert.equal(await store.setMetaIfAbsent('k', 'v3'), 'v2');
      assert.equal(await store.setMetaIfAbsent('fresh', 'f1'), 'f1');
      assert.equal(await store.getMeta('k'), 'v2');

      // leases
      const now = 100_000;
      const l1 = lease({ id: 'ls_1', createdAt: 1_000, expiresAt: now + 10_000, reason: 'INC-1' });
      const l2 = lease({ id: 'ls_2', createdAt: 2_000, expiresAt: now + 20_000 });
      const l3 = lease({ id: 'ls_3', createdAt: 3_000, expiresAt: now + 30_000, status: 'pending' });
      const l4 = lease({ id: 'ls_4', createdAt: 4_000, expiresAt: now - 1, user: 'bob', connection: 'other', groups: [] });
      for (const l of [l1, l2, l3, l4]) await store.createLease(l);
      assert.deepEqual(await store.getLease('ls_1'), l1);
      assert.equal(await store.getLease('ls_nope'), undefined);
      assert.deepEqual((await store.listLeases()).map((l) => l.id), ['ls_4', 'ls_3', 'ls_2', 'ls_1']);
      assert.deepEqual((await store.listLeases({ user: 'alice' })).map((l) => l.id), ['ls_3', 'ls_2', 'ls_1']);
      assert.deepEqual((await store.findActiveLease('alice', 'db', now))?.id, 'ls_2', 'the active lease expiring last; pending ones do not count');
      assert.equal(await store.findActiveLease('bob', 'other', now), undefined, 'expired');
      assert.equal(await store.updateLease('ls_2', { status: 'revoked', endedAt: now, endedBy: 'admin', endReason: 'lease revoked by admin' }, { ifStatus: 'pending' }), false);
      assert.equal((await store.getLease('ls_2'))?.status, 'active', 'a failed conditional update changes nothing');
      assert.equal(await store.updateLease('ls_2', { status: 'revoked', endedAt: now, endedBy: 'admin', endReason: 'lease revoked by admin' }, { ifStatus: 'active' }), true);
      assert.deepEqual(await store.getLease('ls_2'), { ...l2, status: 'revoked', endedAt: now, endedBy: 'admin', endReason: 'lease revoked by admin' });
      assert.equal((await store.findActiveLease('alice', 'db', now))?.id, 'ls_1');
      assert.equal(await store.updateLease('ls_3', { status: 'active', expiresAt: now + 99 }), true);
      assert.deepEqual((await store.listLeases({ activeOnly: true })).map((l) => l.id), ['ls_4', 'ls_3', 'ls_1']);

      // sessions: upsert keeps the newest state; counters beyond 32 bits survive
      await store.saveSessions([session({ id: 'se_1', startedAt: 5_000 }), session({ id: 'se_2', startedAt: 6_000, user: 'bob', connection: 'other', leaseId: 'ls_4' })]);
      await store.saveSessions([
        session({ id: 'se_1', startedAt: 5_000, bytesIn: 10 }),
        session({ id: 'se_1', startedAt: 5_000, endedAt: 7_000, bytesIn: 5_000_000_000, bytesOut: 7, statements: 3, blocked: 1, masked: 2, closeReason: 'client closed' }),
      ]);
      assert.deepEqual(await store.getSession('se_1'), session({ id: 'se_1', startedAt: 5_000, endedAt: 7_000, bytesIn: 5_000_000_000, bytesOut: 7, statements: 3, blocked: 1, masked: 2, closeReason: 'client closed' }));
      assert.deepEqual((await store.listSessions()).map((s) => s.id), ['se_2', 'se_1']);
      assert.deepEqual((await store.listSessions({ user: 'bob' })).map((s) => s.id), ['se_2']);
      assert.deepEqual((await store.listSessions({ connection: 'db' })).map((s) => s.id), ['se_1']);
      assert.deepEqual((await store.listSessions({ leaseId: 'ls_4' })).map((s) => s.id), ['se_2']);
      assert.deepEqual((await store.listSessions({ since: 5_500 })).map((s) => s.id), ['se_2']);

      // audit: in order, across batches
      const ev = (i: number) => ({ at: 10_000 + i, type: `t.e${i}`, actor: i % 2 ? 'alice' : null, connection: 'db', leaseId: 'ls_1', sessionId: null, data: { i, text: `"q"\t\\ ${'é'.repeat(i)}` } });
      await store.appendAudit([ev(3), ev(1), ev(2)]);
      await store.appendAudit([ev(5), ev(4)]);
      const audit = await store.listAudit();
      assert.deepEqual(audit.map((a) => a.type), ['t.e3', 't.e1', 't.e2', 't.e5', 't.e4']);
      assert.deepEqual(audit.map(({ id: _id, ...rest }) => rest), [3, 1, 2, 5, 4].map(ev));
      assert.ok(audit.every((a, i) => i === 0 || a.id! > audit[i - 1].id!));
      assert.deepEqual((await store.listAudit({ since: 10_004 })).map((a) => a.type), ['t.e5', 't.e4']);
      assert.equal((await store.listAudit({ limit: 2 })).length, 2);

      // recordings: sealed batches, interleaved sessions, awkward text
      const rec = new Recorder('se_1', store, log);
      const other = new Recorder('se_2', store, log);
      let n = 0;
      for (const size of [3, 1, 5]) {
        for (let i = 0; i < size; i++) {
          rec.record({ type: 'query.completed', text: `select ${++n}`, note: 'tab\there, newline\nhere, "quoted" \\ back é 😀' });
          other.record({ type: 'query.completed', text: `other ${n}` });
        }
        await Promise.all([rec.flush(), other.flush()]);
      }
      await rec.close('client closed');
      const entries = await store.readRecording('se_1');
      assert.deepEqual(entries.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      assert.equal(JSON.parse(entries[0].event).note, 'tab\there, newline\nhere, "quoted" \\ back é 😀');
      assert.deepEqual(verifyChain(entries, { ended: true }), { ok: true, entries: 10 });
      assert.equal((await store.readRecording('se_2')).length, 9);
      assert.deepEqual(await store.readRecording('se_none'), []);

      // migrations are idempotent: a second open (while the first is open) finds everything
      again = await reopen();
      assert.deepEqual(await again.getLease('ls_1'), l1);
      assert.deepEqual(await again.readRecording('se_1'), entries);
      assert.equal(await again.getMeta('k'), 'v2');
    } finally {
      await again?.close();
      await store.close();
    }
  });

  test(`recordings are append-only in the database: ${b.name}`, async () => {
    const { store, sql } = await b.open();
    try {
      const rec = new Recorder('se_ro', store, log);
      rec.record({ type: 'query.completed', text: 'select 1' });
      await rec.flush();
      await assert.rejects(sql(`UPDATE recording_batches SET entries = 'x'`), /recordings are append-only/);
      await assert.rejects(sql(`DELETE FROM recording_batches`), /recordings are append-only/);
      if (b.name === 'postgres') await assert.rejects(sql('TRUNCATE recording_batches'), /recordings are append-only/);
      assert.deepEqual(verifyChain(await store.readRecording('se_ro')), { ok: true, entries: 1 });
    } finally {
      await store.close();
    }
  });

  test(`recording retention: only sessions over before the cutoff lose their recording, noted, nothing else: ${b.name}`, async () => {
    const { store, sql } = await b.open();
    try {
      const now = 1_000_000;
      await store.createLease(lease({ id: 'ls_done', expiresAt: 9_000, status: 'expired', endedAt: 9_000 }));
      await store.createLease(lease({ id: 'ls_live', expiresAt: now * 10 }));
      await store.createLease(lease({ id: 'ls_crash', expiresAt: 3_000 }));
      const rows = [
        session({ id: 'se_old', leaseId: 'ls_done', endedAt: 5_000 }),
        session({ id: 'se_old2', leaseId: 'ls_done', endedAt: 6_000 }),
        session({ id: 'se_new', leaseId: 'ls_done', startedAt: now - 10, endedAt: now - 5 }),
        // started long ago, still running: its lease is active, so it is not over
        session({ id: 'se_live', leaseId: 'ls_live', endedAt: null }),
        // never ended (a gateway crash): over once its lease expired
        session({ id: 'se_crash', leaseId: 'ls_crash', endedAt: null }),
        session({ id: 'se_other', leaseId: 'ls_done', connection: 'other', endedAt: 5_000 }),
        session({ id: 'se_gone', leaseId: 'ls_done', connection: 'removed', endedAt: 5_000 }),
        // no recording at all (a tcp session): nothing to note
        session({ id: 'se_empty', leaseId: 'ls_done', endedAt: 5_000 }),
      ];
      await store.saveSessions(rows);
      for (const r of rows) {
        if (r.id === 'se_empty') continue;
        const rec = new Recorder(r.id, store, log);
        rec.record({ type: 'query.completed', text: `select '${r.id}'` });
        await rec.close('client closed');
      }
      const rule = { before: 100_000, at: now, reason: 'recording.retention 1d of connection "db"' };
      // in steps of `limit`
      assert.equal(await store.purgeRecordings({ ...rule, connection: 'db', limit: 2 }), 2);
      assert.equal(await store.purgeRecordings({ ...rule, connection: 'db', limit: 2 }), 1);
      assert.equal(await store.purgeRecordings({ ...rule, connection: 'db', limit: 2 }), 0, 'a second sweep finds nothing');
      for (const id of ['se_old', 'se_old2', 'se_crash']) {
        assert.deepEqual(await store.readRecording(id), [], id);
        assert.deepEqual(await store.getRecordingPurge(id), { sessionId: id, at: now, reason: rule.reason });
        assert.ok(await store.getSession(id), 'the session row stays');
      }
      for (const id of ['se_new', 'se_live', 'se_other', 'se_gone']) {
        assert.deepEqual(verifyChain(await store.readRecording(id), { ended: true }), { ok: true, entries: 2 }, id);
        assert.equal(await store.getRecordingPurge(id), undefined);
      }
      assert.equal(await store.getRecordingPurge('se_empty'), undefined);
      // connections no longer configured: everything but the listed ones
      assert.equal(await store.purgeRecordings({ ...rule, except: ['db', 'other'], limit: 10 }), 1);
      assert.deepEqual(await store.readRecording('se_gone'), []);
      assert.equal((await store.readRecording('se_other')).length, 2);
      // the database still refuses every other change, and appends to a purged recording
      await assert.rejects(sql(`DELETE FROM recording_batches WHERE session_id = 'se_new'`), /recordings are append-only/);
      await assert.rejects(sql(`DELETE FROM recording_purges`), /recording purges are append-only/);
      await assert.rejects(sql(`UPDATE recording_purges SET at = 0`), /recording purges are append-only/);
      await assert.rejects(store.appendRecording([{ sessionId: 'se_old', seq: 3, at: now, event: '{}', hash: 'x' }]), /purged by retention/);
      assert.equal((await store.readRecording('se_new')).length, 2);
    } finally {
      await store.close();
    }
  });
}

test('postgres: replicas migrating at once agree; the tunnel-token key is the same on both', async () => {
  const url = await freshDb();
  const stores = await Promise.all([PgStore.open(url), PgStore.open(url), PgStore.open(url)]);
  try {
    assert.equal((await pg.psql('SELECT version FROM schema_version', { db: new URL(url).pathname.slice(1) })).trim(), String(SCHEMA_VERSION), 'every migration applied once');
    const [t1, t2] = await Promise.all([TunnelTokens.open(stores[0], 'http://gw'), TunnelTokens.open(stores[1], 'http://gw')]);
    const token = await t1.sign({ leaseId: 'ls_1', user: 'alice', connection: 'db' }, Date.now() + 60_000);
    assert.equal((await t2.verify(token, 'db')).leaseId, 'ls_1');
  } finally {
    await Promise.all(stores.map((s) => s.close()));
  }
});

async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('postgres: review changes made by another process are announced', async () => {
  const url = await freshDb();
  const [a, b] = await Promise.all([PgStore.open(url), PgStore.open(url)]);
  const heard: Array<string | undefined> = [];
  const unwatch = a.watchReviews((id) => heard.push(id));
  try {
    const db = new URL(url).pathname.slice(1);
    await until('the listener', () => pg.psql(`SELECT count(*) FROM pg_stat_activity WHERE datname = '${db}' AND query ILIKE 'LISTEN hoop_reviews%'`).then((s) => s.trim() === '1' || undefined));
    await b.createReview(review({ id: 'r_b' }));
    await until('created', () => heard.includes('r_b'));
    await b.decideReview('r_b', approve('bob'));
    await until('decided', () => heard.filter((h) => h === 'r_b').length === 2);
    await a.createReview(review({ id: 'r_a' })); // our own: not announced to ourselves
    await b.finishReview('r_a', 'expired', Date.now(), null);
    await until('expired', () => heard.at(-1) === 'r_a');
    assert.deepEqual(heard, ['r_b', 'r_b', 'r_a']);
  } finally {
    unwatch();
    await Promise.all([a.close(), b.close()]);
  }
});

test('postgres: lease changes made by another process are announced, also after the listener was cut', async () => {
  const url = await freshDb();
  const db = new URL(url).pathname.slice(1);
  const [a, b] = await Promise.all([PgStore.open(url), PgStore.open(url)]);
  const heard: Array<string | undefined> = [];
  const unwatch = a.watchLeases((id) => heard.push(id));
  const listening = () => pg.psql(`SELECT count(*) FROM pg_stat_activity WHERE datname = '${db}' AND application_name = 'hoopctl-gateway-listen' AND query ILIKE 'LISTEN%'`).then((s) => s.trim() === '1' || undefined);
  try {
    await until('the listener', listening);
    await b.createLease(lease({ id: 'ls_b1' }));
    await until('ls_b1 announced', () => heard.includes('ls_b1'));
    await a.createLease(lease({ id: 'ls_a1' })); // our own change: not announced to ourselves
    await b.updateLease('ls_b1', { status: 'revoked', endReason: 'lease revoked by bob' });
    await until('the revoke announced', () => heard.length >= 2);
    assert.deepEqual(heard, ['ls_b1', 'ls_b1']);
    assert.equal(await b.updateLease('ls_b1', { status: 'expired' }, { ifStatus: 'active' }), false, 'no change, no announcement');

    await pg.psql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${db}' AND application_name = 'hoopctl-gateway-listen'`);
    // back within about a second, with "reload everything" for what was missed meanwhile
    await until('the reconnect', () => heard.some((h) => h === undefined), 5000);
    await b.updateLease('ls_a1', { status: 'revoked' });
    await until('announced again', () => heard.at(-1) === 'ls_a1');
  } finally {
    unwatch();
    await Promise.all([a.close(), b.close()]);
  }
  assert.equal(await listening(), undefined, 'unwatch/close ends the listener connection');
});

test('two gateway processes on one PostgreSQL store: shared leases and sessions; a revoke on B closes the tunnel on A', async () => {
  const url = await freshDb();
  const db = new URL(url).pathname.slice(1);
  const conns = (c: { connections: unknown[] }) => {
    c.connections = [{ name: 'echo', type: 'tcp', target: { host: '127.0.0.1', port: echo.port }, access: { groups: ['ci'] }, lease: { default: '30m', max: '1h' } }];
  };
  let a: GatewayProc | undefined;
  let b: GatewayProc | undefined;
  try {
    // started together: migrations and the tunnel-token key race; B has no password in its URL (PGPASSWORD)
    [a, b] = await Promise.all([
      startGatewayProc((c) => { c.store = url; conns(c); }),
      startGatewayProc((c) => { c.store = `postgres://app@127.0.0.1:${pg.port}/${db}`; conns(c); }, { env: { PGPASSWORD: 'app-secret' } }),
    ]);
    for (const g of [a, b]) assert.equal(((await (await fetch(`${g.url}/healthz`)).json()) as { store: string }).store, 'postgres');
    // the dev IdP is per replica: log in to each
    await Promise.all([loginClient(a, 'ci', 'ci-bot', 'ci-secret'), loginClient(b, 'ci', 'ci-bot', 'ci-secret')]);

    // a lease taken through B is reused through A
    const portB = await freePort();
    const onB = b.spawnCli(['connect', 'echo', '--port', String(portB)], { home: 'ci' });
    const leaseId = (await onB.waitFor(/lease (ls_\w+) granted/))[1];
    onB.kill('SIGINT');
    assert.equal((await onB.exited).code, 0);
    const portA = await freePort();
    const onA = a.spawnCli(['connect', 'echo', '--port', String(portA)], { home: 'ci' });
    assert.equal((await onA.waitFor(/lease (ls_\w+) (granted|reused)/))[0], `lease ${leaseId} reused`);
    const held = await holdOpen(portA);
    const echoed = new Promise<string>((r) => held.socket.once('data', (d) => r(String(d))));
    held.socket.write('ping');
    assert.equal(await echoed, 'ping');

    // revoked through B: A closes its tunnel within ~1 s, and its connect exits 4 with the reason
    const rv = await b.cli(['revoke', leaseId, '--json'], { home: 'ci' });
    const revokedAt = Date.now();
    assert.equal(rv.code, 0, rv.stderr);
    assert.equal(JSON.parse(rv.stdout).status, 'revoked');
    const closedAt = await held.closed;
    assert.ok(closedAt - revokedAt < 1500, `closed ${closedAt - revokedAt} ms after the revoke returned`);
    const r = await onA.exited;
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /lease revoked by ci-bot/);

    // the session A recorded is listed through B
    const row = await until('the session on B', async () => {
      const rows = JSON.parse((await b!.cli(['sessions', '--json'], { home: 'ci' })).stdout) as SessionRow[];
      return rows.find((s) => s.leaseId === leaseId && s.endedAt !== null);
    });
    assert.equal(row.bytesIn, 4);
    assert.equal(row.bytesOut, 4);
    const count = (type: string, id: string) => pg.psql(`SELECT count(*) FROM audit WHERE type = '${type}' AND lease_id = '${id}'`, { db }).then((s) => Number(s.trim()));
    assert.equal(await count('lease.revoked', leaseId), 1);

    // a lease made on A and expiring: both replicas watch it, one of them records the expiry
    const portA2 = await freePort();
    const short = a.spawnCli(['connect', 'echo', '--port', String(portA2), '--new-lease', '--duration', '2s'], { home: 'ci' });
    const shortId = (await short.waitFor(/lease (ls_\w+) granted/))[1];
    const heldShort = await holdOpen(portA2);
    await heldShort.closed;
    assert.equal((await short.exited).code, 4);
    await until('the expiry recorded', async () => (await count('lease.expired', shortId)) > 0 || undefined);
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(await count('lease.expired', shortId), 1, 'one replica records the expiry');
    const onBList = JSON.parse((await b.cli(['leases', '--json'], { home: 'ci' })).stdout) as Array<{ id: string; status: string }>;
    assert.equal(onBList.find((l) => l.id === shortId)?.status, 'expired');

    assert.ok(!a.logs().includes('app-secret'), 'the store password is never logged');
  } finally {
    await Promise.all([a?.stop(), b?.stop()]);
  }
});

test('two gateway processes on one PostgreSQL store: a lease waiting on A and a statement held on A are approved through B; racing decisions on A and B agree', async () => {
  const url = await freshDb();
  const db = new URL(url).pathname.slice(1);
  await pg.psql('CREATE TABLE IF NOT EXISTS held_t (id int); CREATE TABLE IF NOT EXISTS held_ran (n int);', { db: 'app', user: 'app' });
  await pg.psql(`CREATE OR REPLACE FUNCTION held_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO held_ran VALUES (1); RETURN NULL; END $$;
    DROP TRIGGER IF EXISTS held_tr ON held_t; CREATE TRIGGER held_tr AFTER DELETE ON held_t FOR EACH STATEMENT EXECUTE FUNCTION held_count();`, { db: 'app', user: 'app' });
  const target = { host: '127.0.0.1', port: pg.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' };
  const conns = (c: { connections: unknown[]; store: string }) => {
    c.store = url;
    c.connections = [
      { name: 'jit', type: 'postgres', target, access: { groups: ['ci'] }, review: { groups: ['dba'], timeout: '1m' } },
      { name: 'held', type: 'postgres', target, access: { groups: ['ci'] }, review: { groups: ['dba'], lease: false }, guardrails: { review: ['delete'] } },
    ];
  };
  let a: GatewayProc | undefined;
  let b: GatewayProc | undefined;
  try {
    [a, b] = await Promise.all([startGatewayProc(conns, { env: { APP_PW: 'app-secret' } }), startGatewayProc(conns, { env: { APP_PW: 'app-secret' } })]);
    // the dev IdP is per replica: the requester logs in to A, the reviewers to B (and A)
    await Promise.all([loginClient(a, 'ci', 'ci-bot', 'ci-secret'), loginClient(b, 'dba', 'dba-bot', 'dba-secret'), loginClient(a, 'boss', 'admin-bot', 'admin-secret')]);

    const portJ = await freePort();
    const waiting = a.spawnCli(['connect', 'jit', '--port', String(portJ)], { home: 'ci' });
    const lid = (await waiting.waitFor(/hoopctl approve (r_[a-z0-9]+)/))[1];
    const ok = await b.cli(['approve', lid], { home: 'dba' });
    assert.equal(ok.code, 0, ok.stderr);
    const approvedAt = Date.now();
    await waiting.waitFor(/Try: psql/, 5000);
    assert.ok(Date.now() - approvedAt < 2500, `connect on A listened ${Date.now() - approvedAt} ms after the approval on B`);
    waiting.kill('SIGINT');
    await waiting.exited;

    const portH = await freePort();
    const conn = a.spawnCli(['connect', 'held', '--port', String(portH)], { home: 'ci' });
    await conn.waitFor(/Try: psql/);
    const { spawn } = await import('node:child_process');
    const psql = spawn('psql', ['-X', '-At', `postgres://x:y@127.0.0.1:${portH}/app`, '-c', 'delete from held_t where id = 1']);
    let err = '';
    psql.stderr.on('data', (d) => { err += d; });
    const exited = new Promise<number | null>((r) => psql.on('close', r));
    const sid = await until('the held notice', () => /held for review (r_[a-z0-9]+)/.exec(err)?.[1], 15_000);
    assert.equal((await b.cli(['approve', sid], { home: 'dba' })).code, 0);
    assert.equal(await exited, 0, err);
    assert.equal((await pg.psql('select count(*) from held_ran', { db: 'app', user: 'app' })).trim(), '1');
    conn.kill('SIGINT');
    await conn.exited;

    // approve on B against reject on A at the same instant: one outcome
    await loginClient(a, 'dba', 'dba-bot', 'dba-secret');
    await loginClient(b, 'boss', 'admin-bot', 'admin-secret');
    const race = a.spawnCli(['connect', 'jit', '--port', String(await freePort()), '--new-lease'], { home: 'ci' });
    const rid = (await race.waitFor(/hoopctl approve (r_[a-z0-9]+)/))[1];
    // admin-bot is no reviewer (sec-admins only): its decision is refused, whatever the timing
    const [x, y, z] = await Promise.all([b.cli(['approve', rid], { home: 'dba' }), a.cli(['reject', rid], { home: 'dba' }), a.cli(['approve', rid], { home: 'boss' })]);
    assert.equal(z.code, 4);
    assert.deepEqual([x.code, y.code].sort(), [0, 4], `${x.stderr} / ${y.stderr}`);
    const status = (await pg.psql(`SELECT status FROM reviews WHERE id = '${rid}'`, { db })).trim();
    assert.equal(status, x.code === 0 ? 'approved' : 'rejected');
    if (status === 'approved') { await race.waitFor(/Try: psql/, 5000); race.kill('SIGINT'); }
    const rr = await race.exited;
    if (status === 'rejected') assert.equal(rr.code, 5);
    assert.equal((await pg.psql(`SELECT count(*) FROM audit WHERE type IN ('review.approved', 'review.rejected') AND data::jsonb->>'review' = '${rid}'`, { db })).trim(), '1');
  } finally {
    await Promise.all([a?.stop(), b?.stop()]);
  }
});

test('a bad store fails the start with exit 2 naming `store`, without the password', async () => {
  const dead = await freePort();
  const start = (store: string) => startGatewayProc((c) => { c.store = store; }).then(
    async (gw) => { await gw.stop(); throw new Error(`gateway started with store ${store}`); },
    (err: Error) => err.message);
  const refused = await start(`postgres://app:s3cret-pw@127.0.0.1:${dead}/app`);
  assert.match(refused, /exited with 2/);
  assert.match(refused, new RegExp(`gateway\\.yaml: store: cannot open the PostgreSQL store at postgres://app:\\*\\*\\*@127\\.0\\.0\\.1:${dead}/app: .*ECONNREFUSED`));
  assert.ok(!refused.includes('s3cret-pw'));
  const badPassword = await start(`postgres://app:wrong-pw-123@127.0.0.1:${pg.port}/app`);
  assert.match(badPassword, /store: cannot open the PostgreSQL store .*password authentication failed for user "app"/);
  assert.ok(!badPassword.includes('wrong-pw-123'));
  assert.match(await start(`postgres://app@127.0.0.1:${pg.port}/app`), /store: .*the server asks for a password: put it in the URL or in PGPASSWORD/);
  assert.match(await start(`postgres://app:app-secret@127.0.0.1:${pg.port}/no_such_db`), /store: .*database "no_such_db" does not exist/);
  assert.match(await start('postgres://app@127.0.0.1:5432'), /gateway\.yaml: store: names no database/);
  // the sqlite default still dispatches
  const s = await openStore('sqlite::memory:', '/');
  assert.equal(s.kind, 'sqlite');
  await s.close();
});
