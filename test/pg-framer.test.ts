/**
 * The frontend/backend message framer: byte-exact fixtures split at every boundary (after
 * pg-protocol's inbound-parser tests), fail-closed limits, pause/resume, and random input.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { serialize } from 'pg-protocol';
import { MessageFramer, ProtocolError, MAX_STARTUP_PACKET } from '../src/gateway/engines/postgres/framer.ts';
import {
  parseStartupPacket, parseQuery, parseParse, parseBind, parseExecute, parseTargetRef, startupMessage, cancelRequest,
  parseErrorFields, buildErrorFields, errorResponse, errorField, buildDataRow, forEachValue, F,
} from '../src/gateway/engines/postgres/messages.ts';

type Msg = { code: number; bytes: Buffer };

function frame(chunks: Buffer[], opts: { untagged?: boolean; maxMessageSize?: number; untaggedAfter?: (m: Msg) => boolean } = {}): Msg[] {
  const out: Msg[] = [];
  const f: MessageFramer = new MessageFramer((code, buf, s, e) => {
    const m = { code, bytes: Buffer.from(buf.subarray(s, e)) };
    out.push(m);
    if (opts.untaggedAfter?.(m)) f.untagged = true;
  }, opts);
  for (const c of chunks) f.push(c);
  return out;
}

const sslRequest = serialize.requestSsl();
const startup = startupMessage([['user', 'alice'], ['database', 'app'], ['application_name', 'psql']]);
const frontend: Buffer[] = [
  serialize.query('select 1; select 2'),
  serialize.parse({ name: 's1', text: 'select $1::int', types: [23] }),
  serialize.bind({ portal: 'p1', statement: 's1', values: ['42', null, Buffer.from([1, 2, 3])] }),
  serialize.describe({ type: 'P', name: 'p1' }),
  serialize.execute({ portal: 'p1', rows: 10 }),
  serialize.close({ type: 'S', name: 's1' }),
  serialize.flush(),
  serialize.sync(),
  serialize.copyData(Buffer.from('a\tb\n')),
  serialize.copyDone(),
  serialize.copyFail('nope'),
  Buffer.from([F.FunctionCall, 0, 0, 0, 4 + 4 + 2 + 2 + 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
  serialize.end(),
];

test('a whole session of frontend messages frames identically at every split point', () => {
  const stream = Buffer.concat([sslRequest, startup, ...frontend]);
  const expected = [sslRequest, startup, ...frontend];
  const isSsl = (m: Msg) => m.code === 0 && m.bytes.length === 8;
  for (let i = 0; i <= stream.length; i++) {
    const got = frame([stream.subarray(0, i), stream.subarray(i)], { untagged: true, untaggedAfter: isSsl });
    assert.equal(got.length, expected.length, `split at ${i}`);
    got.forEach((m, j) => assert.deepEqual(m.bytes, expected[j], `split at ${i}, message ${j}`));
  }
});

test('every three-way split and one-byte chunks give the same messages', () => {
  const stream = Buffer.concat(frontend.slice(0, 6));
  for (let i = 0; i <= stream.length; i += 3) {
    for (let j = i; j <= stream.length; j += 5) {
      const got = frame([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
      assert.deepEqual(got.map((m) => m.bytes), frontend.slice(0, 6));
    }
  }
  const bytes = [...stream].map((b) => Buffer.from([b]));
  assert.deepEqual(frame(bytes).map((m) => m.bytes), frontend.slice(0, 6));
});

test('whole messages in one chunk are views of that chunk, not copies', () => {
  const chunk = Buffer.concat(frontend.slice(0, 3));
  const seen: Buffer[] = [];
  new MessageFramer((_c, buf) => seen.push(buf)).push(chunk);
  assert.equal(seen.length, 3);
  for (const b of seen) assert.equal(b, chunk);
});

test('frontend message readers decode the fixtures', () => {
  const [q, p, b, d, e, c] = frontend;
  assert.equal(parseQuery(q, 0, q.length), 'select 1; select 2');
  assert.deepEqual(parseParse(p, 0, p.length), { statement: 's1', text: 'select $1::int', paramTypes: [23] });
  const bind = parseBind(b, 0, b.length);
  assert.equal(bind.portal, 'p1');
  assert.equal(bind.statement, 's1');
  assert.deepEqual(bind.params.map((x) => x && [...x]), [[...Buffer.from('42')], null, [1, 2, 3]]);
  assert.deepEqual(parseTargetRef(d, 0, d.length), { kind: 'P', name: 'p1' });
  assert.deepEqual(parseExecute(e, 0, e.length), { portal: 'p1', maxRows: 10 });
  assert.deepEqual(parseTargetRef(c, 0, c.length), { kind: 'S', name: 's1' });
  const s = parseStartupPacket(startup, 0, startup.length);
  assert.equal(s.name, 'startup');
  assert.equal(s.name === 'startup' && s.params.get('user'), 'alice');
  assert.deepEqual(parseStartupPacket(sslRequest, 0, 8), { name: 'sslRequest' });
  const cr = cancelRequest(1234, -5);
  assert.deepEqual(parseStartupPacket(cr, 0, cr.length), { name: 'cancelRequest', pid: 1234, secret: -5 });
});

test('ErrorResponse and DataRow round-trip', () => {
  const err = errorResponse('ERROR', '42501', 'blocked', { detail: 'd', hint: 'h' });
  const fields = parseErrorFields(err, 0, err.length);
  assert.equal(errorField(fields, 'C'), '42501');
  assert.equal(errorField(fields, 'M'), 'blocked');
  assert.deepEqual(buildErrorFields(err[0], fields), err);
  const row = buildDataRow(['a', null, Buffer.from('xyz'), '']);
  const vals: Array<string | null> = [];
  forEachValue(row, 0, row.length, (_i, pos, len) => vals.push(len < 0 ? null : row.toString('utf8', pos, pos + len)));
  assert.deepEqual(vals, ['a', null, 'xyz', '']);
});

test('oversized and malformed lengths fail closed before buffering', () => {
  const huge = Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff]);
  assert.throws(() => frame([huge], { maxMessageSize: 1024 }), ProtocolError);
  assert.throws(() => frame([Buffer.from([0x51, 0, 0, 0, 3])]), /invalid message length 3/);
  // the header split across chunks is checked as soon as it is complete
  assert.throws(() => frame([Buffer.from([0x51, 0x00]), Buffer.from([0x10, 0x00, 0x00])], { maxMessageSize: 1024 }), /exceeds the limit/);
  const bigStartup = Buffer.alloc(8);
  bigStartup.writeInt32BE(MAX_STARTUP_PACKET + 1, 0);
  assert.throws(() => frame([bigStartup], { untagged: true }), /exceeds the limit of 10000/);
  // a failed framer stays failed
  const f = new MessageFramer(() => undefined, { maxMessageSize: 16 });
  assert.throws(() => f.push(huge), ProtocolError);
  assert.throws(() => f.push(frontend[0]), ProtocolError);
});

test('pause stops after the current message; resume continues in order', () => {
  const got: number[] = [];
  const f: MessageFramer = new MessageFramer((code) => { got.push(code); if (got.length === 2) f.pause(); });
  const stream = Buffer.concat(frontend.slice(0, 5));
  f.push(stream.subarray(0, 40));
  f.push(stream.subarray(40));
  assert.equal(got.length, 2);
  assert.ok(f.isPaused);
  assert.ok(f.pendingBytes > 0);
  f.resume();
  assert.deepEqual(got, frontend.slice(0, 5).map((b) => b[0]));
  assert.equal(f.pendingBytes, 0);
});

test('random input never crashes: it frames or throws ProtocolError', () => {
  for (let round = 0; round < 2000; round++) {
    const data = randomBytes(1 + Math.floor(Math.random() * 200));
    // most random lengths are huge; make some plausible
    if (round % 2 === 0 && data.length > 5) data.writeInt32BE(Math.floor(Math.random() * data.length), 1);
    try {
      const msgs = frame([data.subarray(0, data.length >> 1), data.subarray(data.length >> 1)], { maxMessageSize: 1 << 20, untagged: round % 3 === 0 });
      for (const m of msgs) {
        // readers on random bodies throw only ProtocolError/RangeError
        try {
          if (m.code === 0) parseStartupPacket(m.bytes, 0, m.bytes.length);
          else if (m.code === F.Bind) parseBind(m.bytes, 0, m.bytes.length);
          else if (m.code === F.Parse) parseParse(m.bytes, 0, m.bytes.length);
          else if (m.code === F.Query) parseQuery(m.bytes, 0, m.bytes.length);
        } catch (err) {
          assert.ok(err instanceof ProtocolError || err instanceof RangeError, String(err));
        }
      }
    } catch (err) {
      assert.ok(err instanceof ProtocolError, String(err));
    }
  }
});

test('truncated input produces no message', () => {
  const stream = Buffer.concat(frontend.slice(0, 3));
  for (let i = 0; i < frontend[0].length; i++) assert.equal(frame([stream.subarray(0, i)]).length, 0);
});
