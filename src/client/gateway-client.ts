/**
 * The gateway API client: fetch with the bearer token, every failure mapped to a HoopError with
 * the right exit code (401 → 3, 403/404 → 4, unreachable → 7) and the gateway's own message.
 */
import { HoopError, AuthError, AccessDenied, ExitCode, NotFound, Unreachable, UsageError } from '../errors.ts';

export function isLoopback(u: URL): boolean {
  return ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(u.hostname);
}

export interface HoopConfiguration { gateway: string; issuer: string; client_id: string; audience: string; groups_claim: string; version: string; dev_idp: boolean }

export class GatewayClient {
  readonly url: string;
  token: string | undefined;
  /** when set, called before each request for a current token (refreshes near expiry) */
  tokenSource: (() => Promise<string>) | undefined;
  constructor(url: string, token?: string) {
    this.url = url;
    this.token = token;
  }

  async request<T = Record<string, unknown>>(method: string, path: string, body?: unknown, opts: { signal?: AbortSignal } = {}): Promise<T> {
    if (this.tokenSource) this.token = await this.tokenSource();
    let res: { status: number; text: string };
    try {
      res = await exchange(this.url + path, method, {
        accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      }, body === undefined ? undefined : JSON.stringify(body), opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(30_000)]) : AbortSignal.timeout(30_000));
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      const e = err as NodeJS.ErrnoException & { cause?: { code?: string; message?: string } };
      const why = e.name === 'AbortError' || e.name === 'TimeoutError' ? 'no answer within 30s' : (e.code ?? e.cause?.code ?? e.cause?.message ?? e.message);
      throw new Unreachable(`gateway ${this.url} unreachable: ${why}`, { cause: err, hint: 'is the gateway running? check --gateway / HOOP_GATEWAY' });
    }
    let json: Record<string, unknown> = {};
    try { json = res.text ? JSON.parse(res.text) : {}; } catch { /* not JSON */ }
    if (res.status >= 200 && res.status < 300) return json as T;
    const message = (json.message as string) ?? `${method} ${path} failed: HTTP ${res.status}`;
    const code = (json.error as string) ?? `http_${res.status}`;
    const hint = json.hint as string | undefined;
    const details = json;
    if (res.status === 401) throw new AuthError(code, message, { details });
    if (res.status === 403 || res.status === 409) throw new AccessDenied(message, { code, hint, details });
    if (res.status === 404) throw new NotFound(message, { hint, details });
    // gone on purpose (a recording deleted by retention): as "not found", with the gateway's code
    if (res.status === 410) throw new HoopError(code, message, { status: 410, hint, details, expose: true, exit: ExitCode.denied });
    if (res.status === 400 || res.status === 413) throw new UsageError(message, { hint, details });
    throw new HoopError(code, message, { status: res.status, hint, details, expose: true, exit: res.status >= 500 ? 7 : 1 });
  }

  /**
   * A streaming GET (server-sent events): resolves the response once its headers arrived, its
   * body still open; errors as `request` does. `signal` ends it.
   */
  async stream(path: string, signal: AbortSignal): Promise<Response> {
    if (this.tokenSource) this.token = await this.tokenSource();
    let res: Response;
    try {
      res = await fetch(this.url + path, { headers: { accept: 'text/event-stream', ...(this.token ? { authorization: `Bearer ${this.token}` } : {}) }, signal });
    } catch (err) {
      if (signal.aborted) throw err;
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new Unreachable(`gateway ${this.url} unreachable: ${cause?.code ?? cause?.message ?? (err as Error).message}`, { cause: err, hint: 'is the gateway running? check --gateway / HOOP_GATEWAY' });
    }
    if (!res.ok) {
      // the JSON error path of request(): same codes and exits
      const text = await res.text();
      const json = (() => { try { return JSON.parse(text); } catch { return {}; } })();
      if (res.status === 401) throw new AuthError(json.error ?? 'http_401', json.message ?? 'unauthorized', { details: json });
      if (res.status === 403) throw new AccessDenied(json.message ?? 'forbidden', { code: json.error, hint: json.hint });
      throw new HoopError(json.error ?? `http_${res.status}`, json.message ?? `GET ${path} failed: HTTP ${res.status}`, { status: res.status, expose: true, exit: res.status >= 500 ? 7 : 1 });
    }
    return res;
  }

  discover(): Promise<HoopConfiguration> {
    return this.request<HoopConfiguration>('GET', '/.well-known/hoop-configuration');
  }
}

/**
 * One request/response with node:http(s). Why not fetch: its first call loads undici, ~40 ms on an
 * idle machine (150+ ms on a busy one), which was the largest single cost of a short
 * `hoopctl exec` in a CI step (bench/exec.ts); node:http is loaded anyway (ws uses it).
 */
async function exchange(url: string, method: string, headers: Record<string, string>, body: string | undefined, signal: AbortSignal): Promise<{ status: number; text: string }> {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? await import('node:https') : await import('node:http');
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  return new Promise((resolve, reject) => {
    const req = mod.request(u, { method, headers, signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
