/**
 * Command guardrails for ssh (issue 12): `guardrails.deny_patterns` and `review_patterns`, regular
 * expressions matched case-insensitively against a command line: an exec request's command, or a
 * line typed into an interactive shell (line-tracker.ts). Deny wins over review.
 *
 * A shell line is not SQL: there is no parser that could tell what it will run. Each pattern is
 * tried on the whole line and on each simple command in it (split at `;`, `&&`, `||`, `|`, `&`,
 * newlines, backquotes and `$(`), so `^sudo\b` also catches `cd /tmp && sudo rm x`. What this
 * cannot see (quoting tricks, variables, aliases, scripts, history recall) is listed in the
 * README: patterns are a seat belt, not a sandbox.
 */
import type { GuardrailsConfig } from '../../config/schema.ts';

export type CommandVerdict =
  | { action: 'allow' }
  | { action: 'deny' | 'review'; rule: string; pattern: string };

const SEPARATORS = /\|\||&&|[;&|\n`]|\$\(|[()]/;

export class CommandPolicy {
  readonly #deny: RegExp[];
  readonly #review: RegExp[];
  readonly active: boolean;
  constructor(g: GuardrailsConfig | undefined) {
    this.#deny = (g?.deny_patterns ?? []).map((p) => new RegExp(p, 'i'));
    this.#review = (g?.review_patterns ?? []).map((p) => new RegExp(p, 'i'));
    this.active = this.#deny.length + this.#review.length > 0;
  }

  judge(command: string): CommandVerdict {
    if (!this.active) return { action: 'allow' };
    const texts = [command, ...command.split(SEPARATORS).map((s) => s.trim()).filter((s) => s && s !== command)];
    const hit = (list: RegExp[]) => list.findIndex((re) => texts.some((t) => re.test(t)));
    const d = hit(this.#deny);
    if (d !== -1) return { action: 'deny', rule: `deny_patterns[${d}]`, pattern: this.#deny[d].source };
    const r = hit(this.#review);
    if (r !== -1) return { action: 'review', rule: `review_patterns[${r}]`, pattern: this.#review[r].source };
    return { action: 'allow' };
  }
}

/** legacy scp (`scp -O`, or an old client) runs `scp -t <dir>` (upload) or `scp -f <file>` (download) */
export function isLegacyScp(command: string): boolean {
  return /^\s*(\S*\/)?scp\s(.*\s)?-[a-zA-Z]*[tf]\b/.test(command);
}
