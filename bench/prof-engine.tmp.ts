import { execFile } from 'node:child_process';
import { startPostgres } from '../test/helpers/postgres.ts';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startGateway } from '../test/helpers/pg-engine.ts';
import { SqliteStore } from '../src/gateway/store/sqlite-store.ts';
import { Recorder } from '../src/gateway/recording/recorder.ts';
const T = Number(process.argv[2] ?? 8); const C = Number(process.argv[3] ?? 16);
const pg = await startPostgres({ auth: 'scram-sha-256' });
await new Promise<void>((resolve, reject) => execFile('pgbench', ['-q', '-i', '-s', '2', '-h', '127.0.0.1', '-p', String(pg.port), '-U', 'app', 'app'],
  { env: { ...process.env, PGPASSWORD: 'app-secret' } }, (err, _o, e) => (err ? reject(new Error(e)) : resolve())));
const dir = mkdtempSync(join(tmpdir(), 'hoop-inproc-'));
const store = new SqliteStore(join(dir, 'hoop.db'));
const log = pino({ level: 'silent' });
const gw = await startGateway(pg, { recording: { results: true }, guardrails: { deny: ['drop', 'truncate', 'delete_without_where', 'update_without_where'], deny_patterns: ['pg_read_file'] }, masking: { columns: ['email', '*ssn*', 'card_number'], detectors: ['email', 'credit_card', 'ssn'] }, password: 'app-secret', recorder: (id) => { const r = new Recorder(id, store, log); return (e) => r.record(e); } });
const u0 = process.cpuUsage();
const tps = await new Promise<number>((resolve) => execFile('pgbench', ['-n', '-S', '-c', String(C), '-j', '2', '-T', String(T), '-h', '127.0.0.1', '-p', String(gw.port), '-U', 'app', 'app'],
    { env: { ...process.env, PGPASSWORD: 'app-secret' } }, (_err, out) => resolve(Number(/tps = ([\d.]+)/.exec(String(out))?.[1] ?? NaN))));
const u = process.cpuUsage(u0);
console.log(`c${C} ${tps.toFixed(0)} tps ${((u.user + u.system) / (tps * T)).toFixed(1)} µs/tx user ${(u.user / (tps * T)).toFixed(1)}`);
await gw.close(); await pg.stop(); process.exit(0);
