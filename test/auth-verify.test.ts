/**
 * The embedded dev IdP and the gateway's token verifier, end to end over real HTTP: a
 * node:http server mounts only the dev IdP under /oidc (as the gateway does), tokens come from
 * its real endpoints, and the browser step of the device flow is driven through its HTML forms.
 * Also proves the openid-client 6 calls the CLI makes work against it.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, statSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, UnsecuredJWT, decodeJwt } from 'jose';
import * as client from 'openid-client';
import { parseConfig, type GatewayConfig } from '../src/gateway/config/load.ts';
import { createDevIdp, type DevIdp, type DevIdpOptions } from '../src/gateway/idp/dev-idp.ts';
import { createTokenVerifier, readGroups, type TokenVerifierOptions } from '../src/gateway/auth/verify.ts';
import { AuthError } from '../src/errors.ts';
import { pino } from 'pino';
import { completeDeviceFlow, openLoginPage, Browser, pageName, pageError } from './helpers/device-flow.ts';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const silent = pino({ level: 'silent' });

interface Running { url: string; idp: DevIdp; cfg: GatewayConfig; server: http.Server; close(): Promise<void> }

/** A node:http server that mounts the dev IdP the way the gateway does. */
async function startIdp(devIdpExtra = '', opts: DevIdpOptions = {}, publicUrl?: string): Promise<Running> {
  let idp: DevIdp | undefined;
  const server = http.createServer((req, res) => {
    if (idp && (req.url === '/oidc' || req.url?.startsWith('/oidc/') || req.url?.startsWith('/oidc?'))) return idp.handle(req, res);
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const cfg = parseConfig(`
listen: 127.0.0.1:${port}
${publicUrl ? `public_url: ${publicUrl}` : ''}
auth: { issuer: dev, client_id: hoopctl, groups_claim: groups }
dev_idp:
  users:
    - { username: alice, password: alice-pw, groups: [eng] }
    - { username: bob, password: bob-pw, groups: [dba, oncall], email: bob@example.com }
  clients:
    - { client_id: ci-bot, client_secret: ci-secret, groups: [ci] }
${devIdpExtra}
`, 'auth-verify.yaml', {});
  idp = await createDevIdp(cfg, { logger: silent, ...opts });
  return {
    url: `http://127.0.0.1:${port}`, idp, cfg, server,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await idp?.close();
    },
  };
}

async function post(url: string, form: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(form) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` });

async function clientCredentialsToken(r: Running): Promise<string> {
  const { status, body } = await post(`${r.idp.issuer}/token`, { grant_type: 'client_credentials' }, basic('ci-bot', 'ci-secret'));
  assert.equal(status, 200, JSON.stringify(body));
  return body.access_token as string;
}

async function deviceLogin(r: Running, username: string, password: string): Promise<Record<string, unknown>> {
  const da = await post(`${r.idp.issuer}/device/auth`, { client_id: 'hoopctl', scope: 'openid offline_access' });
  assert.equal(da.status, 200, JSON.stringify(da.body));
  await completeDeviceFlow(da.body.verification_uri_complete as string, username, password);
  const tok = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: da.body.device_code as string, client_id: 'hoopctl' });
  assert.equal(tok.status, 200, JSON.stringify(tok.body));
  return tok.body;
}

function verifierFor(r: Running, extra: Partial<TokenVerifierOptions> = {}) {
  return createTokenVerifier({ issuer: r.idp.issuer, audience: r.cfg.audience, groupsClaim: 'groups', ...extra });
}

async function rejects(p: Promise<unknown>, code: string, message?: RegExp): Promise<AuthError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof AuthError, `expected AuthError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected AuthError ${code}, but the token verified`);
}

describe('dev IdP + token verifier', () => {
  let r: Running;
  before(async () => {
    r = await startIdp();
  });
  after(async () => {
    await r.close();
  });

  test('discovery is served under /oidc with the endpoints the CLI needs', async () => {
    const res = await fetch(`${r.url}/oidc/.well-known/openid-configuration`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as Record<string, unknown>;
    assert.equal(doc.issuer, `${r.url}/oidc`);
    assert.equal(doc.token_endpoint, `${r.url}/oidc/token`);
    assert.equal(doc.device_authorization_endpoint, `${r.url}/oidc/device/auth`);
    assert.equal(doc.revocation_endpoint, `${r.url}/oidc/token/revocation`);
    assert.equal(doc.jwks_uri, `${r.url}/oidc/jwks`);
    assert.ok((doc.grant_types_supported as string[]).includes(DEVICE_GRANT));
    assert.ok((doc.grant_types_supported as string[]).includes('client_credentials'));
  });

  test('client credentials (basic and post) give a JWT with sub = client_id and the client groups', async () => {
    const v = verifierFor(r);
    const id = await v.verify(await clientCredentialsToken(r));
    assert.equal(id.sub, 'ci-bot');
    assert.deepEqual(id.groups, ['ci']);
    assert.equal(id.clientId, 'ci-bot');
    assert.ok(id.exp && id.exp * 1000 > Date.now());

    const viaPost = await post(`${r.idp.issuer}/token`, { grant_type: 'client_credentials', client_id: 'ci-bot', client_secret: 'ci-secret' });
    assert.equal(viaPost.status, 200, JSON.stringify(viaPost.body));
    const header = JSON.parse(Buffer.from((viaPost.body.access_token as string).split('.')[0], 'base64url').toString()) as { alg: string };
    assert.equal(header.alg, 'RS256');
    assert.equal((await v.verify(viaPost.body.access_token as string)).sub, 'ci-bot');

    const wrong = await post(`${r.idp.issuer}/token`, { grant_type: 'client_credentials' }, basic('ci-bot', 'nope'));
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error, 'invalid_client');
  });

  test('device flow: pending until approved, then a JWT with the user groups and a rotating refresh token', async () => {
    const da = await post(`${r.idp.issuer}/device/auth`, { client_id: 'hoopctl', scope: 'openid offline_access' });
    assert.equal(da.status, 200);
    assert.match(da.body.user_code as string, /^[A-Z]{4}-[A-Z]{4}$/);
    assert.equal(da.body.interval, 1);
    const pending = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: da.body.device_code as string, client_id: 'hoopctl' });
    assert.equal(pending.body.error, 'authorization_pending');

    await completeDeviceFlow(da.body.verification_uri_complete as string, 'alice', 'alice-pw');
    const tok = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: da.body.device_code as string, client_id: 'hoopctl' });
    assert.equal(tok.status, 200, JSON.stringify(tok.body));
    const v = verifierFor(r);
    const id = await v.verify(tok.body.access_token as string);
    assert.equal(id.sub, 'alice');
    assert.deepEqual(id.groups, ['eng']);
    assert.equal(id.clientId, 'hoopctl');
    assert.deepEqual(decodeJwt(tok.body.id_token as string).groups, ['eng']);
    assert.equal(typeof tok.body.refresh_token, 'string');

    const refreshed = await post(`${r.idp.issuer}/token`, { grant_type: 'refresh_token', refresh_token: tok.body.refresh_token as string, client_id: 'hoopctl' });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.notEqual(refreshed.body.access_token, tok.body.access_token);
    const id2 = await v.verify(refreshed.body.access_token as string);
    assert.equal(id2.sub, 'alice');
    assert.deepEqual(id2.groups, ['eng']);
    assert.notEqual(refreshed.body.refresh_token, tok.body.refresh_token, 'refresh tokens rotate');
    const reused = await post(`${r.idp.issuer}/token`, { grant_type: 'refresh_token', refresh_token: tok.body.refresh_token as string, client_id: 'hoopctl' });
    assert.equal(reused.body.error, 'invalid_grant', 'a rotated refresh token is dead');
  });

  test('a replayed device code is refused and revokes what it issued', async () => {
    const da = await post(`${r.idp.issuer}/device/auth`, { client_id: 'hoopctl', scope: 'openid offline_access' });
    await completeDeviceFlow(da.body.verification_uri_complete as string, 'alice', 'alice-pw');
    const tok = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: da.body.device_code as string, client_id: 'hoopctl' });
    assert.equal(tok.status, 200);
    const again = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: da.body.device_code as string, client_id: 'hoopctl' });
    assert.equal(again.body.error, 'invalid_grant');
    const refreshed = await post(`${r.idp.issuer}/token`, { grant_type: 'refresh_token', refresh_token: tok.body.refresh_token as string, client_id: 'hoopctl' });
    assert.equal(refreshed.body.error, 'invalid_grant');
  });

  test('device flow by typing the code at verification_uri, as another user', async () => {
    const da = await post(`${r.idp.issuer}/device/auth`, { client_id: 'hoopctl' });
    await completeDeviceFlow({ uri: da.body.verification_uri as string, userCode: (da.body.user_code as string).toLowerCase().replace('-', ' ') }, 'bob', 'bob-pw');
    const tok = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: da.body.device_code as string, client_id: 'hoopctl' });
    assert.equal(tok.status, 200, JSON.stringify(tok.body));
    const id = await verifierFor(r).verify(tok.body.access_token as string);
    assert.equal(id.sub, 'bob');
    assert.deepEqual(id.groups, ['dba', 'oncall']);
    assert.equal(typeof tok.body.refresh_token, 'string', 'the CLI gets a refresh token even without offline_access');
  });

  test('wrong password re-renders the login form; the same browser can retry', async () => {
    const da = await post(`${r.idp.issuer}/device/auth`, { client_id: 'hoopctl' });
    await assert.rejects(completeDeviceFlow(da.body.verification_uri_complete as string, 'alice', 'wrong'), /sign in as alice.*"login" \(HTTP 401\): Wrong username or password/);
    // The first browser confirmed the code, so it is in flight: another browser cannot take it over.
    await assert.rejects(completeDeviceFlow(da.body.verification_uri_complete as string, 'alice', 'alice-pw'), /already used/);
    const pending = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: da.body.device_code as string, client_id: 'hoopctl' });
    assert.equal(pending.body.error, 'authorization_pending');

    const da2 = await post(`${r.idp.issuer}/device/auth`, { client_id: 'hoopctl' });
    const browser = new Browser();
    let page = await openLoginPage(browser, da2.body.verification_uri_complete as string);
    assert.ok(page);
    for (const [username, password] of [['mallory', 'alice-pw'], ['alice', 'bob-pw'], ['alice', '']]) {
      page = await browser.submit(page, (f) => f.id === 'login', { username, password, action: 'login' });
      assert.equal(page.status, 401);
      assert.equal(pageName(page.html), 'login');
      assert.equal(pageError(page.html), 'Wrong username or password.');
    }
    page = await browser.submit(page, (f) => f.id === 'login', { username: 'alice', password: 'alice-pw', action: 'login' });
    assert.equal(pageName(page.html), 'success');
    const tok = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: da2.body.device_code as string, client_id: 'hoopctl' });
    assert.equal((await verifierFor(r).verify(tok.body.access_token as string)).sub, 'alice');
  });

  test('deny on the confirm page and cancel on the login page give access_denied', async () => {
    const denied = await post(`${r.idp.issuer}/device/auth`, { client_id: 'hoopctl' });
    await completeDeviceFlow(denied.body.verification_uri_complete as string, 'alice', 'alice-pw', { deny: true });
    const tok = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: denied.body.device_code as string, client_id: 'hoopctl' });
    assert.equal(tok.status, 400);
    assert.equal(tok.body.error, 'access_denied');

    const cancelled = await post(`${r.idp.issuer}/device/auth`, { client_id: 'hoopctl' });
    const browser = new Browser();
    const login = await openLoginPage(browser, cancelled.body.verification_uri_complete as string);
    assert.ok(login);
    const page = await browser.submit(login, (f) => f.id === 'login', { action: 'cancel' });
    assert.equal(pageName(page.html), 'denied');
    const tok2 = await post(`${r.idp.issuer}/token`, { grant_type: DEVICE_GRANT, device_code: cancelled.body.device_code as string, client_id: 'hoopctl' });
    assert.equal(tok2.body.error, 'access_denied');
  });

  test('unknown and expired-looking pages answer with HTML errors, not crashes', async () => {
    const res = await fetch(`${r.idp.issuer}/interaction/nope`);
    assert.equal(res.status, 400);
    assert.match(await res.text(), /data-page="error"/);
    const browser = new Browser();
    const bad = await browser.request(`${r.idp.issuer}/device?user_code=ZZZZ-ZZZZ`);
    const page = await browser.submit(bad, () => true);
    assert.equal(pageName(page.html), 'enter-code');
    assert.match(pageError(page.html), /not valid/);
    assert.equal((await fetch(`${r.url}/oidcx`)).status, 404);
  });

  test('revoking the refresh token (hoopctl logout) stops refreshes', async () => {
    const tok = await deviceLogin(r, 'alice', 'alice-pw');
    const res = await fetch(`${r.idp.issuer}/token/revocation`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: tok.refresh_token as string, client_id: 'hoopctl' }) });
    assert.equal(res.status, 200);
    const refreshed = await post(`${r.idp.issuer}/token`, { grant_type: 'refresh_token', refresh_token: tok.refresh_token as string, client_id: 'hoopctl' });
    assert.equal(refreshed.body.error, 'invalid_grant');
  });

  test('verified tokens are cached: no second key fetch, same identity', async () => {
    let fetches = 0;
    const counting: typeof fetch = (input, init) => {
      fetches++;
      return fetch(input, init);
    };
    const v = verifierFor(r, { fetch: counting });
    const t = await clientCredentialsToken(r);
    const a = await v.verify(t);
    const n = fetches;
    assert.equal(n, 2, 'one discovery, one JWKS fetch');
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) await v.verify(t);
    assert.ok(performance.now() - t0 < 500, 'cached verification is fast');
    assert.equal(fetches, n);
    const t2 = await clientCredentialsToken(r);
    assert.equal((await v.verify(t2)).sub, a.sub);
    assert.equal(fetches, n, 'a new token with a known kid needs no fetch');
  });

  test('local JWKS from the DevIdp verifies without HTTP', async () => {
    const v = verifierFor(r, { jwks: r.idp.jwks, fetch: () => Promise.reject(new Error('no HTTP expected')) });
    assert.deepEqual((await v.verify(await clientCredentialsToken(r))).groups, ['ci']);
    assert.ok(r.idp.jwks.keys.every((k) => k.d === undefined && k.p === undefined), 'no private members leak');
  });

  describe('rejections', () => {
    test('missing and garbage tokens', async () => {
      const v = verifierFor(r);
      await rejects(v.verify(''), 'token_missing', /hoopctl login/);
      await rejects(v.verify('not-a-token'), 'token_malformed');
      await rejects(v.verify('a.b.c'), 'token_malformed');
      await rejects(v.verify('eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOjF9'), 'token_malformed');
    });

    test('wrong audience', async () => {
      const v = verifierFor(r, { audience: 'https://other-gateway.example' });
      await rejects(v.verify(await clientCredentialsToken(r)), 'token_wrong_audience', /other-gateway/);
    });

    test('wrong issuer: a token from another dev IdP', async () => {
      const other = await startIdp();
      try {
        const foreign = await clientCredentialsToken(other);
        const err = await rejects(verifierFor(r).verify(foreign), 'token_wrong_issuer', new RegExp(other.url.replace(/[.]/g, '\\.')));
        assert.equal(err.status, 401);
      } finally {
        await other.close();
      }
    });

    test('right issuer name, key it does not publish', async () => {
      // A second IdP claiming the same issuer URL with its own key: a forgery the kid gives away.
      const impostor = await startIdp('', {}, r.url);
      try {
        const forged = await post(`${impostor.url}/oidc/token`, { grant_type: 'client_credentials' }, basic('ci-bot', 'ci-secret'));
        assert.equal(decodeJwt(forged.body.access_token as string).iss, r.idp.issuer);
        await rejects(verifierFor(r).verify(forged.body.access_token as string), 'token_invalid_signature');
      } finally {
        await impostor.close();
      }
    });

    test('altered signature and altered payload', async () => {
      const t = await clientCredentialsToken(r);
      const [h, p, s] = t.split('.');
      const sig = Buffer.from(s, 'base64url');
      sig[10] ^= 0x01;
      await rejects(verifierFor(r).verify(`${h}.${p}.${sig.toString('base64url')}`), 'token_invalid_signature');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
      claims.groups = ['sec-admins'];
      await rejects(verifierFor(r).verify(`${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`), 'token_invalid_signature');
    });

    test('alg none and HS256 are refused', async () => {
      const claims = { iss: r.idp.issuer, aud: r.cfg.audience, sub: 'alice', groups: ['sec-admins'] };
      const unsigned = new UnsecuredJWT(claims).setIssuedAt().setExpirationTime('5m').encode();
      await rejects(verifierFor(r).verify(unsigned), 'token_alg_not_allowed', /"none"/);
      const hs = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode('ci-secret-ci-secret-ci-secret-32b'));
      await rejects(verifierFor(r).verify(hs), 'token_alg_not_allowed', /HS256/);
    });

    test('expired token (2s TTL from config)', async () => {
      // 2 s, not 1: exp has whole-second granularity, so a 1 s token can be expired on arrival
      const short = await startIdp('  access_token_ttl: 2s');
      try {
        const v = verifierFor(short, { clockTolerance: 0 });
        const t = await clientCredentialsToken(short);
        const exp = decodeJwt(t).exp as number;
        assert.ok(exp - Math.floor(Date.now() / 1000) <= 2);
        await v.verify(t); // valid now, and now cached
        const until = Date.now() + 5000;
        while (Date.now() <= exp * 1000 + 50 && Date.now() < until) await new Promise((res) => setTimeout(res, 200));
        const err = await rejects(v.verify(t), 'token_expired', /expired at \d{4}-\d\d-\d\dT.*hoopctl login/);
        assert.equal(err.exit, 3);
        assert.equal(err.hint, undefined, 'the message already says what to do');
      } finally {
        await short.close();
      }
    });

    test('issuer unreachable is a 503, not a token error', async () => {
      const gone = http.createServer();
      await new Promise<void>((res) => gone.listen(0, '127.0.0.1', res));
      const { port } = gone.address() as AddressInfo;
      await new Promise<void>((res) => gone.close(() => res()));
      const v = createTokenVerifier({ issuer: `http://127.0.0.1:${port}/oidc`, audience: r.cfg.audience, groupsClaim: 'groups' });
      const t = new UnsecuredJWT({}).encode(); // irrelevant: alg is checked first
      await rejects(v.verify(t), 'token_alg_not_allowed');
      const real = await clientCredentialsToken(r);
      // Same token, but the verifier's issuer is unreachable: the issuer mismatch is reported first.
      await rejects(v.verify(real), 'token_wrong_issuer');
      const v2 = createTokenVerifier({ issuer: r.idp.issuer, audience: r.cfg.audience, groupsClaim: 'groups', fetch: () => Promise.reject(new TypeError('fetch failed')) });
      const err = await rejects(v2.verify(real), 'issuer_unreachable');
      assert.equal(err.status, 503);
      // Not cached: works once the issuer answers.
      let down = true;
      const v3 = createTokenVerifier({ issuer: r.idp.issuer, audience: r.cfg.audience, groupsClaim: 'groups', fetch: (i, init) => (down ? Promise.reject(new TypeError('fetch failed')) : fetch(i, init)) });
      await rejects(v3.verify(real), 'issuer_unreachable');
      down = false;
      assert.equal((await v3.verify(real)).sub, 'ci-bot');
    });
  });

  test('groups claim: array, space or comma separated string, dotted path', () => {
    assert.deepEqual(readGroups({ groups: ['a', 'b'] }, 'groups'), ['a', 'b']);
    assert.deepEqual(readGroups({ groups: 'a b,c , d' }, 'groups'), ['a', 'b', 'c', 'd']);
    assert.deepEqual(readGroups({ realm_access: { roles: ['x'] } }, 'realm_access.roles'), ['x']);
    assert.deepEqual(readGroups({}, 'groups'), []);
    assert.deepEqual(readGroups({ groups: [1, 'ok', ''] }, 'groups'), ['ok']);
  });
});

describe('dev IdP persistence', () => {
  test('keys (0600) and refresh tokens survive a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hoop-devidp-'));
    try {
      const keysFile = join(dir, 'sub', 'dev-idp-keys.json');
      const first = await startIdp('', { keysFile });
      const tok = await deviceLogin(first, 'alice', 'alice-pw');
      const publicUrl = first.url;
      await first.close();
      assert.equal(statSync(keysFile).mode & 0o777, 0o600);
      assert.equal(statSync(join(dir, 'sub', 'dev-idp-state.json')).mode & 0o777, 0o600);
      assert.ok(JSON.parse(readFileSync(keysFile, 'utf8')).keys[0].d, 'private key stored');

      // Same public URL (the issuer) on a new server process-equivalent: same keys, same state.
      const second = await startIdp('', { keysFile }, publicUrl);
      try {
        const id = await createTokenVerifier({ issuer: second.idp.issuer, audience: second.cfg.audience, groupsClaim: 'groups', jwks: second.idp.jwks }).verify(tok.access_token as string);
        assert.equal(id.sub, 'alice');
        const refreshed = await post(`${second.url}/oidc/token`, { grant_type: 'refresh_token', refresh_token: tok.refresh_token as string, client_id: 'hoopctl' });
        assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
        assert.deepEqual(decodeJwt(refreshed.body.access_token as string).groups, ['eng']);
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('openid-client 6 against the dev IdP (the CLI calls)', () => {
  let r: Running;
  before(async () => {
    r = await startIdp();
  });
  after(async () => {
    await r.close();
  });

  test('discovery, device flow while polling, refresh, revocation', async () => {
    const config = await client.discovery(new URL(r.idp.issuer), 'hoopctl', undefined, client.None(), { execute: [client.allowInsecureRequests] });
    const da = await client.initiateDeviceAuthorization(config, { scope: 'openid offline_access' });
    assert.equal(da.interval, 1);
    const polling = client.pollDeviceAuthorizationGrant(config, da, undefined, { signal: AbortSignal.timeout(20_000) });
    await completeDeviceFlow(da.verification_uri_complete as string, 'alice', 'alice-pw');
    const tokens = await polling;
    const v = verifierFor(r);
    assert.deepEqual((await v.verify(tokens.access_token)).groups, ['eng']);
    assert.equal(tokens.claims()?.sub, 'alice');
    assert.ok(tokens.refresh_token);

    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
    assert.equal((await v.verify(refreshed.access_token)).sub, 'alice');
    assert.ok(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token);

    await client.tokenRevocation(config, refreshed.refresh_token);
    await assert.rejects(client.refreshTokenGrant(config, refreshed.refresh_token), (err: Error & { error?: string }) => err.error === 'invalid_grant');
  });

  test('device flow denied in the browser surfaces access_denied to the poller', async () => {
    const config = await client.discovery(new URL(r.idp.issuer), 'hoopctl', undefined, client.None(), { execute: [client.allowInsecureRequests] });
    const da = await client.initiateDeviceAuthorization(config, { scope: 'openid' });
    const polling = client.pollDeviceAuthorizationGrant(config, da, undefined, { signal: AbortSignal.timeout(20_000) });
    await completeDeviceFlow(da.verification_uri_complete as string, 'alice', 'alice-pw', { deny: true });
    await assert.rejects(polling, (err: Error & { error?: string }) => err.error === 'access_denied');
  });

  test('client credentials with client_secret_basic and client_secret_post', async () => {
    for (const auth of [client.ClientSecretBasic('ci-secret'), client.ClientSecretPost('ci-secret')]) {
      const config = await client.discovery(new URL(r.idp.issuer), 'ci-bot', undefined, auth, { execute: [client.allowInsecureRequests] });
      const tok = await client.clientCredentialsGrant(config);
      const id = await verifierFor(r).verify(tok.access_token);
      assert.equal(id.sub, 'ci-bot');
      assert.deepEqual(id.groups, ['ci']);
    }
  });
});
