/**
 * SQL-aware guardrails for the PostgreSQL engine: pure functions, SQL text in, verdict out.
 * See README.md for the rule table and the exact semantics.
 */
import type { GuardrailsConfig } from '../../config/schema.ts';
import { Rules, type Verdict } from './judge.ts';
import { initParser } from './parser.ts';
import { GuardrailSessionState } from './session.ts';

export type { Verdict } from './judge.ts';
export { copyOutOptions, type CopyOutOptions } from './copy-options.ts';
export { maskStatementLiterals } from './review-text.ts';
export { credentialFloor, mayChangeLogin } from './credential-floor.ts';
export { statementLineage, STATS_VALUE_COLUMNS, type Lineage } from './lineage.ts';
export { outputDerivation, viewColumnsMasked, type Derivation, type Relations, type ViewDef } from './derivation.ts';

/** The compiled rules of one connection. Share it between all sessions of that connection. */
export interface CompiledGuardrails {
  /** false when no rule is configured: judge() allows everything without parsing */
  readonly active: boolean;
}

/** Compiles a connection's `guardrails` section (undefined = no guardrails). */
export function compileGuardrails(cfg: GuardrailsConfig | undefined): CompiledGuardrails {
  return new Rules(cfg);
}

/** Loads the WASM parser. Call once at startup before judge() or outputDerivation(); idempotent. */
export function initGuardrails(): Promise<void> {
  return initParser();
}

/** The guardrails of one client connection: remembers what it prepared. */
export class GuardrailSession {
  readonly #state: GuardrailSessionState;

  constructor(rules: CompiledGuardrails) {
    if (!(rules instanceof Rules)) throw new TypeError('GuardrailSession needs the result of compileGuardrails()');
    this.#state = new GuardrailSessionState(rules);
  }

  /**
   * Judges the SQL text of a simple Query (all its statements) or of an extended-protocol
   * Parse. Pass the Parse message's statement name as `statementName` for a named statement:
   * SQL `EXECUTE name` can run protocol-level prepared statements too, so the session
   * remembers its body. A denied text leaves the session unchanged.
   */
  judge(sql: string, statementName?: string): Verdict {
    return this.#state.judge(sql, statementName);
  }
}
