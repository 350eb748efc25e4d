/**
 * The demo's target database, from the best source available:
 *   1. DEMO_DATABASE_URL (any PostgreSQL the user points at; the demo creates its table there);
 *   2. a throwaway cluster in the demo dir when initdb/pg_ctl are installed (as the `postgres`
 *      user when we run as root: initdb refuses root);
 *   3. an embedded PGlite served over TCP with pglite-socket (optional dependencies). PGlite takes
 *      seconds to start, serves few connections at once and breaks on COPY FROM STDIN.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, chownSync, chmodSync, writeFileSync, readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { join } from 'node:path';
import net from 'node:net';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface DemoDatabase {
  kind: 'url' | 'cluster' | 'pglite';
  description: string;
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
  warning?: string;
  stop(): Promise<void>;
}

export const DEMO_ROWS: Array<[string, string, string, string, string]> = [
  ['Ada Lovelace', 'ada@example.com', '+44 20 7946 0958', '123-45-6789', '4111 1111 1111 1111'],
  ['Grace Hopper', 'grace.hopper@navy.example', '(555) 123-4567', '234-56-7890', '5500 0000 0000 0004'],
  ['Alan Turing', 'alan@bletchley.example', '+44 1908 640404', '345-67-8901', '3400 0000 0000 009'],
  ['Katherine Johnson', 'kj@nasa.example', '(757) 864-1000', '456-78-9012', '6011 0000 0000 0004'],
  ['Edsger Dijkstra', 'ewd@utexas.example', '+31 40 247 9111', '567-89-0123', '4012 8888 8888 1881'],
  ['Barbara Liskov', 'liskov@mit.example', '(617) 253-1000', '678-90-1234', '5105 1051 0510 5100'],
  ['Donald Knuth', 'knuth@stanford.example', '(650) 723-2300', '789-01-2345', '4222 2222 2222 2'],
  ['Frances Allen', 'fran@ibm.example', '(914) 945-3000', '890-12-3456', '3782 822463 10005'],
];

export const SEED_SQL = `
DROP TABLE IF EXISTS customers;
CREATE TABLE customers (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text UNIQUE NOT NULL,
  phone text,
  ssn text,
  card_number text,
  plan text NOT NULL DEFAULT 'free',
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, phone, ssn, card_number, plan) VALUES
${DEMO_ROWS.map((r, i) => `  (${r.map((v) => `'${v.replace(/'/g, "''")}'`).join(', ')}, '${['free', 'pro', 'team'][i % 3]}')`).join(',\n')};
`;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** initdb and friends: on PATH, or in Debian's versioned directory */
export function findPgBin(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'))) return dir;
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(base, versions[0], 'bin') : undefined;
}

async function seedWithPg(url: string): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(SEED_SQL);
  } finally {
    await client.end();
  }
}

async function fromUrl(url: string): Promise<DemoDatabase> {
  const u = new URL(url);
  await seedWithPg(url);
  return {
    kind: 'url', description: `DEMO_DATABASE_URL (${u.host}${u.pathname})`, host: u.hostname, port: Number(u.port || 5432),
    database: decodeURIComponent(u.pathname.slice(1)) || 'postgres', user: decodeURIComponent(u.username), password: decodeURIComponent(u.password),
    stop: async () => {},
  };
}

async function cluster(bin: string, dir: string): Promise<DemoDatabase> {
  const asRoot = process.getuid?.() === 0;
  const server = (cmd: string, args: string[]) => (asRoot ? run('runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]) : run(join(bin, cmd), args));
  const data = join(dir, 'pgdata');
  mkdirSync(dir, { recursive: true });
  if (asRoot) {
    // the postgres user must be able to reach its data dir through ours (mkdtemp makes 0700)
    chmodSync(dirname(dir), 0o711);
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dir, uid, gid);
  }
  const password = 'demo-secret';
  const port = await freePort();
  if (!existsSync(join(data, 'PG_VERSION'))) {
    await server('initdb', ['-D', data, '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256', '--no-sync', '-E', 'UTF8', '--locale=C']);
  }
  const conf = `listen_addresses = '127.0.0.1'\nport = ${port}\nunix_socket_directories = '${dir}'\nfsync = off\n`;
  writeFileSync(join(data, 'postgresql.auto.conf'), conf);
  if (asRoot) chownSync(join(data, 'postgresql.auto.conf'), Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })), Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })));
  await server('pg_ctl', ['-D', data, '-l', join(dir, 'postgres.log'), '-w', '-t', '60', 'start']);
  const psql = (sql: string, db = 'postgres') => run(existsSync(join(bin, 'psql')) ? join(bin, 'psql') : 'psql', ['-XAtq', '-v', 'ON_ERROR_STOP=1', '-h', dir, '-p', String(port), '-U', 'postgres', '-d', db, '-c', sql]);
  await psql(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'demo') THEN CREATE ROLE demo LOGIN PASSWORD '${password}'; END IF; END $$;`);
  await psql('CREATE DATABASE demo OWNER demo').catch(() => {});
  await seedWithPg(`postgres://demo:${password}@127.0.0.1:${port}/demo`);
  return {
    kind: 'cluster', description: `throwaway PostgreSQL cluster in ${data}`, host: '127.0.0.1', port, database: 'demo', user: 'demo', password,
    stop: async () => { await server('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']).catch(() => {}); },
  };
}

async function pglite(): Promise<DemoDatabase> {
  let mods;
  try {
    mods = await Promise.all([import('@electric-sql/pglite'), import('@electric-sql/pglite-socket')]);
  } catch {
    throw new Error('no PostgreSQL for the demo: set DEMO_DATABASE_URL, install PostgreSQL (initdb, pg_ctl), or install the optional packages @electric-sql/pglite and @electric-sql/pglite-socket');
  }
  const [{ PGlite }, { PGLiteSocketServer }] = mods;
  const db = await PGlite.create();
  await db.exec(SEED_SQL);
  const port = await freePort();
  const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' });
  await server.start();
  return {
    kind: 'pglite', description: 'embedded PGlite (in memory) served with pglite-socket', host: '127.0.0.1', port, database: 'postgres', user: 'postgres', password: 'postgres',
    warning: 'PGlite is a stand-in: it took seconds to start, serves few connections at a time and breaks on COPY FROM STDIN. Install PostgreSQL or set DEMO_DATABASE_URL for the real thing.',
    stop: async () => { await server.stop(); await db.close(); },
  };
}

export async function startDemoDatabase(dir: string, env = process.env): Promise<DemoDatabase> {
  if (env.DEMO_DATABASE_URL) return fromUrl(env.DEMO_DATABASE_URL);
  const bin = findPgBin();
  if (bin) return cluster(bin, join(dir, 'postgres'));
  return pglite();
}
