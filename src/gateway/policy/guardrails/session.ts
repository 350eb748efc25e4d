/**
 * Per-connection guardrail state: the bodies of the prepared statements the connection has
 * created, so `EXECUTE name` is judged by what it runs.
 *
 * A name keeps every body ever prepared under it, and EXECUTE must pass all of them. The
 * gateway cannot see whether the server accepted a PREPARE or a DEALLOCATE (a PREPARE of a
 * name that exists fails; a DEALLOCATE in an aborted transaction fails), so "the latest
 * body" could be a body the server never stored. Keeping all of them is never wrong in the
 * permissive direction. Bodies are kept once per distinct set of matched rules, so a client
 * that re-prepares the same statement does not grow the map.
 */
import type { Analysis } from './analyze.ts';
import { ALLOW, type Rules, type Verdict } from './judge.ts';

const MAX_NAMES = 10_000;

export class GuardrailSessionState {
  readonly #rules: Rules;
  readonly #prepared = new Map<string, Map<string, Analysis>>();

  constructor(rules: Rules) {
    this.#rules = rules;
  }

  judge(sql: string, statementName?: string): Verdict {
    const rules = this.#rules;
    if (!rules.active) return ALLOW;
    const cached = rules.lookup(sql);
    let v = cached.final;
    if (!v) v = this.#withSteps(cached.analysis);
    if (statementName && v.action !== 'deny') this.#remember(statementName, cached.analysis);
    return v;
  }

  #withSteps(a: Analysis): Verdict {
    // Steps run in order: a PREPARE earlier in the same text is visible to a later EXECUTE.
    const overlay = new Map<string, Analysis[]>();
    let review: Verdict | undefined;
    for (const s of a.steps) {
      if (s.op === 'prepare') {
        const v = this.#bodyVerdict(s.body, overlay, 0);
        if (v.action === 'deny') return { ...v, message: `PREPARE ${s.name}: ${v.message}` };
        const list = overlay.get(s.name) ?? [];
        list.push(s.body);
        overlay.set(s.name, list);
      } else {
        const v = this.#execute(s.name, s.where, overlay, 0);
        if (v.action === 'deny') return v;
        if (v.action === 'review') review ??= v;
      }
    }
    const v = this.#rules.finish(a, review);
    if (v.action !== 'deny') for (const [name, bodies] of overlay) for (const b of bodies) this.#remember(name, b);
    return v;
  }

  #execute(name: string, where: string, overlay: Map<string, Analysis[]>, depth: number): Verdict {
    const bodies = [...(this.#prepared.get(name)?.values() ?? []), ...(overlay.get(name) ?? [])];
    if (bodies.length === 0 || depth > 4) {
      return this.#rules.failClosed(`EXECUTE ${name}${where} runs a prepared statement this session has not seen prepared, so it cannot be judged`);
    }
    let review: Verdict | undefined;
    for (const b of bodies) {
      const v = this.#bodyVerdict(b, overlay, depth + 1);
      if (v.action === 'deny') return { ...v, message: `EXECUTE ${name}: ${v.message}` };
      if (v.action === 'review') review ??= { ...v, message: `EXECUTE ${name}: ${v.message}` };
    }
    return review ?? ALLOW;
  }

  #bodyVerdict(body: Analysis, overlay: Map<string, Analysis[]>, depth: number): Verdict {
    return this.#rules.bodyVerdict(body, (n, w) => this.#execute(n, w, overlay, depth + 1));
  }

  #remember(name: string, body: Analysis): void {
    let bodies = this.#prepared.get(name);
    if (!bodies) {
      if (this.#prepared.size >= MAX_NAMES) return; // an unknown name fails closed at EXECUTE
      bodies = new Map();
      this.#prepared.set(name, bodies);
    }
    const key = signature(body, bodies.size);
    if (!bodies.has(key)) bodies.set(key, body);
  }
}

const signatures = new WeakMap<Analysis, string>();

/** Bodies with the same signature get the same verdict, so one of them is enough. */
function signature(body: Analysis, n: number): string {
  if (body.steps.length > 0) return `#${n}`; // judged against session state: keep each
  let s = signatures.get(body);
  if (s === undefined) {
    s = `${[...body.hits.keys()].join(',')}|${body.unanalysable ?? ''}|${body.unparseable ?? ''}`;
    signatures.set(body, s);
  }
  return s;
}
