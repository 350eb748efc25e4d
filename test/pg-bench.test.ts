/**
 * pgbench -S through the engine in every query mode (-M simple/extended/prepared), against the
 * same server directly in the same run. Checks that every transaction succeeds, with and without
 * policy (masking + guardrails: prepared mode exercises the engine's own Describe of statements),
 * and reports TPS ratio and gateway CPU per transaction. The throughput bound asserted here is
 * loose on purpose (a 2-core machine shares its cores between pgbench, PostgreSQL and the
 * gateway); bench/ holds the real benchmark.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { startPostgres, type PgCluster } from './helpers/postgres.ts';
import { startGateway, type TestGateway } from './helpers/pg-engine.ts';

let db: PgCluster;
let plain: TestGateway;
let policed: TestGateway;
const SECONDS = process.env.PG_BENCH_SECONDS ?? '3';

function pgbench(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('pgbench', [...args, '-h', '127.0.0.1', '-p', String(port), '-U', 'app', 'app'],
      { env: { ...process.env, PGPASSWORD: 'app-secret' }, timeout: 120_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`pgbench failed: ${stderr}`)) : resolve(String(stdout))));
  });
}

async function run(port: number, mode: string): Promise<{ tps: number; tx: number; failed: number }> {
  const out = await pgbench(port, ['-S', '-n', '-M', mode, '-c', '1', '-T', SECONDS]);
  return {
    tps: Number(/tps = ([\d.]+)/.exec(out)?.[1]),
    tx: Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1]),
    failed: Number(/number of failed transactions: (\d+)/.exec(out)?.[1] ?? 0),
  };
}

before(async () => {
  db = await startPostgres();
  await pgbench(db.port, ['-i', '-s', '1', '-q']);
  // benchmarks keep no events in memory; the recording path still runs
  plain = await startGateway(db, { discardEvents: true });
  policed = await startGateway(db, { discardEvents: true, masking: { columns: ['filler'], detectors: ['email'] }, guardrails: { deny: ['drop'] } });
});
after(async () => {
  await plain?.close();
  await policed?.close();
  await db?.stop();
});

for (const mode of ['simple', 'extended', 'prepared']) {
  test(`pgbench -S -M ${mode} through the engine`, async () => {
    const direct = await run(db.port, mode);
    const cpu0 = process.cpuUsage();
    const via = await run(plain.port, mode);
    const cpu = process.cpuUsage(cpu0);
    const cpuPerTx = (cpu.user + cpu.system) / via.tx;
    const ratio = via.tps / direct.tps;
    console.log(`# pgbench -S -M ${mode}: direct ${direct.tps.toFixed(0)} tps, engine ${via.tps.toFixed(0)} tps (${ratio.toFixed(2)}x), gateway CPU ${cpuPerTx.toFixed(1)} us/tx (user ${(cpu.user / via.tx).toFixed(1)})`);
    assert.equal(via.failed, 0);
    assert.ok(via.tx > 100, `only ${via.tx} transactions`);
    // loose: CI runs test files two at a time on two cores; this catches a pathological engine
    assert.ok(ratio > 0.1, `engine at ${ratio.toFixed(2)}x of direct`);
  });

  test(`pgbench -S -M ${mode} with masking and guardrails`, async () => {
    const before = policed.stats().statements;
    const via = await run(policed.port, mode);
    console.log(`# pgbench -S -M ${mode} with policy: ${via.tps.toFixed(0)} tps`);
    assert.equal(via.failed, 0);
    assert.ok(via.tx > 50);
    assert.ok(policed.stats().statements - before >= via.tx);
  });
}
