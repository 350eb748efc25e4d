/**
 * Issue 2: identity end to end — device flow through the real CLI and the embedded dev IdP
 * (forms completed over HTTP), refresh near expiry, client credentials, HOOP_TOKEN, logout,
 * token verification negatives against a running gateway, groups filtering, keychain fallback.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createHmac } from 'node:crypto';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';
import { completeDeviceFlow } from './helpers/device-flow.ts';

let gw: GatewayProc;

const tcp = (name: string, groups: string[]) => ({ name, type: 'tcp', target: { host: '127.0.0.1', port: 9 }, access: { groups } });

before(async () => {
  gw = await startGatewayProc((c) => {
    (c.dev_idp as Record<string, unknown>).access_token_ttl = '8s';
    c.connections = [tcp('eng-db', ['eng']), tcp('ci-db', ['ci', 'eng']), tcp('dba-db', ['dba'])];
  });
});
after(async () => { await gw?.stop(); });

const tokensOf = (home: string) => JSON.parse(readFileSync(join(gw.home(home), 'tokens.json'), 'utf8'))[gw.url];

async function deviceLogin(home: string, user: string, password: string, opts: { deny?: boolean } = {}) {
  const login = gw.spawnCli(['login', '--no-browser'], { home });
  const [, uri, code] = await login.waitFor(/open (\S+) and enter the code (\S+)/);
  await completeDeviceFlow({ uri, userCode: code }, user, password, opts);
  return login.exited;
}

test('device flow: CLI login completed in the dev IdP forms, whoami shows user and groups', async () => {
  const r = await deviceLogin('alice', 'alice', 'alice');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Logged in to .* as alice \(groups: eng\)/);
  const who = await gw.cli(['whoami', '--json'], { home: 'alice' });
  assert.equal(who.code, 0, who.stderr);
  const me = JSON.parse(who.stdout);
  assert.equal(me.sub, 'alice');
  assert.deepEqual(me.groups, ['eng']);
  assert.equal(me.gateway, gw.url);
  assert.ok(Date.parse(me.expires_at) > Date.now());
});

test('on a terminal under CI=true, login prints plain lines (ink would hide the code until the end)', async (t) => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const exec = promisify(execFile);
  try { await exec('tmux', ['-V']); } catch { t.skip('tmux is not installed'); return; }
  const session = `hooplogin-ci${process.pid}`;
  const env = { CI: 'true', HOOP_CONFIG_DIR: gw.home('tty-ci'), HOOP_GATEWAY: gw.url, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent' };
  const envArgs = Object.entries(env).map(([k, v]) => `${k}='${v}'`).join(' ');
  const bin = new URL('../bin/hoopctl', import.meta.url).pathname;
  await exec('tmux', ['new-session', '-d', '-s', session, '-x', '150', '-y', '20', `env ${envArgs} '${process.execPath}' '${bin}' login --no-browser; sleep 30`]);
  try {
    let s = '';
    for (let i = 0; i < 150 && !/Waiting for approval/.test(s); i++) {
      s = (await exec('tmux', ['capture-pane', '-p', '-t', session])).stdout;
      await new Promise((r) => setTimeout(r, 100));
    }
    const m = s.match(/To log in, open (http\S+) and enter the code (\S+)/);
    assert.ok(m, `plain login lines expected on the screen:\n${s}`);
    await completeDeviceFlow({ uri: m[1]!, userCode: m[2]! }, 'alice', 'alice');
    for (let i = 0; i < 150 && !/Logged in to/.test(s); i++) {
      s = (await exec('tmux', ['capture-pane', '-p', '-t', session])).stdout;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(s, /Logged in to .* as alice/);
  } finally {
    await exec('tmux', ['kill-session', '-t', session]).catch(() => {});
  }
});

test('device flow on a terminal (tmux): the ink view shows URL and code, then the login completes', async (t) => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const exec = promisify(execFile);
  try { await exec('tmux', ['-V']); } catch { t.skip('tmux is not installed'); return; }
  const session = `hooplogin${process.pid}`;
  const env = { HOOP_CONFIG_DIR: gw.home('tty'), HOOP_GATEWAY: gw.url, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent' };
  const envArgs = Object.entries(env).map(([k, v]) => `${k}='${v}'`).join(' ');
  const bin = new URL('../bin/hoopctl', import.meta.url).pathname;
  await exec('tmux', ['new-session', '-d', '-s', session, '-x', '150', '-y', '20', `env -u CI -u CONTINUOUS_INTEGRATION ${envArgs} '${process.execPath}' '${bin}' login --no-browser; sleep 30`]);
  const screen = async () => (await exec('tmux', ['capture-pane', '-p', '-t', session]).catch((e) => ({ stdout: String(e.stderr) }))).stdout;
  const waitFor = async (re: RegExp) => {
    for (let i = 0; i < 150; i++) { const s = await screen(); const m = s.match(re); if (m) return m; await new Promise((r) => setTimeout(r, 100)); }
    throw new Error(`screen never matched ${re}:\n${await screen()}`);
  };
  try {
    const [, uri] = await waitFor(/Open (http\S+)/);
    const [, code] = await waitFor(/enter the code (\S+)/);
    await waitFor(/waiting for approval/);
    await completeDeviceFlow({ uri, userCode: code }, 'bob', 'bob');
    await waitFor(/Logged in to .* as bob \(groups: dba, sec-admins\)/);
  } finally {
    await exec('tmux', ['kill-session', '-t', session]).catch(() => {});
  }
  const who = JSON.parse((await gw.cli(['whoami', '--json'], { home: 'tty' })).stdout);
  assert.equal(who.sub, 'bob');
});

test('device flow: access token refreshed with the refresh token before it expires', async () => {
  const r = await deviceLogin('refresher', 'alice', 'alice');
  assert.equal(r.code, 0, r.stderr);
  const first = tokensOf('refresher');
  assert.ok(first.refresh_token, 'a refresh token is stored');
  // the 8 s TTL is inside the refresh margin: the next command refreshes; after the first
  // token's expiry the CLI still works without a new login
  await new Promise((res) => setTimeout(res, 9000));
  const who = await gw.cli(['whoami', '--json'], { home: 'refresher' });
  assert.equal(who.code, 0, who.stderr);
  assert.equal(JSON.parse(who.stdout).sub, 'alice');
  const second = tokensOf('refresher');
  assert.notEqual(second.access_token, first.access_token);
  assert.ok(second.expires_at > first.expires_at);
});

test('device flow: denial in the browser gives exit 3 and a clear message', async () => {
  const r = await deviceLogin('denied', 'alice', 'alice', { deny: true });
  assert.equal(r.code, 3);
  assert.match(r.stderr, /login failed: login was denied/);
});

test('device flow: wrong password is refused by the form; login still pending', async () => {
  const login = gw.spawnCli(['login', '--no-browser'], { home: 'wrongpw' });
  const [, uri, code] = await login.waitFor(/open (\S+) and enter the code (\S+)/);
  await assert.rejects(completeDeviceFlow({ uri, userCode: code }, 'alice', 'nope'), /sign in as alice/);
  login.kill('SIGKILL');
});

test('client credentials login, whoami, and keychain fallback to a 0600 file with a warning', async () => {
  const r = await gw.cli(['login', '--client-credentials'], { home: 'ci', env: { HOOP_CLIENT_ID: 'ci-bot', HOOP_CLIENT_SECRET: 'ci-secret' } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^warning: no OS keychain available; token stored in plain text in .*tokens\.json \(mode 0600\)$/m);
  const st = statSync(join(gw.home('ci'), 'tokens.json'));
  assert.equal(st.mode & 0o777, 0o600);
  const who = JSON.parse((await gw.cli(['whoami', '--json'], { home: 'ci' })).stdout);
  assert.equal(who.sub, 'ci-bot');
  assert.deepEqual(who.groups, ['ci']);
});

test('client credentials with a wrong secret: exit 3', async () => {
  const r = await gw.cli(['login', '--client-credentials'], { home: 'badci', env: { HOOP_CLIENT_ID: 'ci-bot', HOOP_CLIENT_SECRET: 'wrong' } });
  assert.equal(r.code, 3);
  assert.match(r.stderr, /client credentials login failed: invalid_client/);
});

test('not logged in: exit 3 with what to do', async () => {
  const r = await gw.cli(['whoami'], { home: 'nobody' });
  assert.equal(r.code, 3);
  assert.match(r.stderr, /not logged in to http:\/\/127\.0\.0\.1:\d+\n\s+run `hoopctl login/);
});

test('HOOP_TOKEN overrides the stored login', async () => {
  await loginClient(gw, 'dba', 'dba-bot', 'dba-secret');
  const dbaToken = tokensOf('dba').access_token;
  const r = await gw.cli(['whoami', '--json'], { home: 'ci', env: { HOOP_TOKEN: dbaToken } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).sub, 'dba-bot');
});

test('connections are filtered by access.groups', async () => {
  await loginClient(gw, 'ci2', 'ci-bot', 'ci-secret');
  const ci = JSON.parse((await gw.cli(['connections', '--json'], { home: 'ci2' })).stdout).map((c: { name: string }) => c.name);
  assert.deepEqual(ci, ['ci-db']);
  const dba = JSON.parse((await gw.cli(['ls', '--json'], { home: 'dba' })).stdout).map((c: { name: string }) => c.name);
  assert.deepEqual(dba, ['dba-db']);
  const alice = JSON.parse((await gw.cli(['connections', '--json'], { home: 'alice' })).stdout).map((c: { name: string }) => c.name);
  assert.deepEqual(alice.sort(), ['ci-db', 'eng-db']);
  const table = await gw.cli(['connections'], { home: 'ci2' });
  assert.match(table.stdout, /^NAME\s+TYPE\s+REVIEW\s+MAX_LEASE\nci-db\s+tcp\s+no\s+2h\n$/);
});

test('logout deletes the stored tokens (and revokes the refresh token)', async () => {
  const r = await deviceLogin('leaver', 'bob', 'bob');
  assert.equal(r.code, 0, r.stderr);
  const refresh = tokensOf('leaver').refresh_token;
  const out = await gw.cli(['logout', '--json'], { home: 'leaver' });
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual(JSON.parse(out.stdout), { gateway: gw.url, logged_out: true, revoked: true, gateway_refuses_token: true });
  assert.equal(tokensOf('leaver'), undefined);
  assert.equal((await gw.cli(['whoami'], { home: 'leaver' })).code, 3);
  // the revoked refresh token no longer works at the issuer
  const res = await fetch(`${gw.url}/oidc/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refresh, client_id: 'hoopctl' }) });
  assert.equal(res.status, 400);
  assert.equal((await res.json() as any).error, 'invalid_grant');
});

// ---- token verification at the gateway: every bad token is a 401 with a clear JSON error ----

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

async function whoamiWith(token: string) {
  const r = await fetch(`${gw.url}/api/whoami`, { headers: { authorization: `Bearer ${token}` } });
  return { status: r.status, body: await r.json() as { error: string; message: string } };
}

test('token negatives: garbage, alg none, HS256, bad signature, expired, wrong issuer/audience → 401', async () => {
  await loginClient(gw, 'neg', 'ci-bot', 'ci-secret');
  const good = tokensOf('neg').access_token as string;
  const [h, p, s] = good.split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());

  const cases: Array<[string, string, RegExp]> = [
    ['garbage', 'not-a-jwt', /token_malformed/],
    ['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${p}.`, /token_alg_not_allowed/],
    ['HS256', (() => { const hp = `${b64({ alg: 'HS256', typ: 'JWT' })}.${p}`; return `${hp}.${createHmac('sha256', 'secret').update(hp).digest('base64url')}`; })(), /token_alg_not_allowed/],
    ['bad signature', `${h}.${p}.${s.slice(0, -4)}${s.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`, /token_invalid_signature/],
    ['tampered claims', `${h}.${b64({ ...claims, groups: ['dba'] })}.${s}`, /token_invalid_signature/],
  ];
  for (const [name, token, code] of cases) {
    const r = await whoamiWith(token);
    assert.equal(r.status, 401, name);
    assert.match(r.body.error, code, `${name}: ${JSON.stringify(r.body)}`);
    assert.ok(r.body.message.length > 10, name);
  }
  // missing header
  const none = await fetch(`${gw.url}/api/whoami`);
  assert.equal(none.status, 401);
  assert.equal((await none.json() as any).error, 'token_missing');

  // expired: the 8 s token, after its expiry (+ the verifier's 30 s clock tolerance is not used here: wait for it)
  const expired = good;
  const wait = claims.exp * 1000 + 31_000 - Date.now();
  // wrong issuer and wrong audience need second gateways
  const other = await startGatewayProc((c) => { c.auth.client_id = 'hoopctl'; });
  const strict = await startGatewayProc((c) => {
    (c.auth as Record<string, unknown>).issuer = `${gw.url}/oidc`;
    (c.auth as Record<string, unknown>).audience = 'https://another-gateway.example';
    delete (c as Record<string, unknown>).dev_idp;
  });
  try {
    await loginClient(other, 'x', 'ci-bot', 'ci-secret');
    const foreign = JSON.parse(readFileSync(join(other.home('x'), 'tokens.json'), 'utf8'))[other.url].access_token;
    const wi = await whoamiWith(foreign);
    assert.equal(wi.status, 401);
    assert.match(wi.body.error, /token_wrong_issuer|token_invalid_signature/);
    const wa = await fetch(`${strict.url}/api/whoami`, { headers: { authorization: `Bearer ${good}` } });
    assert.equal(wa.status, 401);
    assert.equal((await wa.json() as any).error, 'token_wrong_audience');
  } finally {
    await other.stop();
    await strict.stop();
  }
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const ex = await whoamiWith(expired);
  assert.equal(ex.status, 401);
  assert.equal(ex.body.error, 'token_expired');
  // and the gateway is still up
  assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
});
