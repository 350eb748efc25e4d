/** `hoopctl demo`: one command brings up gateway, dev IdP and a seeded database; the printed next steps work. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, runCli, cliEnv } from './helpers/hoop.ts';
import { freePort } from './helpers/postgres.ts';

const exec = promisify(execFile);

/** `hoopctl demo` in a fresh folder, once it says it is running */
async function startDemo() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'hoop-demo-test-'));
  const proc = spawn(process.execPath, [BIN, 'demo', '--port', String(port), '--dir', dir], { env: { ...process.env, HOOP_LOG_LEVEL: 'warn', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const demo = { port, dir, proc, out: '', exited: new Promise<number | null>((r) => proc.on('close', r)) };
  proc.stdout.on('data', (d) => { demo.out += d; });
  proc.stderr.on('data', (d) => { demo.out += d; });
  const deadline = Date.now() + 90_000;
  while (!/hoopctl demo is running/.test(demo.out)) {
    if (Date.now() > deadline || proc.exitCode !== null) {
      proc.kill('SIGKILL');
      throw new Error(`demo did not start:\n${demo.out}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return demo;
}

test('demo: starts, prints the next commands, masks and blocks through a real psql, stops on Ctrl-C', async () => {
  const { port, dir, proc, exited, ...demo } = await startDemo();
  const out = demo.out;
  try {
    assert.match(out, new RegExp(`export HOOP_GATEWAY=http://127\\.0\\.0\\.1:${port}`));
    assert.match(out, /hoopctl login/);
    assert.match(out, /hoopctl connect customers/);
    const env = cliEnv(join(dir, 'home'), `http://127.0.0.1:${port}`, { HOOP_CLIENT_ID: 'ci-bot', HOOP_CLIENT_SECRET: 'ci-secret' });
    assert.equal((await runCli(['login', '--client-credentials'], env)).code, 0);
    const conns = JSON.parse((await runCli(['connections', '--json'], env)).stdout);
    assert.deepEqual(conns.map((c: { name: string }) => c.name), ['customers']);
    const local = await freePort();
    const connect = spawn(process.execPath, [BIN, 'connect', 'customers', '--port', String(local)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let cout = '';
    connect.stdout.on('data', (d) => { cout += d; });
    try {
      while (!/Try: psql "postgres:\/\/127\.0\.0\.1:\d+\/demo"/.test(cout)) await new Promise((r) => setTimeout(r, 100));
      const url = `postgres://anyone@127.0.0.1:${local}/demo`;
      const { stdout } = await exec('psql', ['-XAt', url, '-c', 'select name, email, ssn, card_number from customers order by id limit 1']);
      assert.match(stdout, /^Ada Lovelace\|/);
      assert.doesNotMatch(stdout, /ada@example\.com|123-45-6789|4111 1111 1111 1111/);
      const blocked = await exec('psql', ['-XAt', url, '-c', 'delete from customers']).then(() => null, (e: { stderr: string }) => e.stderr);
      assert.match(blocked ?? '', /blocked by guardrail rule "delete_without_where"/);
      // the printed review steps: an update is held, dba-bot approves it as the demo says
      assert.match(out, /hoopctl approve <review-id>/);
      const held = spawn('psql', ['-XAt', url, '-c', "update customers set phone = '555-0100' where id = 1 returning id"]);
      let herr = '';
      let hout = '';
      held.stderr.on('data', (d) => { herr += d; });
      held.stdout.on('data', (d) => { hout += d; });
      const heldDone = new Promise<number | null>((r) => held.on('close', r));
      while (!/hoopctl approve r_/.test(herr)) await new Promise((r) => setTimeout(r, 50));
      const id = /hoopctl approve (r_[a-z0-9]+)/.exec(herr)![1];
      const dba = cliEnv(join(dir, 'home-dba'), `http://127.0.0.1:${port}`, { HOOP_CLIENT_ID: 'dba-bot', HOOP_CLIENT_SECRET: 'dba-secret' });
      assert.equal((await runCli(['login', '--client-credentials'], dba)).code, 0);
      const ok = await runCli(['approve', id, '--reason', 'demo'], dba);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(await heldDone, 0, herr);
      assert.match(hout, /^1\nUPDATE 1/);
    } finally {
      connect.kill('SIGINT');
    }
  } finally {
    proc.kill('SIGINT');
    assert.equal(await exited, 0, out);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(!existsSync(dir));
});

test('demo: closing its terminal (SIGHUP) stops the gateway and the throwaway database too', async () => {
  const demo = await startDemo();
  try {
    const pidFile = join(demo.dir, 'postgres', 'pgdata', 'postmaster.pid');
    assert.ok(existsSync(pidFile), 'the demo database runs');
    demo.proc.kill('SIGHUP');
    assert.equal(await demo.exited, 0, demo.out);
    assert.ok(!existsSync(pidFile), 'the demo database was stopped');
  } finally {
    demo.proc.kill('SIGKILL');
    rmSync(demo.dir, { recursive: true, force: true });
  }
});

test('demo under `2>&1 | tee log` and Ctrl-C: the database stops and the demo\'s own folder is removed', async () => {
  const port = await freePort();
  const log = join(mkdtempSync(join(tmpdir(), 'hoop-demo-tee-')), 'demo.log');
  // its own process group, as a terminal's Ctrl-C reaches both demo and tee
  const sh = spawn('bash', ['-c', `'${process.execPath}' '${BIN}' demo --port ${port} 2>&1 | tee '${log}'`], { detached: true, stdio: 'ignore', env: { ...process.env, HOOP_LOG_LEVEL: 'warn', NO_COLOR: '1' } });
  const done = new Promise((r) => sh.on('close', r));
  const { readFileSync } = await import('node:fs');
  const text = () => { try { return readFileSync(log, 'utf8'); } catch { return ''; } };
  const deadline = Date.now() + 90_000;
  while (!/hoopctl demo is running/.test(text())) {
    assert.ok(Date.now() < deadline, `demo did not start: ${text()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const dir = /config (\/\S+)\/gateway\.yaml/.exec(text())![1];
  const pgPid = Number(readFileSync(join(dir, 'postgres', 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]);
  const alive = () => { try { process.kill(pgPid, 0); return true; } catch { return false; } };
  assert.ok(alive(), 'the demo database runs');
  process.kill(-sh.pid!, 'SIGINT');
  await done;
  for (let i = 0; i < 100 && (existsSync(dir) || alive()); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(!alive(), 'the demo database was stopped');
  assert.ok(!existsSync(dir), 'the folder the demo made is gone');
});
