/**
 * contentMayMatch: the detectors' pre-check taken over UTF-8 bytes (bulk DataRow values and COPY
 * rows skip decoding when it says no). Differential: whenever it says no, maskContent on the
 * decoded text (and maskCopyLine / maskCsvLine on the row) must leave the text unchanged.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteScreen, compileMasking, contentMayMatch, maskContent, maskCopyLine, maskCsvLine } from '../src/gateway/policy/masking/index.ts';

const all = compileMasking({ columns: [], detectors: ['email', 'credit_card', 'ssn', 'phone', 'iban', 'ipv4', 'secret'] });
const some = compileMasking({ columns: [], detectors: ['email', 'credit_card', 'ssn'] });

const POSITIVES = [
  'alice@example.com', 'mail: bob.smith@mail.example.org.', '4111 1111 1111 1111', '4111-1111-1111-1111', '4111111111111111',
  '123-45-6789', '+1 (555) 123-4567', '020 7946 0958', 'DE89 3704 0044 0532 0130 00', '10.1.2.3',
  'token=ghp_abcdefghijklmnopqrstuvwxyz0123456789', 'password: hunter2hunter2', 'postgres://u:secret@db/x',
  'é alice@exämple.com', '€ 5500 0000 0000 0004 €', '4222222222222', 'x4222222222222y', '378282246310005',
];

/** xorshift32, deterministic: an integer in [0, n) */
function random(seed: number): (n: number) => number {
  let x = seed;
  return (n) => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return Math.floor(((x >>> 0) / 2 ** 32) * n); };
}

function bytesOf(s: string): Buffer { return Buffer.from(s, 'utf8'); }

function check(m: ReturnType<typeof compileMasking>, s: string): void {
  const b = bytesOf(s);
  // a prefix and a suffix around the value, as in a DataRow
  const framed = Buffer.concat([Buffer.from([1, 2, 3]), b, Buffer.from([4, 5])]);
  const may = contentMayMatch(m, framed, 3, 3 + b.length);
  if (!may) assert.equal(maskContent(m, s), s, `pre-check said no for ${JSON.stringify(s)}`);
}

test('every detector example is seen by the byte pre-check', () => {
  for (const s of POSITIVES) {
    assert.ok(contentMayMatch(all, bytesOf(s), 0, bytesOf(s).length), s);
    assert.notEqual(maskContent(all, s), s, s);
  }
});

test('when the byte pre-check says no, no detector changes the text (random texts)', () => {
  const alphabet = ['0', '1', '4', '5', '9', '0', '3', ' ', ' ', '-', '-', '.', '@', 'a', 'x', 'Z', '_', ':', '=', '+', '(', ')', 'é', '€', '💥', '\\', '"', '\t', ',', '/'];
  const rnd = random(42);
  let skipped = 0;
  for (let i = 0; i < 30_000; i++) {
    let s = '';
    const len = rnd(40);
    for (let j = 0; j < len; j++) s += alphabet[rnd(alphabet.length)];
    if (rnd(4) === 0) s += POSITIVES[rnd(POSITIVES.length)];
    for (const m of [all, some]) {
      check(m, s);
      if (!contentMayMatch(m, bytesOf(s), 0, bytesOf(s).length)) skipped++;
    }
  }
  assert.ok(skipped > 1000, `the pre-check skips ordinary texts (${skipped})`);
});

test('COPY rows: a row the pre-check passes over is one the row maskers leave unchanged', () => {
  const rows = [
    '1\t1\t0\t                                                                                    \n',
    '2\talice@example.com\t\\N\n', '3\tsee 4111 1111 1111 1111\tx\n', '4\ta\\tb 123-45-6789\n', '5,"4111""1111111111111"\n',
    '6\t\\x40\t\n', '7\t555-12-34567\n', 'plain text, nothing here\n',
  ];
  for (const line of rows) {
    const b = bytesOf(line);
    for (const m of [all, some]) {
      if (contentMayMatch(m, b, 0, b.length)) continue;
      assert.equal(maskCopyLine(m, line, null), line, line);
      assert.equal(maskCsvLine(m, line, null), line, line);
      assert.equal(maskCopyLine(m, line, [false, false, false, false]), line, line);
    }
  }
  // the pgbench_accounts row shape is skipped without decoding
  const accounts = bytesOf('1\t1\t0\t' + ' '.repeat(84) + '\n');
  assert.equal(contentMayMatch(some, accounts, 0, accounts.length), false);
});

test('ByteScreen over values packed in one chunk: no means no detector changes the value', () => {
  const configs = [
    compileMasking({ columns: [], detectors: ['email', 'credit_card', 'ssn'] }),
    compileMasking({ columns: [], detectors: ['credit_card'] }),
    compileMasking({ columns: [], detectors: ['ssn'] }),
    compileMasking({ columns: [], detectors: ['email'] }),
    all,
  ];
  // digits, single and double separators, and the characters the screen looks for
  const alphabet = ['1', '2', '4', '5', '0', '7', '3', '6', '8', '9', ' ', '-', ' ', 'a', '\t', '@', '.', 'é', '\\', '"', 'x'];
  const rnd = random(7);
  let seen = 0;
  let skipped = 0;
  for (let round = 0; round < 400; round++) {
    const values: string[] = [];
    for (let i = 0; i < 40; i++) {
      let v = '';
      const len = rnd(60);
      for (let j = 0; j < len; j++) v += rnd(3) === 0 ? alphabet[rnd(alphabet.length)] : alphabet[rnd(10)];
      if (rnd(5) === 0) v = 'x'.repeat(rnd(20)) + POSITIVES[rnd(POSITIVES.length)] + ' '.repeat(rnd(3));
      values.push(v);
    }
    // one chunk: each value behind a 4-byte length, as in a DataRow
    const parts: Buffer[] = [];
    const spans: Array<[number, number]> = [];
    let off = 0;
    for (const v of values) {
      const b = Buffer.from(v, 'utf8');
      const h = Buffer.alloc(4);
      h.writeInt32BE(b.length);
      parts.push(h, b);
      spans.push([off + 4, off + 4 + b.length]);
      off += 4 + b.length;
    }
    const chunk = Buffer.concat(parts);
    for (const m of configs) {
      const screen = new ByteScreen(m);
      values.forEach((v, i) => {
        seen++;
        if (screen.mayMatch(chunk, spans[i][0], spans[i][1])) return;
        skipped++;
        assert.equal(maskContent(m, v), v, `screen said no for ${JSON.stringify(v)}`);
      });
    }
  }
  assert.ok(skipped > seen / 10, `the screen skips ordinary values (${skipped}/${seen})`);
});
