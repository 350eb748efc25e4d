/**
 * Issue 11, the pieces of `hoopctl exec` that need no server: psql-like statement splitting, and
 * the client framer fed every byte split of a real backend conversation (pg-protocol's
 * inbound-parser tests split buffers the same way).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { splitSql, SplitError } from '../src/client/sql-split.ts';
import { PgSession, rowValues, type StatementResult } from '../src/client/pg-wire.ts';
import type { LinkHandlers, TunnelLink } from '../src/shared/ws-duplex.ts';

const texts = (sql: string) => splitSql(sql).map((s) => s.text);

test('split: semicolons inside quotes, identifiers, dollar quotes, comments and parentheses do not end a statement', () => {
  assert.deepEqual(texts("select 'a;b'; select \"x;y\" from t; select $$;$$, $tag$ $$ ; $tag$; select (1;2)"), [
    "select 'a;b'", 'select "x;y" from t', 'select $$;$$, $tag$ $$ ; $tag$', 'select (1;2)',
  ]);
  assert.deepEqual(texts("select 'it''s;'; select E'\\';' as x; select e'a\\\\'; select 1"), ["select 'it''s;'", "select E'\\';' as x", "select e'a\\\\'", 'select 1']);
  assert.deepEqual(texts('select 1 -- c; not a statement\n; /* a; /* nested; */ still; */ select 2;'), ['select 1 -- c; not a statement', 'select 2'], 'comments before a statement are not part of it');
  assert.deepEqual(texts('select $1; select a$b; from x'), ['select $1', 'select a$b', 'from x'], '$1 and a$b are not dollar quotes');
  assert.deepEqual(texts('select "a""b;" ; select 2'), ['select "a""b;"', 'select 2']);
});

test('split: BEGIN ATOMIC bodies of CREATE FUNCTION/PROCEDURE keep their semicolons; BEGIN elsewhere does not', () => {
  const sql = `create or replace function f() returns int language sql
begin atomic
  select 1;
  select case when true then 2 end;
end;
begin; select 3; commit;`;
  const s = splitSql(sql);
  assert.deepEqual(s.map((x) => x.text.split('\n')[0]), ['create or replace function f() returns int language sql', 'begin', 'select 3', 'commit']);
  assert.deepEqual(s.map((x) => x.line), [1, 6, 6, 6]);
});

test('split: only whitespace and comments is nothing; line numbers; errors name the line', () => {
  assert.deepEqual(splitSql('  -- nothing\n/* here */ ;;\n'), []);
  assert.deepEqual(splitSql('\n\nselect 1;\n\n  select\n2').map((s) => [s.text, s.line]), [['select 1', 3], ['select\n2', 5]]);
  assert.throws(() => splitSql("select 1;\nselect 'open"), (e: unknown) => e instanceof SplitError && e.line === 2 && /unterminated quoted string/.test(e.message));
  assert.throws(() => splitSql('select $x$ body'), /unterminated dollar-quoted string \$x\$/);
  assert.throws(() => splitSql('select 1;\n\\copy t from x.csv'), /line 2: psql meta-command \\copy is not supported/);
  assert.deepEqual(texts("select '\\n'"), ["select '\\n'"], 'a backslash inside a statement is not a meta-command');
});

// ---- the framer

function msg(type: string, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = type.charCodeAt(0);
  h.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([h, body]);
}
const cstr = (s: string) => Buffer.from(`${s}\0`);
const i32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; };
const i16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; };
function rowDesc(cols: Array<[string, number]>): Buffer {
  return msg('T', Buffer.concat([i16(cols.length), ...cols.flatMap(([n, oid]) => [cstr(n), i32(0), i16(0), i32(oid), i16(-1), i32(-1), i16(0)])]));
}
function dataRow(vals: Array<string | null>): Buffer {
  return msg('D', Buffer.concat([i16(vals.length), ...vals.flatMap((v) => (v === null ? [i32(-1)] : [i32(Buffer.byteLength(v)), Buffer.from(v)]))]));
}

const LOGIN = Buffer.concat([msg('R', i32(0)), msg('S', Buffer.concat([cstr('server_version'), cstr('15.0')])), msg('K', Buffer.concat([i32(4242), i32(-7)])), msg('Z', Buffer.from('I'))]);
const ANSWER = Buffer.concat([
  msg('N', Buffer.concat([Buffer.from('SNOTICE\0'), Buffer.from('C00000\0'), Buffer.from('Mhello\0'), Buffer.from([0])])),
  rowDesc([['a', 23], ['b', 25]]), dataRow(['1', 'x']), dataRow([null, 'ünï']), msg('C', cstr('SELECT 2')),
  msg('E', Buffer.concat([Buffer.from('SERROR\0'), Buffer.from('C22012\0'), Buffer.from('Mdivision by zero\0'), Buffer.from('Rint4div\0'), Buffer.from([0])])),
  msg('Z', Buffer.from('I')),
]);

/** a TunnelLink whose incoming bytes the test delivers in chosen pieces */
function fakeLink(): { attach: (h: LinkHandlers) => TunnelLink; deliver(b: Buffer): void; written: Buffer[] } {
  let h: LinkHandlers | undefined;
  const written: Buffer[] = [];
  return {
    written,
    deliver: (b) => h!.data(b),
    attach: (handlers) => {
      h = handlers;
      return { start() {}, write: (b) => { written.push(b); return true; }, cork() {}, uncork() {}, pause() {}, resume() {}, end() {}, destroy() {}, destroyed: false, writableEnded: false };
    },
  };
}

test('framer: a login and a query answer split at every byte boundary give the same messages', async () => {
  const all = Buffer.concat([LOGIN, ANSWER]);
  let expected: string | undefined;
  for (let cut = 1; cut < all.length; cut++) {
    const link = fakeLink();
    const opened = PgSession.open(link.attach, { user: 'u', database: 'd' });
    const seen: string[] = [];
    let result: Promise<StatementResult> | undefined;
    // the session must be open before the query is sent: deliver the login first when the cut is past it
    const first = all.subarray(0, Math.min(cut, LOGIN.length));
    link.deliver(first);
    if (cut < LOGIN.length) link.deliver(all.subarray(cut, LOGIN.length));
    const s = await opened;
    assert.deepEqual([s.pid, s.secret, s.params.get('server_version')], [4242, -7, '15.0']);
    result = s.query('select', {
      columns: (c) => { seen.push(`T:${c.map((x) => `${x.name}/${x.typeOid}`).join(',')}`); },
      row: (b, st) => { seen.push(`D:${JSON.stringify(rowValues(b, st))}`); },
      notice: (f) => { seen.push(`N:${f.message}`); },
    });
    const rest = all.subarray(LOGIN.length);
    const at = Math.max(0, cut - LOGIN.length);
    if (at > 0 && at < rest.length) { link.deliver(rest.subarray(0, at)); link.deliver(rest.subarray(at)); } else link.deliver(rest);
    const r = await result;
    const got = JSON.stringify({ seen, command: r.command, err: r.error && [r.error.sqlstate, r.error.message, r.error.routine], tx: r.txStatus });
    expected ??= got;
    assert.equal(got, expected, `cut at ${cut}`);
  }
  assert.equal(expected, JSON.stringify({ seen: ['N:hello', 'T:a/23,b/25', 'D:["1","x"]', 'D:[null,"ünï"]'], command: 'SELECT 2', err: ['22012', 'division by zero', 'int4div'], tx: 'I' }));
});

test('framer: a sink that says stop holds the rest of the chunk until resume()', async () => {
  const link = fakeLink();
  const opened = PgSession.open(link.attach, {});
  link.deliver(LOGIN);
  const s = await opened;
  const rows: string[] = [];
  const done = s.query('select', { row: (b, st) => { rows.push(String(rowValues(b, st)[1])); return false; } });
  link.deliver(ANSWER);
  assert.deepEqual(rows, ['x'], 'stopped after the first row');
  s.resume();
  assert.deepEqual(rows, ['x', 'ünï']);
  s.resume();
  assert.equal((await done).command, 'SELECT 2');
  assert.equal(link.written[0].readInt32BE(4), 196608, 'a protocol 3.0 startup was sent');
});
