/**
 * From analysis to verdict, in this order (the first that applies wins):
 *  1. the text is not valid SQL                       -> deny  'unparseable'
 *  2. a deny rule matched anywhere in it               -> deny  <rule>
 *     a deny_functions function is called anywhere     -> deny  'deny_functions'
 *     max_rows is set and a DELETE/UPDATE hides where no command tag counts it -> deny 'max_rows'
 *  3. a deny_pattern matches it or code found in it    -> deny  'deny_patterns'
 *  4. PREPARE of a body that 1-3 deny, EXECUTE of a prepared statement whose body is denied,
 *     or EXECUTE of a name this session never saw prepared   -> deny (or review, see 5)
 *  5. contained code could not be analysed (another language, dynamic SQL) -> fail closed:
 *     deny 'unparseable' when any deny rule or pattern is configured, else review 'unparseable'
 *  6. a review rule matched (in the text or an EXECUTEd body) -> review <rule>
 *  7. allow
 * Review rules are not applied to PREPARE itself: preparing runs nothing, each EXECUTE is
 * reviewed, so one approval covers one execution.
 * With max_rows, an allowed or reviewed verdict carries `guard: true` when the text has a
 * DELETE/UPDATE of its own (or an EXECUTE, which may run one): the engine runs it so that it
 * can be undone (see the engine's README). The flag is part of the cached verdict: it depends
 * only on the analysis, which is the same for every text sharing it.
 */
import type { GuardrailRule, GuardrailsConfig } from '../../config/schema.ts';
import { analyzeSql, type Analysis, type WriteKind } from './analyze.ts';
import { sqlShape, type Shape } from './lexer.ts';
import { Lru } from './lru.ts';
import { normalizeForPatterns } from './parser.ts';
import { patternForms, shapeEntry, sharedAnalysis, type ShapeEntry } from './shape.ts';

export type Verdict =
  | { action: 'allow'; guard?: boolean }
  | { action: 'deny'; rule: string; message: string }
  | { action: 'review'; rule: string; message: string; guard?: boolean };

export const ALLOW: Verdict = Object.freeze({ action: 'allow' });
const ALLOW_GUARDED: Verdict = Object.freeze({ action: 'allow', guard: true });

/**
 * Built-in functions that call a denied one (their SQL bodies call it): denying the inner
 * function denies them too. Only wrappers shipped with PostgreSQL are known.
 */
export const KNOWN_WRAPPERS: Readonly<Record<string, readonly string[]>> = {
  pg_sleep: ['pg_sleep_for', 'pg_sleep_until'],
};

interface Cached {
  analysis: Analysis;
  /** the verdict when it does not depend on the session (no PREPARE/EXECUTE inside) */
  final?: Verdict;
  /** a deny from steps 1-3, which no session state can lift */
  base?: Verdict;
}

export class Rules {
  readonly deny: ReadonlySet<GuardrailRule>;
  readonly review: ReadonlySet<GuardrailRule>;
  readonly patterns: readonly RegExp[];
  /** denied function (lowercased, no schema) -> the configured name it stands for */
  readonly functions: ReadonlyMap<string, string>;
  readonly maxRows: Readonly<Partial<Record<WriteKind, number>>>;
  /** false when nothing is configured: every statement is allowed without parsing */
  readonly active: boolean;
  /** whether code that cannot be analysed is denied (else sent to review) */
  readonly failClosedDeny: boolean;
  readonly #cache = new Lru<string, Cached>(2000);
  readonly #bodyVerdicts = new WeakMap<Analysis, Verdict>();
  /** verdicts of analyses shared by shape, before deny_patterns: a rule's deny, else the tail */
  readonly #shared = new WeakMap<Analysis, { deny?: Verdict; tail: Verdict }>();

  /** share verdicts between texts that differ only in literal values (off: tests' reference) */
  readonly #byShape: boolean;

  constructor(cfg: GuardrailsConfig | undefined, options: { shareByShape?: boolean } = {}) {
    this.#byShape = options.shareByShape ?? true;
    this.deny = new Set(cfg?.deny ?? []);
    this.review = new Set(cfg?.review ?? []);
    this.patterns = (cfg?.deny_patterns ?? []).map((p) => new RegExp(p, 'i'));
    const functions = new Map<string, string>();
    for (const f of cfg?.deny_functions ?? []) {
      const name = f.slice(f.lastIndexOf('.') + 1).toLowerCase();
      functions.set(name, name);
      for (const w of KNOWN_WRAPPERS[name] ?? []) if (!functions.has(w)) functions.set(w, name);
    }
    this.functions = functions;
    this.maxRows = { ...(cfg?.max_rows?.delete !== undefined ? { delete: cfg.max_rows.delete } : {}), ...(cfg?.max_rows?.update !== undefined ? { update: cfg.max_rows.update } : {}) };
    const limits = Object.keys(this.maxRows).length > 0;
    this.failClosedDeny = this.deny.size > 0 || this.patterns.length > 0 || functions.size > 0 || limits;
    this.active = this.failClosedDeny || this.review.size > 0;
  }

  lookup(sql: string): Cached {
    let c = this.#cache.get(sql);
    if (!c) {
      // Texts that differ from a judged one only in literal values share its verdict when
      // that is exact (shape.ts); they are not added to the text cache, which they would flood.
      const shape = this.#byShape ? sqlShape(sql) : undefined;
      if (shape) {
        const e = shapeEntry(sql, shape);
        const a = sharedAnalysis(e);
        const v = a ? this.#sharedVerdict(a, e, sql, shape) : undefined;
        if (a && v) return { analysis: a, final: v };
      }
      const analysis = analyzeSql(sql);
      const base = this.#staticDeny(analysis, true);
      c = { analysis, base };
      if (!base && analysis.steps.length === 0) c.final = this.#tail(analysis, undefined);
      else if (base) c.final = base;
      this.#cache.set(sql, c);
    }
    return c;
  }

  /** The verdict for a PREPAREd body, without session state (steps inside bodies are rare). */
  bodyVerdict(body: Analysis, resolveExecute: (name: string, where: string) => Verdict | undefined): Verdict {
    const known = this.#bodyVerdicts.get(body);
    if (known) return known;
    let v = this.#staticDeny(body, false);
    if (!v) {
      let review: Verdict | undefined;
      for (const s of body.steps) {
        if (s.op !== 'execute') continue;
        const r = resolveExecute(s.name, s.where);
        if (r?.action === 'deny') return r;
        if (r?.action === 'review') review ??= r;
      }
      v = this.#tail(body, review);
    }
    if (body.steps.length === 0) this.#bodyVerdicts.set(body, v);
    return v;
  }

  /** Steps 2, 3 and 5-7 for a text of a shape whose analysis is shared (it parses, has no steps). */
  #sharedVerdict(a: Analysis, e: ShapeEntry, sql: string, shape: Shape): Verdict | undefined {
    let s = this.#shared.get(a);
    if (!s) {
      s = { deny: this.#staticDeny(a, false), tail: this.#tail(a, undefined) };
      this.#shared.set(a, s);
    }
    if (s.deny) return s.deny;
    if (this.patterns.length > 0) {
      const forms = patternForms(e, sql, shape);
      if (!forms) return undefined;
      const p = this.#patternDeny(sql, forms[0], forms[1]);
      if (p) return p;
    }
    return s.tail;
  }

  #patternDeny(text: string, spaced: string, compact: string): Verdict | undefined {
    for (const re of this.patterns) {
      if (re.test(text) || re.test(spaced) || re.test(compact)) {
        return { action: 'deny', rule: 'deny_patterns', message: `blocked by guardrail deny_patterns: the SQL matches /${re.source}/` };
      }
    }
    return undefined;
  }

  /** Steps 1-3. Pattern checks are skipped for PREPARE bodies, whose text was checked when prepared. */
  #staticDeny(a: Analysis, withPatterns: boolean): Verdict | undefined {
    if (a.unparseable !== undefined) {
      return { action: 'deny', rule: 'unparseable', message: `blocked: the SQL could not be parsed (${a.unparseable}); SQL that cannot be parsed is denied` };
    }
    for (const [rule, what] of a.hits) {
      if (this.deny.has(rule)) return { action: 'deny', rule, message: `blocked by guardrail rule "${rule}": ${what}` };
    }
    if (this.functions.size > 0) {
      for (const [name, where] of a.calls) {
        const denied = this.functions.get(name);
        if (denied !== undefined) {
          const via = denied === name ? '' : ` (which calls ${denied}())`;
          return { action: 'deny', rule: 'deny_functions', message: `blocked by guardrail deny_functions: the statement calls ${name}()${via}${where}` };
        }
      }
    }
    for (const [kind, what] of a.writes.hidden) {
      if (this.maxRows[kind] !== undefined) {
        return { action: 'deny', rule: 'max_rows', message: `blocked by guardrail max_rows: ${what} does not report how many rows it changes, so the limit of ${this.maxRows[kind]} cannot be enforced; run the ${kind.toUpperCase()} as a statement of its own` };
      }
    }
    // the gateway undoes an over-limit DELETE with its own transaction or savepoint: a COMMIT
    // or ROLLBACK in the same query would end it before the count is known
    if (a.writes.txControl && this.#guarded(a)) {
      return { action: 'deny', rule: 'max_rows', message: 'blocked by guardrail max_rows: a DELETE or UPDATE cannot share a query with BEGIN, COMMIT, ROLLBACK or SAVEPOINT on this connection; send it as a query of its own' };
    }
    if (withPatterns && this.patterns.length > 0) {
      for (const text of a.texts) {
        const [spaced, compact] = normalizeForPatterns(text);
        const p = this.#patternDeny(text, spaced, compact);
        if (p) return p;
      }
    }
    return undefined;
  }

  /** Steps 5-7. */
  #tail(a: Analysis, stepReview: Verdict | undefined): Verdict {
    if (a.unanalysable !== undefined) return this.failClosed(a.unanalysable);
    const guard = this.#guarded(a);
    for (const [rule, what] of a.hits) {
      if (this.review.has(rule)) return { action: 'review', rule, message: `needs review under guardrail rule "${rule}": ${what}`, ...(guard ? { guard } : {}) };
    }
    if (stepReview) return guard && stepReview.action === 'review' ? { ...stepReview, guard } : stepReview;
    return guard ? ALLOW_GUARDED : ALLOW;
  }

  /** max_rows applies to a DELETE/UPDATE of the text itself, or to what an EXECUTE may run */
  #guarded(a: Analysis): boolean {
    const m = this.maxRows;
    if (m.delete === undefined && m.update === undefined) return false;
    for (const k of a.writes.top) if (m[k] !== undefined) return true;
    return a.steps.some((s) => s.op === 'execute');
  }

  failClosed(reason: string): Verdict {
    return this.failClosedDeny
      ? { action: 'deny', rule: 'unparseable', message: `blocked: ${reason}; code the gateway cannot analyse is denied` }
      : { action: 'review', rule: 'unparseable', message: `needs review: ${reason}` };
  }

  /** the unparseable/unanalysable/review tail after steps were resolved */
  finish(a: Analysis, stepReview: Verdict | undefined): Verdict {
    return this.#tail(a, stepReview);
  }
}
