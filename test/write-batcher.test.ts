/**
 * Batched store writes (src/gateway/store/write-batcher.ts) against a real SQLite store: session
 * rows collapse to their newest state and land in one transaction; a failed batch is reported and
 * later batches still land.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../src/gateway/store/sqlite-store.ts';
import { WriteBatcher } from '../src/gateway/store/write-batcher.ts';
import type { SessionRow } from '../src/gateway/store/store.ts';

const row = (id: string, patch: Partial<SessionRow> = {}): SessionRow => ({
  id, leaseId: 'ls_1', user: 'alice', connection: 'db', type: 'postgres', startedAt: 1_700_000_000_000, endedAt: null,
  bytesIn: 0, bytesOut: 0, statements: 0, blocked: 0, masked: 0, closeReason: null, ...patch,
});

test('session rows: the newest state of each row is written, in one batch, within the window', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-batch-'));
  const store = new SqliteStore(join(dir, 'hoop.db'));
  const batches: string[][] = [];
  const b = new WriteBatcher<SessionRow>(async (rows) => { batches.push(rows.map((r) => r.id)); await store.saveSessions(rows); }, (err) => { throw err; }, { ms: 30, max: 100, key: (r) => r.id });
  try {
    b.add(row('se_a'));
    b.add(row('se_b'));
    b.add(row('se_a', { endedAt: 1_700_000_000_500, bytesIn: 10, closeReason: 'client closed' }));
    assert.equal(await store.getSession('se_a'), undefined, 'nothing is written before the window ends');
    await new Promise((r) => setTimeout(r, 80));
    assert.deepEqual(batches, [['se_b', 'se_a']]);
    assert.equal((await store.getSession('se_a'))?.closeReason, 'client closed');
    assert.equal((await store.getSession('se_b'))?.endedAt, null);
    // a later state of a written row updates it
    b.add(row('se_b', { endedAt: 1_700_000_001_000, bytesOut: 7, closeReason: 'lease expired' }));
    await b.flush();
    const s = await store.getSession('se_b');
    assert.equal(s?.closeReason, 'lease expired');
    assert.equal(s?.bytesOut, 7);
    assert.equal(s?.startedAt, 1_700_000_000_000);
    assert.equal((await store.listSessions()).length, 2);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a failed batch is reported with its items; later batches still land; max flushes at once', async () => {
  const written: number[][] = [];
  const failed: number[][] = [];
  let fail = true;
  const b = new WriteBatcher<number>(async (items) => {
    if (fail) { fail = false; throw new Error('disk full'); }
    written.push(items);
  }, (_err, items) => failed.push(items), { ms: 10_000, max: 3 });
  b.add(1); b.add(2); b.add(3); // max reached: written without waiting for the window
  b.add(4);
  await b.flush();
  assert.deepEqual(failed, [[1, 2, 3]]);
  assert.deepEqual(written, [[4]]);
});
