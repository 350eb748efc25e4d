/**
 * Session recordings on the real SQLite store: events are sealed in batches (one hash per batch,
 * one row per batch), read back in order, and `verifyChain` detects an edited, dropped,
 * reordered or unsealed entry; recordings written entry by entry (before batching) still verify.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { createHash } from 'node:crypto';
import { pino } from 'pino';
import { GENESIS, Recorder, chainHash, verifyChain } from '../src/gateway/recording/recorder.ts';
import { SqliteStore } from '../src/gateway/store/sqlite-store.ts';
import type { RecordingEntry, SessionRow } from '../src/gateway/store/store.ts';
import { startRetention } from '../src/gateway/recording/retention.ts';
import { DEFAULT_RETENTION_MS } from '../src/gateway/config/schema.ts';
import { Audit } from '../src/gateway/audit/audit.ts';
import type { GatewayConfig } from '../src/gateway/config/load.ts';

const log = pino({ level: 'silent' });

async function withStore(fn: (store: SqliteStore, file: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-rec-'));
  const file = join(dir, 'hoop.db');
  const store = new SqliteStore(file);
  try { await fn(store, file); } finally { await store.close(); rmSync(dir, { recursive: true, force: true }); }
}

async function recorded(store: SqliteStore, id: string, batches: number[]): Promise<RecordingEntry[]> {
  const rec = new Recorder(id, store, log);
  let n = 0;
  for (const size of batches) {
    for (let i = 0; i < size; i++) rec.record({ type: 'query.completed', text: `select ${++n}`, note: 'tab\there, newline\nhere, "quoted"' });
    await rec.flush();
  }
  return store.readRecording(id);
}

test('events are sealed per batch, read back in order, and verify', async () => {
  await withStore(async (store) => {
    const entries = await recorded(store, 'se_a', [3, 1, 5]);
    // another session's recording interleaves in the store but not in the reading
    await recorded(store, 'se_b', [2]);
    assert.deepEqual(entries.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(entries.map((e) => JSON.parse(e.event).text), [1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => `select ${i}`));
    assert.equal(JSON.parse(entries[0].event).note, 'tab\there, newline\nhere, "quoted"');
    // the last entry of each batch carries the hash
    assert.deepEqual(entries.map((e) => e.hash !== ''), [false, false, true, true, false, false, false, false, true]);
    assert.deepEqual(verifyChain(entries), { ok: true, entries: 9 });
    assert.equal((await store.readRecording('se_b')).length, 2);
  });
});

test('an edited, dropped, reordered or unsealed entry is detected', async () => {
  await withStore(async (store) => {
    const entries = await recorded(store, 'se_t', [4, 4]);
    const edit = entries.map((e, i) => (i === 1 ? { ...e, event: e.event.replace('select 2', 'select 9') } : e));
    assert.equal(verifyChain(edit).ok, false);
    const retime = entries.map((e, i) => (i === 5 ? { ...e, at: e.at + 1 } : e));
    assert.equal(verifyChain(retime).ok, false);
    const dropped = entries.filter((_, i) => i !== 2);
    assert.deepEqual(verifyChain(dropped), { ok: false, seq: 3, problem: 'entry 3 is missing' });
    // the same entries with two events swapped (seq kept in order)
    const swapped = entries.map((e, i) => (i === 0 ? { ...e, event: entries[1].event } : i === 1 ? { ...e, event: entries[0].event } : e));
    assert.equal(verifyChain(swapped).ok, false);
    // moving an event across batches
    const across = entries.map((e, i) => (i === 3 ? { ...e, event: entries[4].event } : i === 4 ? { ...e, event: entries[3].event } : e));
    assert.equal(verifyChain(across).ok, false);
    // the hash moved off the last entry: what follows is unsealed
    const unsealed = entries.map((e, i) => (i === 7 ? { ...e, hash: '' } : e));
    assert.equal(verifyChain(unsealed).ok, false);
    // an entry appended after the end
    const appended = [...entries, { ...entries[7], seq: 9, hash: '' }];
    assert.equal(verifyChain(appended).ok, false);
  });
});

test('a closed recording counts its entries; an ended session whose end was cut off fails', async () => {
  await withStore(async (store) => {
    const rec = new Recorder('se_c', store, log);
    for (let i = 1; i <= 3; i++) {
      rec.record({ type: 'query.completed', text: `select ${i}` });
      await rec.flush(); // one batch each: the last batches can be cut off whole
    }
    await rec.close('client closed');
    const entries = await store.readRecording('se_c');
    assert.deepEqual(JSON.parse(entries.at(-1)!.event), { type: 'recording.closed', entries: 4, reason: 'client closed' });
    assert.deepEqual(verifyChain(entries, { ended: true }), { ok: true, entries: 4 });
    // the chain of what is left is intact, but the end is missing
    for (const kept of [3, 2, 1]) {
      const cut = entries.slice(0, kept);
      assert.deepEqual(verifyChain(cut), { ok: true, entries: kept });
      const v = verifyChain(cut, { ended: true });
      assert.equal(v.ok, false);
      assert.match((v as { problem: string }).problem, new RegExp(`ends early: nothing after entry ${kept} survives`));
    }
    // a session still open (or a gateway that crashed) has no closing entry yet: not an alteration
    assert.equal(verifyChain(entries.slice(0, 2)).ok, true);
  });
});

test('recordings written entry by entry before batching still verify', () => {
  const entries: RecordingEntry[] = [];
  let prev = GENESIS;
  for (let seq = 1; seq <= 3; seq++) {
    const event = JSON.stringify({ type: 'query.started', text: `select ${seq}` });
    prev = chainHash(prev, seq, 1_700_000_000_000 + seq, event);
    entries.push({ sessionId: 'old', seq, at: 1_700_000_000_000 + seq, event, hash: prev });
  }
  // the digest of the old construction: sha256 over the parts, one update each
  const old = createHash('sha256').update(GENESIS).update('\n').update('1').update('\n').update(String(entries[0].at)).update('\n').update(entries[0].event).digest('hex');
  assert.equal(entries[0].hash, old);
  assert.deepEqual(verifyChain(entries), { ok: true, entries: 3 });
  assert.equal(verifyChain(entries.map((e, i) => (i === 1 ? { ...e, event: e.event + ' ' } : e))).ok, false);
});

test('the database refuses to change or delete recorded batches', async () => {
  await withStore(async (store, file) => {
    await recorded(store, 'se_r', [2]);
    const db = new DatabaseSync(file);
    try {
      assert.throws(() => db.exec(`update recording_batches set entries = 'x'`), /append-only/);
      assert.throws(() => db.exec(`delete from recording_batches`), /append-only/);
    } finally {
      db.close();
    }
  });
});

test('retention sweep: each connection its own recording.retention, unconfigured connections the default, one audit event per connection', async () => {
  const store = new SqliteStore(':memory:');
  const audit = new Audit(store, log);
  const day = 86_400_000;
  const now = 1000 * day;
  const cfg = { connections: [{ name: 'short', recording: { retention: day } }, { name: 'long', recording: { retention: 30 * day } }] } as unknown as GatewayConfig;
  const row = (id: string, connection: string, endedAt: number): SessionRow => ({
    id, leaseId: 'ls_1', user: 'u', connection, type: 'postgres', startedAt: endedAt - 1000, endedAt, bytesIn: 0, bytesOut: 0, statements: 0, blocked: 0, masked: 0, closeReason: null,
  });
  const rows = [
    row('se_s_old', 'short', now - 2 * day), row('se_s_new', 'short', now - day / 2),
    row('se_l_mid', 'long', now - 2 * day), row('se_l_old', 'long', now - 31 * day),
    row('se_x_mid', 'removed', now - 31 * day), row('se_x_old', 'removed', now - DEFAULT_RETENTION_MS - day),
  ];
  await store.saveSessions(rows);
  for (const r of rows) {
    const rec = new Recorder(r.id, store, log);
    rec.record({ type: 'query.completed', text: 'select 1' });
    await rec.close('client closed');
  }
  const retention = startRetention({ cfg, store, audit, log }, { everyMs: 3_600_000 });
  try {
    assert.equal(await retention.sweep(now), 3);
    const left = [];
    for (const r of rows) if ((await store.readRecording(r.id)).length > 0) left.push(r.id);
    assert.deepEqual(left, ['se_s_new', 'se_l_mid', 'se_x_mid']);
    assert.match((await store.getRecordingPurge('se_x_old'))!.reason, /recording\.retention 90d \(default; the connection is no longer configured\)/);
    assert.equal((await store.getRecordingPurge('se_l_old'))!.reason, 'recording.retention 30d of connection "long"');
    assert.equal(await retention.sweep(now), 0, 'nothing left to delete');
    await audit.flush();
    const events = (await store.listAudit()).filter((e) => e.type === 'recording.purged');
    assert.deepEqual(events.map((e) => [e.connection, e.data.sessions, e.data.retention]), [['short', 1, '1d'], ['long', 1, '30d'], [null, 1, '90d']]);
  } finally {
    await retention.stop();
    await store.close();
  }
});
