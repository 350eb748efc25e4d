/**
 * Installing hoopctl as a user would (issue 13): `npm pack` (its prepack builds dist/), then
 * `npm install -g` of the tarball into a temporary prefix, then the installed command runs from
 * node_modules, where Node cannot strip types: it must use the built JavaScript.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const exec = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;

test('npm pack + npm install -g: the installed hoopctl runs --version, completion, gateway --check', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'hoop-install-'));
  try {
    const { stdout } = await exec('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
    const [packed] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = packed.files.map((f) => f.path);
    assert.ok(files.includes('dist/cli/main.js'), 'the tarball carries the built JavaScript');
    assert.ok(files.includes('bin/hoopctl'));
    assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('.ci/')));
    assert.ok(!existsSync(join(ROOT, 'dist')), 'postpack leaves no dist/ behind in the checkout');
    const prefix = join(tmp, 'prefix');
    await exec('npm', ['install', '-g', '--prefix', prefix, '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', join(tmp, packed.filename)], { maxBuffer: 64 * 1024 * 1024, timeout: 240_000 });
    const bin = join(prefix, 'bin', 'hoopctl');
    const run = (args: string[]) => exec(bin, args, { env: { ...process.env, HOOP_CONFIG_DIR: join(tmp, 'home') } });
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
    assert.equal((await run(['--version'])).stdout.trim(), version);
    assert.match((await run(['completion', 'bash'])).stdout, /complete -F/);
    const cfg = join(tmp, 'gateway.yaml');
    writeFileSync(cfg, 'auth: { issuer: dev }\ndev_idp: { users: [{ username: a, password: a }] }\nconnections: []\n');
    assert.match((await run(['gateway', '--check', '--config', cfg])).stdout, /ok \(0 connections\)/);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('bin/hoopctl refuses a Node older than its floor, naming it', async () => {
  const src = readFileSync(join(ROOT, 'bin', 'hoopctl'), 'utf8');
  const floor = /const FLOOR = \[(\d+), (\d+)\]/.exec(src);
  assert.ok(floor);
  assert.equal(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).engines.node, `>=${floor[1]}.${floor[2]}`, 'engines and the launcher agree');
  // the machine's own old Node, when there is one (Debian's is 18/20)
  const old = ['/usr/bin/node', '/usr/local/bin/node'].find((p) => existsSync(p));
  if (!old) return;
  const v = (await exec(old, ['--version'])).stdout.trim();
  const [maj, min] = v.slice(1).split('.').map(Number);
  if (maj > Number(floor[1]) || (maj === Number(floor[1]) && min >= Number(floor[2]))) return;
  const r = await exec(old, [join(ROOT, 'bin', 'hoopctl'), '--version']).then(() => null, (e: { code: number; stderr: string }) => e);
  assert.equal(r?.code, 2);
  assert.match(r!.stderr, new RegExp(`needs Node\\.js >= ${floor[1]}\\.${floor[2]} \\(this is ${v.replace(/\./g, '\\.')}\\)`));
});
