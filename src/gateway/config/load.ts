/**
 * Loads gateway.yaml in named steps — read, parse YAML, check the schema, check what spans
 * keys — and reports each problem with the file, the exact key path and what is wrong.
 */
import { readFileSync, existsSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { createRequire } from 'node:module';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../../errors.ts';
import { configSchema, type ParsedConfig, type ConnectionConfig } from './schema.ts';
import { parseHostKeySpec } from '../engines/ssh/host-key.ts';

/** What the gateway holds for one connection and never sends to clients. */
export interface ConnectionSecret {
  /** from target.password_env */
  password?: string;
  /** ssh: the contents of target.private_key_file */
  privateKey?: string;
  /** ssh: from target.passphrase_env */
  passphrase?: string;
  /** ssh: the gateway's own host key for this connection (set at start from the store, engines/ssh/host-key.ts) */
  gatewayHostKey?: { private: string; public: string };
}
import { hasEngine } from '../engines/engine.ts';

export interface GatewayConfig extends ParsedConfig {
  /** the file the config came from (for messages and relative paths) */
  file: string;
  public_url: string;
  /** the audience access tokens must carry */
  audience: string;
  /** the directory relative paths (store, tls, keys) resolve against */
  baseDir: string;
  /** secrets read from the environment, by connection name */
  secrets: Map<string, ConnectionSecret>;
  /** notifications[i].secret_env's value, by index */
  notificationSecrets: Map<number, string>;
}

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

function describeIssue(issue: z.core.$ZodIssue): { path: string; problem: string } {
  const path = formatPath(issue.path);
  switch (issue.code) {
    case 'unrecognized_keys': {
      const keys = issue.keys;
      const at = (k: string) => (path ? `${path}.${k}` : k);
      return { path: at(keys[0]), problem: `unknown key${keys.length > 1 ? `s ${keys.map((k) => JSON.stringify(k)).join(', ')}` : ''} (check the spelling; the keys are in docs/PRODUCT.md and the README)` };
    }
    case 'invalid_type':
      return { path, problem: issue.input === undefined ? 'is required' : `must be ${issue.expected === 'array' ? 'a list' : issue.expected === 'object' ? 'a mapping' : `a ${issue.expected}`} (got ${JSON.stringify(issue.input)})` };
    case 'invalid_value':
      return { path, problem: `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')} (got ${JSON.stringify(issue.input)})` };
    default:
      return { path, problem: issue.message };
  }
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const abs = resolve(file);
  if (!existsSync(abs)) throw new ConfigError(file, '', 'file not found');
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    throw new ConfigError(file, '', `cannot be read: ${(err as Error).message}`);
  }
  return parseConfig(text, file, env, dirname(abs));
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env, baseDir = process.cwd()): GatewayConfig {
  // step 1: YAML
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const line = e.linePos?.[0];
    throw new ConfigError(file, '', `invalid YAML${line ? ` at line ${line.line}, column ${line.col}` : ''}: ${e.message.split('\n')[0]}`);
  }
  const raw = doc.toJS() ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(file, '', 'must be a YAML mapping of keys (listen, auth, connections, ...)');

  // step 2: schema (types, enums, unknown keys, durations)
  const parsed = configSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    const { path, problem } = describeIssue(parsed.error.issues[0]);
    throw new ConfigError(file, path, problem);
  }
  const cfg = parsed.data;

  // step 3: rules that span keys
  if (/^postgres(ql)?:/.test(cfg.store)) checkPostgresUrl(file, cfg.store);
  if (cfg.auth.issuer === 'dev' && !cfg.dev_idp) throw new ConfigError(file, 'dev_idp', 'is required when auth.issuer is "dev"');
  if (cfg.auth.issuer !== 'dev' && cfg.dev_idp) throw new ConfigError(file, 'dev_idp', 'is only allowed when auth.issuer is "dev"');
  const scheme = cfg.tls ? 'https' : 'http';
  const publicUrl = (cfg.public_url ?? `${scheme}://${cfg.listen}`).replace(/\/+$/, '');
  const seen = new Map<string, number>();
  const secrets = new Map<string, ConnectionSecret>();
  cfg.connections.forEach((c, i) => {
    const at = `connections[${i}]`;
    const prev = seen.get(c.name);
    if (prev !== undefined) throw new ConfigError(file, `${at}.name`, `duplicate connection name "${c.name}" (also connections[${prev}])`);
    seen.set(c.name, i);
    if (c.lease.default > c.lease.max) throw new ConfigError(file, `${at}.lease.default`, 'must not be longer than lease.max');
    checkTarget(file, at, c, env, secrets, baseDir);
  });
  const users = new Set<string>();
  cfg.dev_idp?.users.forEach((u, i) => {
    if (users.has(u.username)) throw new ConfigError(file, `dev_idp.users[${i}].username`, `duplicate user "${u.username}"`);
    users.add(u.username);
  });
  const notificationSecrets = new Map<number, string>();
  cfg.notifications.forEach((n, i) => {
    if (n.secret_env === undefined) return;
    const v = env[n.secret_env];
    if (v === undefined || v === '') throw new ConfigError(file, `notifications[${i}].secret_env`, `environment variable ${n.secret_env} is not set (the gateway signs notifications with it)`);
    notificationSecrets.set(i, v);
  });
  return { ...cfg, file, public_url: publicUrl, audience: cfg.auth.audience ?? publicUrl, baseDir, secrets, notificationSecrets };
}

/** Syntax only (reachability is checked when the gateway opens the store); never echoes the URL: it may hold a password. */
function checkPostgresUrl(file: string, url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(file, 'store', 'is not a valid URL: use postgres://user[:password]@host[:port]/database (or the password in PGPASSWORD)');
  }
  if (!u.hostname && !u.searchParams.has('host')) throw new ConfigError(file, 'store', 'names no host: use postgres://user@host[:port]/database');
  if (u.pathname.length <= 1) throw new ConfigError(file, 'store', 'names no database: use postgres://user@host[:port]/database');
}

function checkTarget(file: string, at: string, c: ConnectionConfig, env: NodeJS.ProcessEnv, secrets: GatewayConfig['secrets'], baseDir: string) {
  // a type without an engine: a session on it would never start nor end
  if (!hasEngine(c.type)) {
    throw new ConfigError(file, `${at}.type`, `type ${c.type} is not supported by this gateway yet (no engine serves it; a session on it would never end)${c.type === 'http' ? ': tunnel the service as type tcp meanwhile' : ''}`);
  }
  const t = c.target;
  const need = (key: keyof typeof t, why: string) => {
    if (t[key] === undefined) throw new ConfigError(file, `${at}.target.${key}`, `is required for type ${c.type} (${why})`);
  };
  if (c.type === 'postgres') {
    need('database', 'the database the gateway logs in to');
    need('user', 'the role the gateway logs in as');
  }
  if (c.type === 'http') need('url', 'the base URL of the service');
  const secret: ConnectionSecret = {};
  if (c.type === 'ssh') {
    need('user', 'the account the gateway logs in as');
    if (t.private_key_file === undefined && t.password_env === undefined) throw new ConfigError(file, `${at}.target.private_key_file`, 'is required for type ssh (or target.password_env): the gateway logs in to the target with it');
    if (t.private_key_file !== undefined && t.password_env !== undefined) throw new ConfigError(file, `${at}.target.password_env`, 'cannot be combined with target.private_key_file: set one of them');
    if (t.host_key !== undefined) {
      const problem = parseHostKeySpec(t.host_key).problem;
      if (problem) throw new ConfigError(file, `${at}.target.host_key`, problem);
    }
  } else {
    for (const k of ['private_key_file', 'passphrase_env', 'host_key'] as const) {
      if (t[k] !== undefined) throw new ConfigError(file, `${at}.target.${k}`, `is only supported for type ssh (this connection is ${c.type})`);
    }
    if (c.ssh) throw new ConfigError(file, `${at}.ssh`, `is only supported for type ssh (this connection is ${c.type})`);
    if (c.recording.input) throw new ConfigError(file, `${at}.recording.input`, `is only supported for type ssh (this connection is ${c.type})`);
  }
  if (t.passphrase_env !== undefined && t.private_key_file === undefined) throw new ConfigError(file, `${at}.target.passphrase_env`, 'needs target.private_key_file (the key it unlocks)');
  if (c.guardrails) {
    if (c.type === 'ssh') {
      // the named rules are SQL rules: on a shell they would mean nothing, silently
      if (c.guardrails.deny.length) throw new ConfigError(file, `${at}.guardrails.deny`, 'names SQL rules, which only apply to type postgres: use deny_patterns (regexes on commands) for ssh');
      if (c.guardrails.review.length) throw new ConfigError(file, `${at}.guardrails.review`, 'names SQL rules, which only apply to type postgres: use review_patterns (regexes on commands) for ssh');
      if (c.guardrails.deny_functions.length) throw new ConfigError(file, `${at}.guardrails.deny_functions`, 'names SQL functions, which only apply to type postgres: use deny_patterns (regexes on commands) for ssh');
      if (c.guardrails.max_rows) throw new ConfigError(file, `${at}.guardrails.max_rows`, 'limits SQL statements, which only apply to type postgres');
    } else if (c.type === 'postgres') {
      if (c.guardrails.review_patterns?.length) throw new ConfigError(file, `${at}.guardrails.review_patterns`, 'is only supported for type ssh: use guardrails.review (SQL rules) for postgres');
    } else throw new ConfigError(file, `${at}.guardrails`, `is only supported for types postgres and ssh (this connection is ${c.type})`);
  }
  if (c.masking && c.type !== 'postgres') throw new ConfigError(file, `${at}.masking`, `is only supported for type postgres (this connection is ${c.type})`);
  if (t.password_env !== undefined) secret.password = readEnv(file, `${at}.target.password_env`, env, t.password_env, "the target's password");
  if (t.passphrase_env !== undefined) secret.passphrase = readEnv(file, `${at}.target.passphrase_env`, env, t.passphrase_env, "the private key's passphrase");
  if (t.private_key_file !== undefined) secret.privateKey = readPrivateKey(file, `${at}.target.private_key_file`, resolve(baseDir, t.private_key_file), secret.passphrase);
  secrets.set(c.name, secret);
}

function readEnv(file: string, path: string, env: NodeJS.ProcessEnv, name: string, what: string): string {
  const v = env[name];
  if (v === undefined || v === '') throw new ConfigError(file, path, `environment variable ${name} is not set (the gateway reads ${what} from it)`);
  return v;
}

/** Reads and parses an ssh private key now, so a bad key fails the start, not the first session. */
function readPrivateKey(file: string, path: string, keyFile: string, passphrase: string | undefined): string {
  let text: string;
  try {
    text = readFileSync(keyFile, 'utf8');
  } catch (err) {
    throw new ConfigError(file, path, `cannot read ${keyFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  // ssh2 is CommonJS and only needed when a connection is ssh: loaded here, synchronously
  const { utils } = createRequire(import.meta.url)('ssh2') as typeof import('ssh2');
  const key = utils.parseKey(text, passphrase);
  if (key instanceof Error) {
    const why = /encrypted|passphrase|bad decrypt/i.test(key.message) ? `${key.message} (check target.passphrase_env)` : key.message;
    throw new ConfigError(file, path, `${keyFile} is not a usable private key: ${why}`);
  }
  const k = Array.isArray(key) ? key[0] : key;
  if (!k || k.isPrivateKey() === false) throw new ConfigError(file, path, `${keyFile} holds no private key`);
  return text;
}
