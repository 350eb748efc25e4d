/**
 * The gateway configuration: every key, its default and its check, in one place
 * (PRODUCT.md "Gateway configuration"). Unknown keys are rejected, not dropped.
 * Keys beyond PRODUCT.md are marked "(extension)" and documented in the README.
 */
import { z } from 'zod';
import { parseDuration } from './duration.ts';

export const GUARDRAIL_RULES = [
  'drop', 'truncate', 'alter', 'delete', 'update', 'insert', 'delete_without_where', 'update_without_where',
  'grant', 'revoke', 'create', 'copy_to_program', 'copy_from_program', 'copy', 'create_function', 'do',
  'call', 'vacuum', 'set_role', 'set', 'lock', 'listen', 'notify', 'prepare_transaction', 'create_rule',
  'create_extension', 'security_definer', 'comment', 'reindex', 'cluster', 'refresh', 'create_role',
  'alter_system', 'load', 'explain_analyze',
] as const;
export type GuardrailRule = (typeof GUARDRAIL_RULES)[number];

/**
 * `lease.max_connections` when a connection sets none: room for a connection pool or `pgbench
 * -c 16`, far below PostgreSQL's default max_connections (100), so that one lease cannot take
 * the target's every connection slot.
 */
export const DEFAULT_LEASE_MAX_CONNECTIONS = 20;
/** `max_connections_per_user` when the config sets none (all of one user's leases, per replica) */
export const DEFAULT_MAX_CONNECTIONS_PER_USER = 50;

/** `recording.retention` when a connection sets none (PRODUCT.md: 90d) */
export const DEFAULT_RETENTION_MS = 90 * 86_400_000;

export const DETECTORS = ['email', 'credit_card', 'ssn', 'phone', 'iban', 'ipv4', 'secret'] as const;
export type Detector = (typeof DETECTORS)[number];

const duration = (what: string) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    const ms = typeof v === 'number' ? v * 1000 : parseDuration(v);
    if (ms === undefined || !(ms > 0)) {
      ctx.addIssue({ code: 'custom', message: `${what} must be a duration like 30s, 15m, 2h or 90d (got ${JSON.stringify(v)})` });
      return z.NEVER;
    }
    return ms;
  });

const hostPort = z.string().regex(/^[^\s:]*:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:8009');
const nonEmpty = z.string().min(1, 'must not be empty');
const groups = z.array(nonEmpty);
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');

const target = z.strictObject({
  host: nonEmpty.default('127.0.0.1'),
  port: z.number().int().min(1).max(65535),
  // postgres
  database: nonEmpty.optional(),
  user: nonEmpty.optional(),
  password_env: envName.optional(),
  /** (extension) TLS to the target: disable | prefer | require | verify-full; default prefer */
  sslmode: z.enum(['disable', 'prefer', 'require', 'verify-full']).default('prefer'),
  /** (extension) PEM file of the CA that signs the target's certificate, for verify-full */
  ca_file: nonEmpty.optional(),
  /** (extension) let the client pick the database name in its startup message */
  allow_client_database: z.boolean().default(false),
  // ssh (user and password_env above are shared with postgres)
  /** the OpenSSH or PEM private key the gateway logs in with; read at start (relative to gateway.yaml) */
  private_key_file: nonEmpty.optional(),
  /** (extension) the environment variable holding private_key_file's passphrase */
  passphrase_env: envName.optional(),
  /** the target's host key, `ssh-ed25519 AAAA...` (a known_hosts line without the host) or `SHA256:...`; unset = pinned on first use */
  host_key: nonEmpty.optional(),
  // http
  url: z.url().optional(),
});

const regex = z.string().refine((p) => { try { new RegExp(p, 'i'); return true; } catch { return false; } }, 'is not a valid regular expression');

/** environment variables an ssh client may set on the target (`SendEnv`), by default; `*` ends a prefix */
export const DEFAULT_SSH_ENV = ['LANG', 'LC_*', 'TZ', 'COLORTERM'];
export const DEFAULT_SSH = { sftp: true, port_forwarding: false, env: DEFAULT_SSH_ENV };

const connection = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/i, 'must be 1-63 letters, digits, ".", "_" or "-"'),
  type: z.enum(['postgres', 'ssh', 'tcp', 'http']),
  target,
  access: z.strictObject({ groups: groups.min(1, 'must name at least one group') }),
  lease: z.strictObject({
    default: duration('lease.default').default(30 * 60_000),
    max: duration('lease.max').default(2 * 3_600_000),
    /** (extension) tunnelled connections one lease may hold open at once (each dials the target) */
    max_connections: z.number().int().min(1).max(10_000).default(DEFAULT_LEASE_MAX_CONNECTIONS),
  }).default({ default: 30 * 60_000, max: 2 * 3_600_000, max_connections: DEFAULT_LEASE_MAX_CONNECTIONS }),
  review: z.strictObject({
    groups: groups.min(1, 'must name at least one reviewer group'),
    min_approvals: z.number().int().min(1).default(1),
    timeout: duration('review.timeout').default(15 * 60_000),
    /** the requester must give --reason */
    require_reason: z.boolean().default(false),
    /** (extension) false: leases start without review; the settings still apply to held statements */
    lease: z.boolean().default(true),
  }).optional(),
  guardrails: z.strictObject({
    deny: z.array(z.enum(GUARDRAIL_RULES)).default([]),
    review: z.array(z.enum(GUARDRAIL_RULES)).default([]),
    deny_patterns: z.array(regex).default([]),
    /** functions no statement may call, matched on the parse tree (any schema, quoting, case; known wrappers too) */
    deny_functions: z.array(z.string().regex(/^([A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*$/, 'must be a function name, e.g. pg_sleep (a schema prefix is ignored)')).default([]),
    /** a DELETE / UPDATE affecting more rows than this is rolled back with an error (default: no limit) */
    max_rows: z.strictObject({ delete: z.number().int().min(0).optional(), update: z.number().int().min(0).optional() }).optional(),
    /** ssh: commands (exec, typed lines) matching one of these wait for a reviewer's approval */
    review_patterns: z.array(regex).optional(),
  }).optional(),
  /** ssh only: what an ssh client may do besides shells and commands (defaults: DEFAULT_SSH) */
  ssh: z.strictObject({
    /** the sftp subsystem and legacy `scp -O` (exec `scp -t/-f`); modern scp rides sftp */
    sftp: z.boolean().default(DEFAULT_SSH.sftp),
    /** `ssh -L` (direct-tcpip channels) to any host:port the target can reach */
    port_forwarding: z.boolean().default(DEFAULT_SSH.port_forwarding),
    /** (extension) env requests passed to the target (the target's AcceptEnv decides too) */
    env: z.array(nonEmpty).default(DEFAULT_SSH_ENV),
  }).optional(),
  masking: z.strictObject({
    columns: z.array(nonEmpty).default([]),
    detectors: z.array(z.enum(DETECTORS)).default([]),
  }).optional(),
  recording: z.strictObject({
    results: z.boolean().default(true),
    retention: duration('recording.retention').default(DEFAULT_RETENTION_MS),
    /** (extension) result rows kept per statement / per session */
    max_rows_per_statement: z.number().int().min(0).default(100),
    max_rows_per_session: z.number().int().min(0).default(10_000),
    /** ssh: record what is typed into terminals (off: it carries passwords typed at prompts) */
    input: z.boolean().default(false),
  }).default({ results: true, retention: DEFAULT_RETENTION_MS, max_rows_per_statement: 100, max_rows_per_session: 10_000, input: false }),
});

/** what `notifications[].events` may name */
export const NOTIFY_EVENTS = ['review.created', 'review.decided', 'review.expired', 'review.cancelled'] as const;
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

const notification = z.strictObject({
  url: z.url().refine((u) => /^https?:/.test(u), 'must be an http(s) URL'),
  events: z.array(z.enum(NOTIFY_EVENTS)).min(1, 'must name at least one event').default([...NOTIFY_EVENTS]),
  format: z.enum(['json', 'slack']).default('json'),
  /** the HMAC-SHA256 key for the X-Hoop-Signature header comes from this variable */
  secret_env: envName.optional(),
  /** (extension) per attempt; default 5s */
  timeout: duration('notifications[].timeout').default(5000),
  /** (extension) attempts in all, with backoff; default 5 */
  attempts: z.number().int().min(1).max(20).default(5),
});

export const configSchema = z.strictObject({
  listen: hostPort.default('127.0.0.1:8009'),
  public_url: z.url().optional(),
  tls: z.strictObject({ cert: nonEmpty, key: nonEmpty }).optional(),
  store: z.string().regex(/^(sqlite:.+|postgres(ql)?:\/\/.+)$/, 'must be sqlite:<path> or postgres://...').default('sqlite:./data/hoop.db'),
  auth: z.strictObject({
    issuer: z.union([z.literal('dev'), z.url()]),
    client_id: nonEmpty.default('hoopctl'),
    /** (extension) the audience tokens must carry; default: public_url */
    audience: nonEmpty.optional(),
    groups_claim: nonEmpty.default('groups'),
    admins: groups.default([]),
  }),
  dev_idp: z.strictObject({
    users: z.array(z.strictObject({ username: nonEmpty, password: nonEmpty, groups: groups.default([]), email: z.string().optional() })).default([]),
    clients: z.array(z.strictObject({ client_id: nonEmpty, client_secret: nonEmpty, groups: groups.default([]) })).default([]),
    /** (extension) lifetime of access tokens the dev IdP issues; default 1h */
    access_token_ttl: duration('dev_idp.access_token_ttl').default(3_600_000),
    /** (extension) lifetime of refresh tokens; default 14d */
    refresh_token_ttl: duration('dev_idp.refresh_token_ttl').default(14 * 86_400_000),
  }).optional(),
  connections: z.array(connection).default([]),
  notifications: z.array(notification).default([]),
  /** (extension) lifetime of the short gateway-signed tunnel tokens; default 60s */
  tunnel_token_ttl: duration('tunnel_token_ttl').default(60_000),
  /** (extension) tunnelled connections one user may hold open at once, over all their leases (per replica) */
  max_connections_per_user: z.number().int().min(1).max(100_000).default(DEFAULT_MAX_CONNECTIONS_PER_USER),
  /** (extension) WebSocket ping interval on tunnels, so proxies do not cut idle ones; default 20s */
  tunnel_keepalive: duration('tunnel_keepalive').default(20_000),
});

export type GatewayConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type ConnectionConfig = ParsedConfig['connections'][number];
export type TargetConfig = ConnectionConfig['target'];
export type GuardrailsConfig = NonNullable<ConnectionConfig['guardrails']>;
export type MaskingConfig = NonNullable<ConnectionConfig['masking']>;
export type SshConfig = NonNullable<ConnectionConfig['ssh']>;
export type ConnectionType = ConnectionConfig['type'];
export type NotificationConfig = ParsedConfig['notifications'][number];
