/**
 * Verdicts shared by shape (src/gateway/policy/guardrails/lexer.ts, shape.ts): texts that
 * differ only in literal values reuse one analysis. This is a security control, so the test is
 * differential: for a large corpus and many literal variations of each text, in every order
 * (each variant seen first), the shape-sharing judge must return exactly what a judge that
 * never shares returns, and outputDerivation exactly what an uncached derivation returns.
 * Plus the lexer on every lexical form, checked against PostgreSQL's own scanner, and the
 * cost of a new-literal judge(). Pure: the real parser (libpg-query), no server.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { runInNewContext } from 'node:vm';
import { scanSync } from 'libpg-query';
import { GUARDRAIL_RULES, type GuardrailsConfig } from '../src/gateway/config/schema.ts';
import { compileGuardrails, GuardrailSession, initGuardrails, outputDerivation, type Verdict } from '../src/gateway/policy/guardrails/index.ts';
import { Rules } from '../src/gateway/policy/guardrails/judge.ts';
import { sqlShape } from '../src/gateway/policy/guardrails/lexer.ts';
import { computeDerivation } from '../src/gateway/policy/guardrails/derivation.ts';
import { normalizeForPatterns } from '../src/gateway/policy/guardrails/parser.ts';
import { patternForms, shapeEntry, sharedAnalysis } from '../src/gateway/policy/guardrails/shape.ts';

before(async () => {
  await initGuardrails();
});

const cfg = (c: Partial<GuardrailsConfig>): GuardrailsConfig => ({ deny: [], review: [], deny_patterns: [], deny_functions: [], ...c });

/** The key with each cut-out literal shown as ?i ?f ?d ?s. */
const shown = (sql: string) => sqlShape(sql)?.key.replace(/\0/g, '?');

// A text no earlier test has shaped: a comment is verbatim in the shape key.
let runs = 0;
const fresh = () => `/* run ${++runs} */ `;

// ---------------------------------------------------------------------------------------------
// The lexer

test('lexer: numbers are cut out with the class PostgreSQL gives them', () => {
  assert.equal(shown('SELECT abalance FROM pgbench_accounts WHERE aid = 48213;'), 'SELECT abalance FROM pgbench_accounts WHERE aid = ?i;');
  assert.equal(shown('select 42, 4.2, .5, 1e5, 1.e3, 2.5E-3, .5e+2, 1.'), 'select ?i, ?f, ?d, ?f, ?f, ?f, ?d, ?f');
  // ICONST while it fits in int32 (underscores and leading zeros allowed), FCONST beyond
  assert.equal(shown('select 2147483647, 2147483648, 1_000, 2_147_483_648, 0000000000012, 99999999999'), 'select ?i, ?f, ?i, ?f, ?i, ?f');
  // hex/octal/binary integers and parameters stay verbatim
  assert.equal(shown('select 0x1F + 0o17 + 0b101 + 0X_ff + $1 + $2::int + 3'), 'select 0x1F + 0o17 + 0b101 + 0X_ff + $1 + $2::int + ?i');
  // signs are operators; `--` is a comment wherever it starts
  assert.equal(shown('select -5, x*-5, 1--2\n, 3'), 'select -?i, x*-?i, ?i--2\n, ?i');
  // digits inside identifiers, quoted identifiers, comments and dollar quotes are not literals
  assert.equal(shown('select t1.c2, a$1, "col 3", "x""4", 日本5 from t1 /* 6 /* 7 */ 8 */ where c = 9 -- 10'), 'select t1.c2, a$1, "col 3", "x""4", 日本5 from t1 /* 6 /* 7 */ 8 */ where c = ?i -- 10');
  assert.equal(shown('select $$ 1 $$, $tag$ 2 $x$ 3 $tag$, $a1$ $ $a1$, 4'), 'select $$ 1 $$, $tag$ 2 $x$ 3 $tag$, $a1$ $ $a1$, ?i');
  assert.equal(sqlShape('select a, b from t'), undefined, 'no literal, no shape');
});

test('lexer: plain strings are cut out, other string forms stay verbatim', () => {
  assert.equal(shown("select 'a', '', 'it''s', 'é€'"), 'select ?s, ?s, ?s, ?s');
  assert.equal(shown("select E'a\\'b''c', e'\\\\', 1"), "select E'a\\'b''c', e'\\\\', ?i");
  assert.equal(shown("select N'x', n'y''z', B'01', x'ff', 1"), "select N'x', n'y''z', B'01', x'ff', ?i");
  // an identifier ending in e/b/x/n before a quote is an identifier, then a plain string
  assert.equal(shown("select date'2020-01-01', abe'x'"), 'select date?s, abe?s');
  assert.equal(shown("select 'a';\nselect 'b'"), 'select ?s;\nselect ?s');
});

test('lexer: gives up on what it does not model exactly', () => {
  for (const sql of [
    "select 'a\\b'", // backslash outside E'' (standard_conforming_strings)
    "select U&'\\0061', 1", 'select U&"a", 1', "select u&'x'",
    "select 'unterminated", 'select "x', 'select $a', 'select $$x', 'select $a$ x $b$', 'select 1 /* x', 'select 1 /* /* */',
    'select 1e', 'select 1e+', 'select 1_', 'select 1__0', 'select 12abc', 'select 1..2', 'select 1.5.2', 'select 0x', 'select 0b102', 'select $1abc, 2', 'select 1$',
    "select 'a'\n'b'", "select 'a' -- c\n'b'", "select 'a' /* c */ 'b'", "select e'a'\n'b'",
    "select :'v', 1", 'select :"v", 1', 'select 1 \\g',
    "select '\0', 1", 'select 1\v', "select 'Σ', 1", "select '\ud800', 1", "select 'x\udc00', 1",
    'select ' + '1 + '.repeat(10_000) + '1',
  ]) assert.equal(sqlShape(sql), undefined, JSON.stringify(sql));
  // pairs and other whitespace are fine
  assert.equal(shown("select '😀', 1\t\r\n\f"), "select ?s, ?i\t\r\n\f");
  assert.equal(shown('select a[1:2], x::int, 3'), 'select a[?i:?i], x::int, ?i');
});

// ---------------------------------------------------------------------------------------------
// The corpus: every string of the existing guardrails tests, plus statements aimed at sharing.

function stringsOf(file: string): string[] {
  const src = readFileSync(new URL(file, import.meta.url), 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"/g)) {
    const s = runInNewContext(m[0]) as string;
    if (/\s/.test(s) && /^[\s(/-]*[a-z(]/i.test(s)) out.push(s);
  }
  return out;
}

const EXTRA = [
  'SELECT abalance FROM pgbench_accounts WHERE aid = 48213;',
  'UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 1234;',
  'UPDATE pgbench_tellers SET tbalance = tbalance + 123 WHERE tid = 7;',
  "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (5, 1, 48213, -4711, CURRENT_TIMESTAMP);",
  'BEGIN; UPDATE pgbench_accounts SET abalance = abalance + 10 WHERE aid = 3; SELECT abalance FROM pgbench_accounts WHERE aid = 3; END;',
  'DELETE FROM t WHERE 1 = 1', 'DELETE FROM t WHERE 1 = 2', 'DELETE FROM t WHERE 1 = 2 OR id = 3', 'delete from t where id = 5 and 2 > 1',
  'UPDATE t SET a = 1 WHERE 5 = 5', 'UPDATE t SET a = 1 WHERE id = 5', 'UPDATE t SET a = 1 WHERE 5 = id', 'UPDATE t SET a = 2 WHERE id = 5 + 1',
  "DELETE FROM t WHERE 'yes'", "DELETE FROM t WHERE 'no'", "DELETE FROM t WHERE '1'::bool", "DELETE FROM t WHERE 1::bool", "DELETE FROM t WHERE 't'::boolean AND id = 4",
  'DELETE FROM t WHERE 5 IS NULL OR 5 IS NOT NULL', 'DELETE FROM t WHERE 5 IS NULL OR 6 IS NOT NULL', 'DELETE FROM t WHERE 5 IS NOT DISTINCT FROM 5', 'DELETE FROM t WHERE NOT 1 = 2',
  'DELETE FROM t WHERE (1 = 1) IS TRUE', "DELETE FROM t WHERE 'a' || 'b' = 'ab'", 'MERGE INTO t USING s ON 1 = 1 WHEN MATCHED THEN DELETE', 'MERGE INTO t USING s ON t.id = 5 WHEN MATCHED AND 1 = 1 THEN UPDATE SET a = 2',
  "SELECT query_to_xml('select 1', true, true, '')", "SELECT query_to_xml('DROP TABLE t', true, true, '')", "SELECT * FROM dblink('conn', 'select 5') AS r(a int)",
  "SELECT dblink_exec('dbname=x', 'DELETE FROM t WHERE id = 1')", "SELECT set_config('work_mem', '1MB', false)", "SELECT set_config('role', 'x', true)",
  "SELECT pg_read_file('/etc/passwd')", "SELECT pg_ls_dir('x'), 'pg_read_file'", "SELECT 'drop table t', 1", "SELECT * FROM t LIMIT 1000", 'select * from t limit 10 offset 1000',
  "SELECT * FROM t WHERE a = 'drop table x' -- 1000\n LIMIT 5", 'SELECT 42 /* 1000 */', "SELECT x FROM t1 JOIN t2 ON t1.a2 = t2.a2 WHERE t1.b3 > 3", 'select "t 1".c from "t 1" where "c" = 1',
  "DO $$ BEGIN PERFORM 1; END $$", "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", "select 5; DO $$ BEGIN DELETE FROM t; END $$", "select $q$ drop table t $q$, 5",
  "select E'drop\\ntable', 5", "select e'\\x41', 7 limit 1000", "select N'x', 1", 'select 1::float(5)', 'select 1::float(30)', 'select 1::float(0)', "select 'x'::varchar(10), 5::numeric(10, 2)",
  "select interval '1 day', interval(3) '2 hours', timestamp(2) '2020-01-01', date '2020-01-01'", "select extract('year' from now()), 5", 'EXPLAIN (ANALYZE 0) SELECT 1', 'EXPLAIN (ANALYZE 1) SELECT 1',
  "EXPLAIN (ANALYZE 'off') SELECT 1", 'FETCH 5 FROM c', 'FETCH FIRST 5 ROWS ONLY', 'SELECT * FROM t FETCH FIRST 5 ROWS ONLY', 'SELECT * FROM t ORDER BY 1 LIMIT 5 OFFSET 2',
  "SET work_mem = 64", "SET work_mem TO '1MB'", "SET statement_timeout = 5000", "SET ROLE 'postgres'", "ALTER SYSTEM SET work_mem = 5", 'SET TIME ZONE 5', "SET TIME ZONE INTERVAL '1' HOUR",
  "CREATE TABLE t (a int DEFAULT 5, b varchar(20) CHECK (b <> 'x'))", "CREATE TABLE p PARTITION OF q FOR VALUES WITH (MODULUS 4, REMAINDER 1)", "CREATE SEQUENCE s START 5",
  'CREATE FUNCTION f(a int DEFAULT 5) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$', "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "COMMENT ON TABLE t IS 'x'",
  "COPY t FROM STDIN WITH (DELIMITER ',')", "COPY t TO '/tmp/x'", "NOTIFY c, 'x'", "SELECT pg_notify('c', 'x')", "PREPARE TRANSACTION 'x'", 'LISTEN c', "LOAD 'x'",
  'PREPARE p AS DELETE FROM t WHERE id = 5; EXECUTE p', 'PREPARE q AS SELECT 5', 'EXECUTE q', 'EXECUTE p(5)',
  "SELECT CASE WHEN a = 1 THEN 'x' ELSE 'y' END, a IN (1, 2, 3), a BETWEEN 1 AND 5 FROM t WHERE b LIKE 'a%' ESCAPE '!'",
  "SELECT * FROM t WHERE a = ANY('{1,2}'::int[]) AND b = 5", 'SELECT a[1], (b).c, 5 FROM t', "VALUES (1, 'a'), (2, 'b')", "SELECT 'é€日本', 5 FROM t WHERE x = 'ü'",
  "SELECT email, ssn, 5 AS email2, 'x' AS ssn FROM c WHERE id = 5", 'select 1 as email', "select reverse(email) || '5' from c where id = 5", "select * from (select ssn as x, 5 from c where id = 1) s",
  "with w as (select email, 1 from c limit 5) select * from w", 'select count(*) filter (where ssn > 5) from c', "select id, card_number from c union all select 1, '2'",
  "insert into c (id, email) values (5, 'a@b') returning id, email", "update c set name = 'x' where id = 5 returning *", 'select row_to_json(c) from c where c.id = 5',
  "select * from t tablesample system (10) repeatable (5)", "select * from generate_series(1, 10) g", 'select 1 from t where a = -2147483648', 'select - - 5', 'select -(5)',
  "select 'a' = 'a'", "select true where 'x' = 'x'", "delete from t where 'x' = 'x'", 'delete from t where 0.5 > .4', 'delete from t where 1e5 > 99999',
  'select x@-5, x !=-5, x<>-5, 5-5 from t', "select 5 + + 5, 'x' :: text, 3::int8::text",
];

const corpus = [...new Set([...stringsOf('./guardrails.test.ts'), ...EXTRA])];

// Values a literal is changed to: same class and other classes, values that flip constant
// folding, strings that read as SQL or match deny_patterns, non-ASCII.
const VALUES = [
  '0', '1', '2', '5', '7', '42', '1000', '2147483647', '2147483648', '99999999999', '1_000', '007', '-1',
  '1.5', '.5', '0.0', '1e5', '2.5E-3', '1.', '1000.0',
  "''", "'x'", "'t'", "'f'", "'yes'", "'no'", "'off'", "'1'", "'0'", "'role'", "'work_mem'", "'drop table t'", "'DELETE FROM t'",
  "'SELECT 1'", "'TRUNCATE t'", "'select pg_read_file(''/etc/passwd'')'", "'it''s'", "'limit 1000'", "'日本'", "'a--b'", "'/*'", "'$$'", "'\"'", "'ab'",
];

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The literal tokens PostgreSQL's scanner sees (plain numbers and '...' strings), as [start, end). */
function scannerLiterals(sql: string): Array<[number, number]> {
  let tokens;
  try {
    tokens = scanSync(sql).tokens;
  } catch {
    return [];
  }
  const buf = Buffer.from(sql, 'utf8');
  const out: Array<[number, number]> = [];
  for (const t of tokens) {
    const text = buf.subarray(t.start, t.end).toString('utf8');
    if ((t.tokenName === 'ICONST' || t.tokenName === 'FCONST') && /^[0-9.]/.test(text) && !/^0[xob]/i.test(text)) out.push([t.start, t.end]);
    else if (t.tokenName === 'SCONST' && text.startsWith("'")) out.push([t.start, t.end]);
  }
  // byte offsets to UTF-16 offsets
  return out.map(([s, e]) => [buf.subarray(0, s).toString('utf8').length, buf.subarray(0, e).toString('utf8').length]);
}

/** Texts that differ from `sql` only in literal values: the original first, then variations. */
function variants(sql: string, seed: number, count: number): string[] {
  const spans = scannerLiterals(sql);
  const shape = sqlShape(sql);
  // also vary what the lexer cut out, so a lexer mistake would change something that matters
  const lexed: Array<[number, number]> = [];
  for (let k = 0; shape && k < shape.spans.length; k += 2) lexed.push([shape.spans[k], shape.spans[k + 1]]);
  const out = new Set([sql]);
  const rnd = prng(seed);
  for (const set of [spans, lexed]) {
    if (set.length === 0) continue;
    for (let v = 0; v < count; v++) {
      let s = sql;
      for (let k = set.length - 1; k >= 0; k--) {
        const [a, b] = set[k];
        const old = sql.slice(a, b);
        // half the time keep the class, so most variants share the shape
        const pool = rnd() < 0.5 ? VALUES.filter((x) => x.startsWith("'") === old.startsWith("'")) : VALUES;
        s = s.slice(0, a) + pool[Math.floor(rnd() * pool.length)] + s.slice(b);
      }
      out.add(s);
    }
  }
  return [...out];
}

test('lexer: every cut-out literal is exactly one literal token of PostgreSQL\'s scanner', () => {
  let shaped = 0;
  for (const [n, base] of corpus.entries()) {
    for (const sql of variants(base, n, 4)) {
      const shape = sqlShape(sql);
      if (!shape) continue;
      shaped++;
      const truth = scannerLiterals(sql);
      const mine: Array<[number, number]> = [];
      for (let k = 0; k < shape.spans.length; k += 2) mine.push([shape.spans[k], shape.spans[k + 1]]);
      // the scanner may also report N'..' strings' inner part; all of the lexer's must be real
      for (const span of mine) assert.ok(truth.some(([a, b]) => a === span[0] && b === span[1]), `${JSON.stringify(sql)}: ${JSON.stringify(span)} is not a literal token`);
      const classes = [...shape.key.matchAll(/\0(.)/g)].map((m) => m[1]);
      const tokens = scanSync(sql).tokens;
      const buf = Buffer.from(sql, 'utf8');
      for (const [k, [a]] of mine.entries()) {
        const at = Buffer.byteLength(sql.slice(0, a), 'utf8');
        const tok = tokens.find((t) => t.start === at);
        const want = classes[k] === 'i' ? 'ICONST' : classes[k] === 's' ? 'SCONST' : 'FCONST';
        assert.equal(tok?.tokenName, want, `${JSON.stringify(sql)}: ${buf.subarray(tok?.start ?? 0, tok?.end ?? 0)}`);
      }
    }
  }
  assert.ok(shaped > 500, `only ${shaped} texts shaped`);
});

// ---------------------------------------------------------------------------------------------
// Differential: shared verdicts equal unshared ones, whatever was seen first.

const CONFIGS: Record<string, Partial<GuardrailsConfig>> = {
  'deny every rule + digit patterns': { deny: [...GUARDRAIL_RULES], deny_patterns: ['pg_read_file', 'limit\\s+1000', '\\b42\\b', "'drop table", '1\\s*=\\s*1', 'e5', '日本'] },
  'review every rule': { review: [...GUARDRAIL_RULES] },
  'product example + patterns on values': {
    deny: ['drop', 'truncate', 'delete_without_where', 'update_without_where', 'set_role'],
    review: ['delete', 'update', 'insert', 'alter', 'set'],
    deny_patterns: ['pg_read_file', 'limit 1000', '2147483647', "'yes'", 'x\\s*=\\s*-5', '^select 5'],
  },
};

const isMasked = (c: string) => c === 'email' || c === 'ssn' || c.includes('card');

for (const [name, c] of Object.entries(CONFIGS)) {
  test(`differential (${name}): shared verdicts are exactly the unshared ones, in every order`, () => {
    const shared = compileGuardrails(cfg(c));
    const reference = new Rules(cfg(c), { shareByShape: false });
    let judged = 0;
    let sharedHits = 0;
    for (const [n, base] of corpus.entries()) {
      const vs = variants(base, 1000 + n, 5);
      // every variant gets to be the first one seen (the one whose analysis is shared)
      for (let first = 0; first < vs.length; first++) {
        const tag = fresh();
        const order = [...vs.slice(first), ...vs.slice(0, first)].map((s) => tag + s);
        const a = new GuardrailSession(shared);
        const b = new GuardrailSession(reference);
        for (const sql of order) {
          const e = sqlShape(sql);
          if (e && shapeEntry(sql, e).text !== sql && sharedAnalysis(shapeEntry(sql, e))) sharedHits++;
          const got: Verdict = a.judge(sql);
          const want: Verdict = b.judge(sql);
          assert.deepEqual(got, want, `${JSON.stringify(sql)} (order: ${JSON.stringify(order)})`);
          judged++;
        }
      }
    }
    console.log(`# ${judged} judgements, ${sharedHits} served by a shape`);
    assert.ok(sharedHits > 1000, `sharing barely happened: ${sharedHits}`);
  });
}

test('differential: outputDerivation shared by shape equals the uncached derivation', () => {
  let n = 0;
  for (const [i, base] of corpus.entries()) {
    const vs = variants(base, 5000 + i, 4);
    for (let first = 0; first < vs.length; first++) {
      const tag = fresh();
      for (const s of [...vs.slice(first), ...vs.slice(0, first)]) {
        const sql = tag + s;
        assert.deepEqual(outputDerivation(sql, isMasked), computeDerivation(sql, isMasked), JSON.stringify(sql));
        n++;
      }
    }
  }
  assert.ok(n > 1000);
});

test('differential: deny_patterns forms rebuilt from a shape equal the scanner-built ones', () => {
  let checked = 0;
  for (const [i, base] of corpus.entries()) {
    const tag = fresh();
    for (const s of variants(base, 9000 + i, 5)) {
      const sql = tag + s;
      const shape = sqlShape(sql);
      if (!shape) continue;
      const e = shapeEntry(sql, shape);
      if (!sharedAnalysis(e)) continue;
      const forms = patternForms(e, sql, shape);
      if (!forms) continue;
      assert.deepEqual(forms, normalizeForPatterns(sql), JSON.stringify(sql));
      checked++;
    }
  }
  assert.ok(checked > 300, `only ${checked} checked`);
});

// ---------------------------------------------------------------------------------------------
// The cases the sharing must get right, named

test('a verdict that read a literal value is not shared: 1=1 and 1=2, either first', () => {
  const rules = compileGuardrails(cfg({ deny: ['delete_without_where'] }));
  for (const order of [['DELETE FROM t WHERE 1 = 1', 'DELETE FROM t WHERE 1 = 2'], ['DELETE FROM t WHERE 1 = 2', 'DELETE FROM t WHERE 1 = 1']]) {
    const tag = fresh();
    const g = new GuardrailSession(rules);
    for (const sql of order) assert.equal(g.judge(tag + sql).action, sql.endsWith('1 = 1') ? 'deny' : 'allow', sql);
  }
  const e = (sql: string) => sharedAnalysis(shapeEntry(sql, sqlShape(sql)!));
  assert.equal(e(fresh() + 'DELETE FROM t WHERE 1 = 2'), null);
  assert.notEqual(e(fresh() + 'DELETE FROM t WHERE id = 2'), null, 'a plain comparison is shared');
  assert.notEqual(e(fresh() + 'SELECT abalance FROM pgbench_accounts WHERE aid = -5'), null, 'a negative literal is shared');
  assert.equal(e(fresh() + "SELECT query_to_xml('select 1', true, true, '')"), null, 'SQL inside a string is never shared');
  assert.equal(e(fresh() + "SELECT set_config('work_mem', '1MB', false)"), null);
  assert.equal(e(fresh() + 'select 1::float(5)'), null, 'float(p) is validated by the grammar: no shared tree');
  assert.equal(e(fresh() + 'EXPLAIN (ANALYZE 0) SELECT 1'), null, 'option values are not A_Const');
  assert.equal(e(fresh() + 'PREPARE p AS SELECT 5'), null, 'PREPARE/EXECUTE depend on the session');
});

test('SQL inside string literals is judged for each text', () => {
  const g = new GuardrailSession(compileGuardrails(cfg({ deny: ['drop'] })));
  const tag = fresh();
  assert.deepEqual(g.judge(tag + "SELECT query_to_xml('select 1', true, true, '')"), { action: 'allow' });
  assert.equal(g.judge(tag + "SELECT query_to_xml('drop table t', true, true, '')").action, 'deny');
  assert.deepEqual(g.judge(tag + "SELECT 'drop table t', 5"), { action: 'allow' });
  assert.deepEqual(g.judge(tag + "SELECT 'select 1', 6"), { action: 'allow' });
});

test('deny_patterns see each text\'s own literal values', () => {
  const g = new GuardrailSession(compileGuardrails(cfg({ deny_patterns: ['limit\\s+1000\\b', "'drop table", 'where\\s+id\\s*=\\s*42$'] })));
  const tag = fresh();
  assert.deepEqual(g.judge(tag + 'SELECT * FROM t LIMIT 10'), { action: 'allow' });
  assert.equal(g.judge(tag + 'SELECT * FROM t LIMIT 1000').action, 'deny');
  assert.equal(g.judge(tag + 'SELECT * FROM t LIMIT    1000').action, 'deny');
  assert.deepEqual(g.judge(tag + 'SELECT * FROM t LIMIT 10000'), { action: 'allow' });
  assert.deepEqual(g.judge(tag + "SELECT 'drop view'"), { action: 'allow' });
  assert.equal(g.judge(tag + "SELECT 'DROP TABLE x'").action, 'deny', 'normalized forms are lowercased');
  assert.deepEqual(g.judge(tag + 'select * from t where id = 41'), { action: 'allow' });
  assert.equal(g.judge(tag + 'select * from t where id = 42').action, 'deny');
  // a comment with digits is verbatim: part of the shape, never a literal; patterns still
  // see it in the raw text, not in the normalized forms
  assert.equal(g.judge(tag + 'SELECT * FROM t /* limit 1000 */ LIMIT 5').action, 'deny');
  assert.equal(g.judge(tag + 'SELECT * FROM t /* limit 1000 */ LIMIT 6').action, 'deny');
  assert.deepEqual(g.judge(tag + 'SELECT * FROM t LIMIT /* 1000 */ 5'), { action: 'allow' });
  assert.equal(g.judge(tag + 'SELECT * FROM t LIMIT /* 5 */ 1000').action, 'deny');
});

test('PREPARE/EXECUTE and named statements stay session-correct with shapes', () => {
  const rules = compileGuardrails(cfg({ deny: ['drop'], review: ['delete'] }));
  const tag = fresh();
  const g = new GuardrailSession(rules);
  // a named extended-protocol statement whose verdict came from a shape is remembered
  assert.equal(g.judge(tag + 'DELETE FROM t WHERE id = 1', 'S_1').action, 'review');
  assert.equal(g.judge(tag + 'DELETE FROM t WHERE id = 2', 'S_2').action, 'review');
  assert.equal(g.judge('EXECUTE "S_2"').action, 'review');
  assert.equal(g.judge(tag + 'SELECT 5', 'S_3').action, 'allow');
  assert.equal(g.judge(tag + 'SELECT 6', 'S_4').action, 'allow');
  assert.equal(g.judge('EXECUTE "S_4"').action, 'allow');
  assert.equal(new GuardrailSession(rules).judge('EXECUTE "S_4"').action, 'deny', 'sessions still do not share');
  // texts with PREPARE/EXECUTE never share
  assert.equal(g.judge(tag + 'PREPARE a AS SELECT 1').action, 'allow');
  assert.equal(g.judge(tag + 'PREPARE b AS DELETE FROM t WHERE id = 1').action, 'allow');
  assert.equal(g.judge('EXECUTE a').action, 'allow');
  assert.equal(g.judge('EXECUTE b').action, 'review');
});

test('a new-literal judge() costs a few microseconds (pgbench simple mode)', () => {
  const c = cfg({ deny: ['drop', 'truncate', 'delete_without_where', 'update_without_where'], deny_patterns: ['pg_read_file'] });
  const rnd = prng(7);
  const texts = (n: number) => Array.from({ length: n }, () => `SELECT abalance FROM pgbench_accounts WHERE aid = ${1 + Math.floor(rnd() * 100_000_000)};`);
  const measure = (g: GuardrailSession, xs: string[]) => {
    const t0 = process.hrtime.bigint();
    for (const x of xs) assert.equal(g.judge(x).action, 'allow');
    return Number(process.hrtime.bigint() - t0) / xs.length / 1000;
  };
  const full = new GuardrailSession(new Rules(c, { shareByShape: false }));
  measure(full, texts(300));
  const before = measure(full, texts(1000));
  const g = new GuardrailSession(compileGuardrails(c));
  measure(g, texts(50_000));
  const after = Math.min(measure(g, texts(50_000)), measure(g, texts(50_000)));
  console.log(`# judge() of a statement with new literal values: ${after.toFixed(2)} µs shared by shape, ${before.toFixed(1)} µs full analysis`);
  assert.ok(after < 50, `${after} µs`);
  assert.ok(after < before, 'sharing must be faster than the full analysis');
  const d0 = process.hrtime.bigint();
  const ds = texts(20_000);
  for (const x of ds) outputDerivation(x, isMasked);
  const dus = Number(process.hrtime.bigint() - d0) / ds.length / 1000;
  console.log(`# outputDerivation() of a statement with new literal values: ${dus.toFixed(2)} µs`);
  assert.ok(dus < 50, `${dus} µs`);
});
