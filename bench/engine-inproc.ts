/**
 * The PostgreSQL engine in-process, without the tunnel: pgbench -S straight at the engine (and at a
 * plain Node TCP relay for reference) with policy parts switched on one at a time, to see what each
 * costs per transaction. CPU is this process's (the relay/engine); TPS is pgbench's.
 * usage: node bench/engine-inproc.ts [seconds=4]
 */
import net from 'node:net';
import { execFile } from 'node:child_process';
import { startPostgres } from '../test/helpers/postgres.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startGateway } from '../test/helpers/pg-engine.ts';
import { SqliteStore } from '../src/gateway/store/sqlite-store.ts';
import { Recorder } from '../src/gateway/recording/recorder.ts';

const T = Number(process.argv[2] ?? 4);
const pg = await startPostgres({ auth: 'scram-sha-256' });
await new Promise<void>((resolve, reject) => execFile('pgbench', ['-q', '-i', '-s', '2', '-h', '127.0.0.1', '-p', String(pg.port), '-U', 'app', 'app'],
  { env: { ...process.env, PGPASSWORD: 'app-secret' } }, (err, _o, e) => (err ? reject(new Error(e)) : resolve())));

function pgbench(port: number, c: number): Promise<number> {
  return new Promise((resolve) => execFile('pgbench', ['-n', '-S', '-c', String(c), '-j', '2', '-T', String(T), '-h', '127.0.0.1', '-p', String(port), '-U', 'app', 'app'],
    { env: { ...process.env, PGPASSWORD: 'app-secret' } }, (_err, out) => resolve(Number(/tps = ([\d.]+)/.exec(String(out))?.[1] ?? NaN))));
}

async function measure(name: string, port: number): Promise<void> {
  for (const c of [1, 16]) {
    const u0 = process.cpuUsage();
    const tps = await pgbench(port, c);
    const u = process.cpuUsage(u0);
    const us = (u.user + u.system) / (tps * T);
    console.log(`${name.padEnd(28)} c${String(c).padEnd(3)} ${tps.toFixed(0).padStart(6)} tps  ${us.toFixed(1).padStart(5)} µs/tx (user ${(u.user / (tps * T)).toFixed(1)})`);
  }
}

const relay = net.createServer((s) => {
  s.setNoDelay(true);
  const t = net.connect({ host: '127.0.0.1', port: pg.port, noDelay: true });
  s.pipe(t); t.pipe(s);
  s.on('error', () => t.destroy()); t.on('error', () => s.destroy());
});
await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
await measure('direct (no process)', pg.port);
await measure('node relay', (relay.address() as net.AddressInfo).port);
const variants: Array<[string, Parameters<typeof startGateway>[1]]> = [
  ['engine, no policy', { recording: { results: false } }],
  ['+guardrails', { recording: { results: false }, guardrails: { deny: ['drop', 'truncate', 'delete_without_where', 'update_without_where'], deny_patterns: ['pg_read_file'] } }],
  ['+masking', { recording: { results: false }, guardrails: { deny: ['drop', 'truncate', 'delete_without_where', 'update_without_where'], deny_patterns: ['pg_read_file'] }, masking: { columns: ['email', '*ssn*', 'card_number'], detectors: ['email', 'credit_card', 'ssn'] } }],
  ['+results recorded', { recording: { results: true }, guardrails: { deny: ['drop', 'truncate', 'delete_without_where', 'update_without_where'], deny_patterns: ['pg_read_file'] }, masking: { columns: ['email', '*ssn*', 'card_number'], detectors: ['email', 'credit_card', 'ssn'] } }],
];
for (const [name, opts] of variants) {
  const gw = await startGateway(pg, { ...opts, password: 'app-secret', discardEvents: true });
  await measure(name, gw.port);
  await gw.close();
}
// the last variant again, its events sealed and written to a SQLite store as the gateway does
const dir = mkdtempSync(join(tmpdir(), 'hoop-inproc-'));
const store = new SqliteStore(join(dir, 'hoop.db'));
const log = pino({ level: 'silent' });
const recorders: Recorder[] = [];
const gw = await startGateway(pg, { ...variants.at(-1)![1], password: 'app-secret', recorder: (id) => {
  const r = new Recorder(id, store, log);
  recorders.push(r);
  return (e) => r.record(e);
} });
await measure('+recording to SQLite', gw.port);
await gw.close();
await Promise.all(recorders.map((r) => r.flush()));
rmSync(dir, { recursive: true, force: true });
relay.close();
await pg.stop();
