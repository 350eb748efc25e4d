/**
 * SCRAM-SHA-256 client (RFC 5802, RFC 7677; PostgreSQL's variant: empty user name in the
 * messages, the role comes from the StartupMessage) with a cache of the password-derived keys.
 *
 * Hand-written instead of node-postgres' pg/lib/crypto/sasl.js because that one derives the
 * salted password (PBKDF2, 4096 iterations by default: ~1-2 ms of CPU) on every login and
 * offers no way to keep it. The server sends the same salt and iteration count for a role
 * every time (they are part of its stored verifier), so, as pgbouncer does, the keys derived
 * from (password, salt, iterations) are cached and a repeat login costs a few HMACs. The
 * cache holds what a stolen verifier would give (ClientKey lets one log in as the role), no
 * more than the gateway already holds: the password itself.
 *
 * Checks: the server nonce extends ours, the iteration count is bounded, and the server's
 * signature is verified (a server that does not know the verifier cannot complete the login).
 * Channel binding (SCRAM-SHA-256-PLUS, tls-server-end-point) is used when the connection is
 * TLS and the server offers it.
 */
import { createHash, createHmac, createSecretKey, pbkdf2, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { signatureAlgorithmHashFromCertificate } from 'pg/lib/crypto/cert-signatures.js';

/** refuse servers that ask for more work than this per login (node-postgres' default bound) */
const MAX_ITERATIONS = 100_000;
const CACHE_MAX = 64;

/** HMAC keys are kept as KeyObjects: createHmac with a Buffer key costs ~5x more (key import per call) */
interface Keys { clientKey: Buffer; storedKey: KeyObject; serverKey: KeyObject }

/** (iterations, salt, password) → derived keys; insertion-ordered for eviction */
const keyCache = new Map<string, Keys>();
/** PBKDF2 runs so far (cache misses), for tests and diagnostics */
export const scramStats = { derivations: 0 };

/** RFC 4013 SASLprep, the mapping and normalization steps (as libpq and node-postgres apply them). */
export function saslprep(password: string): string {
  // eslint-disable-next-line no-misleading-character-class
  return password.replace(/[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/g, ' ').replace(/[\u00AD\u034F\u1806\u180B\u180C\u180D\u200C\u200D\u2060\uFE00-\uFE0F\uFEFF]/g, '').normalize('NFKC');
}

function hmac(key: Buffer | KeyObject, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function deriveKeys(password: string, salt: string, iterations: number): Promise<Keys> {
  const id = `${iterations}\0${salt}\0${password}`;
  const hit = keyCache.get(id);
  if (hit) return Promise.resolve(hit);
  scramStats.derivations++;
  return new Promise((resolve, reject) => {
    // async PBKDF2: the libuv thread pool, not the event loop that relays every session
    pbkdf2(saslprep(password), Buffer.from(salt, 'base64'), iterations, 32, 'sha256', (err, salted) => {
      if (err) { reject(err); return; }
      const clientKey = hmac(salted, 'Client Key');
      const keys = { clientKey, storedKey: createSecretKey(createHash('sha256').update(clientKey).digest()), serverKey: createSecretKey(hmac(salted, 'Server Key')) };
      if (keyCache.size >= CACHE_MAX) keyCache.delete(keyCache.keys().next().value!);
      keyCache.set(id, keys);
      resolve(keys);
    });
  });
}

export class ScramError extends Error {}

function attributes(msg: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of msg.split(',')) {
    if (part.length < 2 || part[1] !== '=') throw new ScramError(`SASL: malformed attribute in server message`);
    out.set(part[0], part.slice(2));
  }
  return out;
}

/** WebCrypto hash names (what cert-signatures.js returns) → node:crypto's */
const NODE_HASH: Record<string, string> = {
  'SHA-224': 'sha224', 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512', 'SHA512-224': 'sha512-224', 'SHA512-256': 'sha512-256',
};
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;

export class ScramClient {
  readonly mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-256-PLUS';
  readonly #nonce = randomBytes(18).toString('base64');
  readonly #gs2: string;
  readonly #tls: TLSSocket | null;
  #serverSignature: Buffer | null = null;
  #verified = false;

  /** the server proved it knows the verifier (AuthenticationOk before this is a fake login) */
  get verified(): boolean { return this.#verified; }

  /** `tls`: the connection's TLS socket (channel binding when the server offers -PLUS), else null */
  constructor(mechanisms: readonly string[], tls: TLSSocket | null) {
    if (tls && mechanisms.includes('SCRAM-SHA-256-PLUS')) this.mechanism = 'SCRAM-SHA-256-PLUS';
    else if (mechanisms.includes('SCRAM-SHA-256')) this.mechanism = 'SCRAM-SHA-256';
    else throw new ScramError(`SASL: the target offers ${mechanisms.join(', ') || 'no mechanism'}; only SCRAM-SHA-256 is supported`);
    // 'y': we could bind but the server did not offer it (downgrade detection, RFC 5802 §6)
    this.#gs2 = this.mechanism === 'SCRAM-SHA-256-PLUS' ? 'p=tls-server-end-point,,' : tls ? 'y,,' : 'n,,';
    this.#tls = tls;
  }

  /** client-first-message (SASLInitialResponse data) */
  first(): string {
    return `${this.#gs2}n=*,r=${this.#nonce}`;
  }

  /** client-final-message (SASLResponse data) for the server-first-message */
  async final(password: string, serverFirst: string): Promise<string> {
    if (!password) throw new ScramError('SASL: the password must be a non-empty string');
    const a = attributes(serverFirst);
    const nonce = a.get('r');
    const salt = a.get('s');
    const iterText = a.get('i');
    if (!nonce || !PRINTABLE.test(nonce)) throw new ScramError('SASL: server nonce missing or not printable');
    if (!nonce.startsWith(this.#nonce) || nonce.length === this.#nonce.length) throw new ScramError('SASL: server nonce does not extend the client nonce');
    if (!salt || !BASE64.test(salt)) throw new ScramError('SASL: salt missing or not base64');
    if (!iterText || !/^[1-9][0-9]{0,9}$/.test(iterText)) throw new ScramError('SASL: invalid iteration count');
    const iterations = Number(iterText);
    if (iterations > MAX_ITERATIONS) throw new ScramError(`SASL: iteration count ${iterations} exceeds ${MAX_ITERATIONS}`);

    let binding = Buffer.from(this.#gs2);
    if (this.mechanism === 'SCRAM-SHA-256-PLUS') {
      // tls-server-end-point (RFC 5929): the server certificate hashed with its signature's
      // hash, SHA-256 for MD5/SHA-1
      const cert = this.#tls!.getPeerCertificate().raw;
      let alg = signatureAlgorithmHashFromCertificate(cert);
      if (alg === 'MD5' || alg === 'SHA-1') alg = 'SHA-256';
      const nodeAlg = NODE_HASH[alg];
      if (!nodeAlg) throw new ScramError(`SASL: cannot bind to a certificate signed with ${alg}`);
      binding = Buffer.concat([binding, createHash(nodeAlg).update(cert).digest()]);
    }
    const withoutProof = `c=${binding.toString('base64')},r=${nonce}`;
    const authMessage = `n=*,r=${this.#nonce},${serverFirst},${withoutProof}`;
    const keys = await deriveKeys(password, salt, iterations);
    const signature = hmac(keys.storedKey, authMessage);
    const proof = Buffer.allocUnsafe(32);
    for (let i = 0; i < 32; i++) proof[i] = keys.clientKey[i] ^ signature[i];
    this.#serverSignature = hmac(keys.serverKey, authMessage);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Checks the server-final-message: the server proves it knows the verifier. */
  verify(serverFinal: string): void {
    if (!this.#serverSignature) throw new ScramError('SASL: unexpected server-final-message');
    const a = attributes(serverFinal);
    const e = a.get('e');
    if (e) throw new ScramError(`SASL: the server reported "${e}"`);
    const v = a.get('v');
    if (!v || !BASE64.test(v)) throw new ScramError('SASL: server signature missing');
    const got = Buffer.from(v, 'base64');
    if (got.length !== 32 || !timingSafeEqual(got, this.#serverSignature)) throw new ScramError('SASL: server signature does not match');
    this.#verified = true;
  }
}
