/**
 * Best-effort reconstruction of the line being typed into an interactive shell, from the bytes a
 * terminal sends (issue 12: guardrails on typed lines, checked at Enter). Keystrokes are
 * forwarded as they come (the remote shell echoes and completes as usual); only the Enter that
 * would run a line is held back for the verdict.
 *
 * What it models: printable text (UTF-8 kept whole), Backspace, Ctrl-U (kill line), Ctrl-W
 * (kill word), Ctrl-C (abandon line), bracketed paste (pasted newlines do not run anything in
 * bash ≥ 5.1 until Enter). What it cannot model makes the line `uncertain`: Tab completion,
 * history (arrows, Ctrl-R, Ctrl-P), cursor movement and editing in the middle of the line, Alt
 * keys, any escape sequence. An uncertain line is still judged on the text that is known: what
 * was typed is in it, whatever else the shell added.
 *
 * Input is handled as latin1 so each byte is one char: positions map to bytes one to one and the
 * caller forwards exactly what it received; the line is decoded as UTF-8 when judged.
 */

/** where bytes are in an escape sequence */
const NORMAL = 0;
const ESC = 1;
const CSI = 2;
const SS3 = 3;

export class LineTracker {
  #line = '';
  #uncertain = false;
  #state = NORMAL;
  #csi = '';
  #paste = false;

  /**
   * Scans `s` (latin1) from `from` and returns the index of the next Enter that would run the
   * line (CR or LF outside a bracketed paste), or -1 when the chunk holds none. The text before
   * it is added to the line; the Enter itself is not consumed (call `take()`, then go on after it).
   */
  scan(s: string, from = 0): number {
    for (let i = from; i < s.length; i++) {
      const c = s.charCodeAt(i);
      switch (this.#state) {
        case ESC:
          if (c === 0x5b) { this.#state = CSI; this.#csi = ''; } else if (c === 0x4f) this.#state = SS3;
          else { this.#state = NORMAL; this.#uncertain = true; } // Alt-key: a readline command
          continue;
        case SS3:
          this.#state = NORMAL;
          this.#uncertain = true; // arrows / Home / End in application mode
          continue;
        case CSI:
          if (c >= 0x40 && c <= 0x7e) {
            this.#state = NORMAL;
            const seq = this.#csi + String.fromCharCode(c);
            if (seq === '200~') this.#paste = true;
            else if (seq === '201~') this.#paste = false;
            else this.#uncertain = true;
          } else if (this.#csi.length < 16) this.#csi += String.fromCharCode(c);
          continue;
      }
      if (c === 0x1b) { this.#state = ESC; continue; }
      if (c === 0x0d || c === 0x0a) {
        if (this.#paste) { this.#line += '\n'; continue; }
        return i;
      }
      if (c >= 0x20 && c !== 0x7f) { this.#line += s[i]; continue; }
      switch (c) {
        case 0x7f: case 0x08: this.#rubout(); break; // Backspace
        case 0x15: this.#line = ''; break; // Ctrl-U (from the end of the line: all of it)
        case 0x17: this.#line = this.#line.replace(/\S+\s*$/, ''); break; // Ctrl-W
        case 0x03: this.#line = ''; this.#uncertain = false; break; // Ctrl-C: the shell drops the line
        case 0x04: case 0x0c: break; // Ctrl-D at the end of a line, Ctrl-L: the line stays
        case 0x09: default: this.#uncertain = true; // Tab completion, Ctrl-A/E/K/R/P/Y ...
      }
    }
    return -1;
  }

  /** The line up to the Enter found by scan() (UTF-8 decoded), and a fresh line after it. */
  take(): { line: string; uncertain: boolean } {
    const r = { line: Buffer.from(this.#line, 'latin1').toString('utf8'), uncertain: this.#uncertain };
    this.reset();
    return r;
  }

  reset(): void {
    this.#line = '';
    this.#uncertain = false;
  }

  /** removes one character: a whole UTF-8 sequence (its continuation bytes, then its lead byte) */
  #rubout(): void {
    let n = this.#line.length;
    while (n > 0 && (this.#line.charCodeAt(n - 1) & 0xc0) === 0x80) n--;
    this.#line = this.#line.slice(0, Math.max(0, n - 1));
  }
}

/**
 * Whether terminal output switches to or from the alternate screen (vim, less, top, tmux): typing
 * there is not a shell command line, so lines are not checked meanwhile. Returns the new state, or
 * undefined when the chunk does not switch. (A switch split across two chunks is missed.)
 */
export function altScreen(out: Buffer): boolean | undefined {
  let i = out.indexOf('\x1b[?', 0, 'latin1');
  let state: boolean | undefined;
  while (i !== -1) {
    const m = /^\x1b\[\?(1049|1047|47)([hl])/.exec(out.toString('latin1', i, i + 10));
    if (m) state = m[2] === 'h';
    i = out.indexOf('\x1b[?', i + 3, 'latin1');
  }
  return state;
}
