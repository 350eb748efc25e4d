/**
 * Issue 11, `hoopctl mcp`: the MCP SDK's own Client, over stdio (StdioClientTransport spawning
 * `bin/hoopctl mcp`), against a real gateway process and PostgreSQL, as an agent identity
 * (client credentials in the server's environment): the tools, a masked result, a blocked
 * statement, a connection outside the agent's groups, and held statements approved by a reviewer
 * (waiting, and resumed with review_id).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { startPostgres, type PgCluster } from './helpers/postgres.ts';
import { startGatewayProc, cliEnv, BIN, type GatewayProc } from './helpers/hoop.ts';

let db: PgCluster;
let gw: GatewayProc;
const AGENT = { HOOP_CLIENT_ID: 'ci-bot', HOOP_CLIENT_SECRET: 'ci-secret' };
const DBA = { HOOP_CLIENT_ID: 'dba-bot', HOOP_CLIENT_SECRET: 'dba-secret' };

before(async () => {
  db = await startPostgres();
  await db.psql(`CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card_number text);
    INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com', '4111 1111 1111 1111'), (2, 'Bob', 'bob@example.org', NULL), (3, 'Cy', 'cy@example.net', NULL);`, { db: 'app', user: 'app' });
  const target = { host: '127.0.0.1', port: db.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' };
  gw = await startGatewayProc((c) => {
    c.connections = [
      {
        name: 'app', type: 'postgres', target, access: { groups: ['ci'] },
        guardrails: { deny: ['drop', 'delete_without_where'], review: ['delete'] },
        masking: { columns: ['email'], detectors: ['credit_card'] }, review: { groups: ['dba'], lease: false, timeout: '2m' },
      },
      { name: 'finance', type: 'postgres', target, access: { groups: ['dba'] } },
    ];
  }, { env: { APP_PW: 'app-secret' } });
});
after(async () => {
  await gw?.stop();
  await db?.stop();
});

async function agent(args: string[] = []): Promise<Client> {
  const env = cliEnv(gw.home('agent'), gw.url, AGENT) as Record<string, string>;
  const transport = new StdioClientTransport({ command: process.execPath, args: [BIN, 'mcp', ...args], env, stderr: 'pipe' });
  const client = new Client({ name: 'hoop-test-agent', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

type ToolResult = { isError?: boolean; content: Array<{ type: string; text?: string }>; structuredContent?: any };
const call = (c: Client, name: string, args: Record<string, unknown> = {}) => c.callTool({ name, arguments: args }) as Promise<ToolResult>;
const text = (r: ToolResult) => r.content.map((x) => x.text ?? '').join('\n');

test('tools, a masked result as structured content and text, a blocked statement, a connection outside the groups', async () => {
  const c = await agent();
  try {
    const tools = (await c.listTools()).tools;
    assert.deepEqual(tools.map((t) => t.name).sort(), ['list_connections', 'query']);
    const q = tools.find((t) => t.name === 'query')!;
    assert.deepEqual(Object.keys(q.inputSchema.properties ?? {}).sort(), ['connection', 'reason', 'review_id', 'sql']);
    assert.deepEqual(q.inputSchema.required?.sort(), ['connection', 'sql']);

    const list = await call(c, 'list_connections');
    assert.deepEqual(list.structuredContent.connections.map((x: { name: string }) => x.name), ['app'], 'finance is not the agent\'s');

    const r = await call(c, 'query', { connection: 'app', sql: 'select id, name, email, card_number from customers order by id limit 2', reason: 'support ticket 7' });
    assert.equal(r.isError, undefined, text(r));
    const s = r.structuredContent.statements[0];
    assert.deepEqual(s.columns, [{ name: 'id', type: 'integer' }, { name: 'name', type: 'text' }, { name: 'email', type: 'text' }, { name: 'card_number', type: 'text' }]);
    assert.equal(s.row_count, 2);
    assert.equal(s.rows[0].id, 1);
    assert.equal(s.rows[0].name, 'Ada');
    const all = JSON.stringify(r);
    for (const raw of ['ada@example.com', 'bob@example.org', '4111 1111 1111 1111']) assert.ok(!all.includes(raw), `raw ${raw} reached the agent`);
    assert.match(s.rows[0].email, /^\*+@\*+\.\*+$/);
    assert.match(text(r), /^id \| name \| email +\| card_number\n/);
    assert.match(text(r), /\(2 rows\)$/);

    const blocked = await call(c, 'query', { connection: 'app', sql: 'drop table customers' });
    assert.equal(blocked.isError, true);
    assert.deepEqual([blocked.structuredContent.error.exit_code, blocked.structuredContent.error.sqlstate], [6, '42501']);
    assert.match(text(blocked), /exit code 6.*blocked by guardrail rule "drop"/s);

    const outside = await call(c, 'query', { connection: 'finance', sql: 'select 1' });
    assert.equal(outside.isError, true);
    assert.equal(outside.structuredContent.error.exit_code, 4);
    assert.match(text(outside), /unknown connection "finance"/);

    const sqlErr = await call(c, 'query', { connection: 'app', sql: 'select 1 as ok; select * from nowhere' });
    assert.equal(sqlErr.isError, true);
    assert.deepEqual([sqlErr.structuredContent.error.exit_code, sqlErr.structuredContent.error.sqlstate], [1, '42P01']);
    assert.deepEqual(sqlErr.structuredContent.statements[0].rows, [{ ok: 1 }], 'what ran before the error comes back too');
  } finally {
    await c.close();
  }
});

test('held statements: "waiting for approval r_…", resumed with review_id once approved; with --wait the answer comes after approval', async () => {
  const c = await agent();
  try {
    const held = await call(c, 'query', { connection: 'app', sql: 'delete from customers where id = 3', reason: 'GDPR request' });
    assert.equal(held.isError, true);
    const id = held.structuredContent.error.review_id as string;
    assert.match(id, /^r_[a-z0-9]+$/i);
    assert.equal(held.structuredContent.error.exit_code, 5);
    assert.match(text(held), new RegExp(`waiting for approval ${id}.*hoopctl approve ${id}`));
    const ok = await gw.cli(['approve', id], { home: 'dba', env: DBA });
    assert.equal(ok.code, 0, ok.stderr);
    const done = await call(c, 'query', { connection: 'app', sql: 'delete from customers where id = 3', review_id: id });
    assert.equal(done.isError, undefined, text(done));
    assert.equal(done.structuredContent.statements[0].command, 'DELETE 1');
  } finally {
    await c.close();
  }

  const waiting = await agent(['--wait', '60s']);
  try {
    const pending = call(waiting, 'query', { connection: 'app', sql: 'delete from customers where id = 2' });
    let id: string | undefined;
    for (let i = 0; i < 100 && !id; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const list = await gw.cli(['reviews', '--json'], { home: 'dba', env: DBA });
      id = (JSON.parse(list.stdout) as Array<{ id: string; status: string; statement: string | null }>).find((r) => r.status === 'pending' && /id = 2/.test(r.statement ?? ''))?.id;
    }
    assert.ok(id, 'the statement is held for review');
    assert.equal((await gw.cli(['approve', id], { home: 'dba', env: DBA })).code, 0);
    const r = await pending;
    assert.equal(r.isError, undefined, text(r));
    assert.equal(r.structuredContent.statements[0].command, 'DELETE 1');
  } finally {
    await waiting.close();
  }
  assert.equal((await db.psql('select string_agg(id::text, \',\') from customers', { db: 'app', user: 'app' })).trim(), '1');
});
