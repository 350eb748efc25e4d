/** The CLI surface: lean start-up, help with exit codes, completions, config validation messages. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from './helpers/hoop.ts';

const TRACE = new URL('./helpers/trace-imports.mjs', import.meta.url).pathname;

function hoop(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function importsOf(args: string[]): string[] {
  const r = spawnSync(process.execPath, ['--import', TRACE, BIN, ...args], { encoding: 'utf8', env: { ...process.env, HOOP_USE_SRC: '1' } });
  const m = /__IMPORTS__(.*)/.exec(r.stderr);
  assert.ok(m, r.stderr);
  return JSON.parse(m[1]);
}

test('--version prints the package version', () => {
  const r = hoop(['--version']);
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
});

test('--help and --version load neither ink/react, openid-client nor the gateway', () => {
  for (const args of [['--help'], ['--version'], ['connect', '--help'], ['exec', '--help'], ['mcp', '--help']]) {
    const mods = importsOf(args);
    const heavy = mods.filter((u) => /\/node_modules\/(ink|react|openid-client|oidc-provider|libpg-query|ws|pino|ssh2|@modelcontextprotocol)\//.test(u) || /\/src\/gateway\//.test(u));
    assert.deepEqual(heavy, [], `${args.join(' ')} loaded ${heavy.join(', ')}`);
  }
});

test('--help lists the commands and the exit codes', () => {
  const r = hoop(['--help']);
  assert.equal(r.code, 0);
  for (const c of ['login', 'logout', 'whoami', 'connections|ls', 'connect', 'leases', 'revoke', 'gateway', 'demo', 'completion']) assert.match(r.stdout, new RegExp(`\\n  ${c.replace('|', '\\|')}\\b`));
  assert.match(r.stdout, /Exit codes:[\s\S]*7 gateway unreachable/);
});

test('unknown command and bad option are usage errors (exit 2)', () => {
  assert.equal(hoop(['frobnicate']).code, 2);
  assert.equal(hoop(['connect']).code, 2);
  assert.match(hoop(['conect', 'x']).stderr, /\(Did you mean connect\?\)/);
});

test('gateway unreachable: exit 7 with a hint', () => {
  const r = hoop(['login', '--client-credentials', '--gateway', 'http://127.0.0.1:65534'], { HOOP_CLIENT_ID: 'x', HOOP_CLIENT_SECRET: 'y', HOOP_CONFIG_DIR: mkdtempSync(join(tmpdir(), 'hoop-cli-')) });
  assert.equal(r.code, 7);
  assert.match(r.stderr, /gateway http:\/\/127\.0\.0\.1:65534 unreachable: ECONNREFUSED\n\s+is the gateway running\?/);
});

test('completion scripts are generated from the program and match completions/', () => {
  for (const shell of ['bash', 'zsh', 'fish']) {
    const r = hoop(['completion', shell]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /connections/);
    assert.match(r.stdout, shell === 'fish' ? /-l duration/ : /--duration/);
    const file = new URL(`../completions/hoopctl.${shell}`, import.meta.url);
    assert.equal(readFileSync(file, 'utf8'), r.stdout, `completions/hoopctl.${shell} is stale: regenerate with \`hoopctl completion ${shell}\``);
  }
  const bash = spawnSync('bash', ['-n'], { input: hoop(['completion', 'bash']).stdout, encoding: 'utf8' });
  assert.equal(bash.status, 0, bash.stderr);
  const r = spawnSync('bash', ['-c', `${hoop(['completion', 'bash']).stdout}\nCOMP_WORDS=(hoopctl con); COMP_CWORD=1; _hoopctl; echo "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
  assert.equal(r.stdout.trim(), 'connections connect');
  assert.equal(hoop(['completion', 'powershell']).code, 2);
});

// ---- config validation: each malformed config exits 2 naming the file, the key path and the problem ----

function checkConfig(yaml: string, env: NodeJS.ProcessEnv = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-cfg-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, yaml);
  const r = hoop(['gateway', '--config', file, '--check'], env);
  return { ...r, file, err: r.stderr.replace(file, 'FILE').trim() };
}

const AUTH = 'auth: { issuer: dev }\ndev_idp: { users: [{ username: a, password: a, groups: [eng] }] }\n';
const conn = (extra: string) => `${AUTH}connections:\n  - name: db\n    type: postgres\n    target: { host: 127.0.0.1, port: 5432, database: app, user: app, password_env: DB_PW }\n    access: { groups: [eng] }\n${extra}`;

const BAD: Array<[string, string, string, NodeJS.ProcessEnv?]> = [
  ['unknown type', `${AUTH}connections:\n  - { name: x, type: mysql, target: { port: 1 }, access: { groups: [a] } }\n`,
    'hoopctl: FILE: connections[0].type: must be one of "postgres", "ssh", "tcp", "http" (got "mysql")'],
  ['unknown key', `${AUTH}listen: 127.0.0.1:8009\nlisten_port: 8009\n`,
    'hoopctl: FILE: listen_port: unknown key (check the spelling; the keys are in docs/PRODUCT.md and the README)'],
  ['missing password env', conn(''),
    'hoopctl: FILE: connections[0].target.password_env: environment variable DB_PW is not set (the gateway reads the target\'s password from it)'],
  ['bad duration', conn('    lease: { default: 30 minutes, max: 2h }\n'),
    'hoopctl: FILE: connections[0].lease.default: lease.default must be a duration like 30s, 15m, 2h or 90d (got "30 minutes")', { DB_PW: 'x' }],
  ['default longer than max', conn('    lease: { default: 3h, max: 2h }\n'),
    'hoopctl: FILE: connections[0].lease.default: must not be longer than lease.max', { DB_PW: 'x' }],
  ['unknown guardrail', conn('    guardrails: { deny: [drop, nuke] }\n'),
    'hoopctl: FILE: connections[0].guardrails.deny[1]: must be one of', { DB_PW: 'x' }],
  ['bad regex', conn("    guardrails: { deny_patterns: ['pg_(read'] }\n"),
    'hoopctl: FILE: connections[0].guardrails.deny_patterns[0]: is not a valid regular expression', { DB_PW: 'x' }],
  ['dev issuer without dev_idp', 'auth: { issuer: dev }\n', 'hoopctl: FILE: dev_idp: is required when auth.issuer is "dev"'],
  ['missing auth', 'listen: 127.0.0.1:8009\n', 'hoopctl: FILE: auth: is required'],
  ['duplicate names', `${AUTH}connections:\n  - { name: x, type: tcp, target: { port: 1 }, access: { groups: [a] } }\n  - { name: x, type: tcp, target: { port: 2 }, access: { groups: [a] } }\n`,
    'hoopctl: FILE: connections[1].name: duplicate connection name "x" (also connections[0])'],
  ['postgres store without a database', `${AUTH}store: postgres://u:p@127.0.0.1\n`,
    'hoopctl: FILE: store: names no database: use postgres://user@host[:port]/database'],
  ['invalid YAML', 'auth: { issuer: dev\n', 'hoopctl: FILE: invalid YAML at line'],
  ['wrong type', `${AUTH}connections:\n  - { name: x, type: tcp, target: { port: "80" }, access: { groups: [a] } }\n`,
    'hoopctl: FILE: connections[0].target.port: must be a number (got "80")'],
  ['postgres without database', `${AUTH}connections:\n  - { name: x, type: postgres, target: { port: 5432, user: u }, access: { groups: [a] } }\n`,
    'hoopctl: FILE: connections[0].target.database: is required for type postgres (the database the gateway logs in to)'],
];

for (const [name, yaml, expected, env] of BAD) {
  test(`config: ${name} → exit 2 with the key path`, () => {
    const r = checkConfig(yaml, env);
    assert.equal(r.code, 2, r.stderr);
    assert.ok(r.err.startsWith(expected), `expected:\n${expected}\ngot:\n${r.err}`);
  });
}

test('config: a missing file names the file', () => {
  const r = hoop(['gateway', '--config', '/nonexistent/gateway.yaml']);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim(), 'hoopctl: /nonexistent/gateway.yaml: file not found');
});

test('config: a good config passes --check', () => {
  const r = checkConfig(conn('    masking: { columns: [email], detectors: [email, ssn] }\n'), { DB_PW: 'x' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /: ok \(1 connections\)/);
});

test('output into a closed pipe ends quietly with exit 0 (`hoopctl … | head -1`)', async () => {
  const { spawn } = await import('node:child_process');
  // a shell pipeline as users write it, and a reader that is gone before the first write
  const viaHead = spawnSync('bash', ['-c', `set -o pipefail; for i in 1 2 3 4 5; do '${process.execPath}' '${BIN}' completion zsh; done | head -c 10 >/dev/null; echo "\${PIPESTATUS[0]}"`], { encoding: 'utf8' });
  assert.doesNotMatch(viaHead.stderr, /EPIPE|Error|at /);
  const p = spawn(process.execPath, [BIN, 'completion', 'bash'], { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout.destroy();
  let err = '';
  p.stderr.on('data', (d) => { err += d; });
  const code = await new Promise((r) => p.on('close', r));
  assert.equal(code, 0, err);
  assert.doesNotMatch(err, /EPIPE|Error/);
});
