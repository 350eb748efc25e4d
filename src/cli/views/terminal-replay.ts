/**
 * Replay of ssh recordings (issue 12): terminal output as the user saw it, and the engine's own
 * events (commands with exit codes, blocked commands, reviews, sftp operations, port forwards)
 * as transcript lines between it. `hoopctl replay` plays it on the terminal with its timing;
 * `--format asciicast` turns it into an asciicast v2 file (`o` output, `i` input when it was
 * recorded, `r` resize) for `asciinema play`.
 *
 * Recorded output is untrusted: it is played as terminal output (colours, cursor movement: the
 * point of a terminal replay) with the sequences that reach beyond the screen removed — OSC
 * (window title, clipboard writes, hyperlinks), DCS, APC, PM, SOS strings and C1 controls.
 */

export interface TermEvent { type: string; [k: string]: unknown }

// ESC ] ... (BEL | ESC \), ESC P/X/^/_ ... ESC \ — also unterminated at the end of a chunk; then C1 controls
const STRINGS = /\x1b[\]PX^_][\s\S]*?(?:\x07|\x1b\\|$)/g;
const C1 = /[\u0080-\u009f]/g;

export function sanitizeTerminal(s: string): string {
  return s.replace(STRINGS, '').replace(C1, '');
}

function bytes(n: unknown): string {
  let v = Number(n) || 0;
  const u = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${u[i]}`;
}

/** shown escaped: engine events carry user-controlled text (commands, paths) */
function plain(v: unknown): string {
  return String(v ?? '').replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function exitText(e: TermEvent): string {
  if (e.signal) return `killed by ${plain(e.signal)}`;
  if (e.code === null || e.code === undefined) return 'ended without an exit status';
  return `exit ${plain(e.code)}`;
}

export interface Rendered {
  /** terminal output (raw, sanitized), or undefined */
  out?: string;
  /** asciicast: input ('i') or resize ('r') events */
  input?: string;
  resize?: string;
  /** transcript lines for events that are not terminal output */
  lines?: string[];
}

/**
 * Plays events in order; keeps which channels have a pty (their output has its own CRLFs; exec
 * output without one has bare LFs, which a terminal needs as CRLF).
 */
export class TerminalPlayer {
  readonly #pty = new Map<unknown, boolean>();
  /** the size of the first terminal (asciicast header) */
  width = 80;
  height = 24;
  #sized = false;

  /** pre-scan for the header size */
  size(events: TermEvent[]): { width: number; height: number } {
    const first = events.find((e) => (e.type === 'term.started' || (e.type === 'command.started' && e.pty)) && e.cols);
    if (first) { this.width = Number(first.cols) || 80; this.height = Number(first.rows) || 24; this.#sized = true; }
    return { width: this.width, height: this.height };
  }

  render(e: TermEvent): Rendered {
    switch (e.type) {
      case 'term.started':
        this.#pty.set(e.ch, e.term !== null && e.term !== undefined);
        return {};
      case 'term.output': {
        const data = sanitizeTerminal(String(e.data ?? ''));
        return { out: this.#pty.get(e.ch) ? data : data.replace(/\r?\n/g, '\r\n') };
      }
      case 'term.input':
        return { input: String(e.data ?? '') };
      case 'term.resize':
        return { resize: `${Number(e.cols)}x${Number(e.rows)}` };
      case 'term.truncated':
        return { lines: ['-- output of this command no longer recorded (over the recording cap)'] };
      case 'term.ended':
        return { lines: [`-- shell ${exitText(e)}`] };
      case 'command.started':
        this.#pty.set(e.ch, Boolean(e.pty));
        return { lines: [`$ ${plain(e.command)}`] };
      case 'command.completed':
        return { lines: [`-- ${exitText(e)} (${Math.round(Number(e.durationMs) || 0)} ms)`] };
      case 'command.blocked':
        return { lines: [`BLOCKED by guardrail ${plain(e.rule)} (/${plain(e.pattern)}/)${e.source === 'typed' ? ', typed' : ''}: ${plain(e.command)}`] };
      case 'command.reviewed':
        return { lines: [`-- review ${plain(e.review)} of ${JSON.stringify(String(e.command ?? ''))}: ${plain(e.status)}${e.by ? ` by ${plain(e.by)}` : ''}`] };
      case 'sftp.started':
        return { lines: ['-- sftp session'] };
      case 'sftp.ended':
        return { lines: [`-- sftp session ended: read ${bytes(e.read)}, wrote ${bytes(e.written)}`] };
      case 'sftp.refused':
        return { lines: [`REFUSED file transfer (ssh.sftp: false)${e.command ? `: ${plain(e.command)}` : ''}`] };
      case 'sftp.open':
        return { lines: [`sftp open ${plain(e.path)} (${plain(e.mode)})`] };
      case 'sftp.close':
        return { lines: [`sftp close ${plain(e.path)}: read ${bytes(e.read)}, wrote ${bytes(e.written)}`] };
      case 'forward.opened':
        return { lines: [`-- port forward to ${plain(e.host)}:${plain(e.port)} opened`] };
      case 'forward.closed':
        return { lines: [`-- port forward to ${plain(e.host)}:${plain(e.port)} closed: ${bytes(e.bytes_in)} in, ${bytes(e.bytes_out)} out`] };
      case 'forward.refused':
        return { lines: [`REFUSED ${e.direction === 'remote' ? 'remote (ssh -R)' : 'local (ssh -L)'} port forward to ${plain(e.host)}:${plain(e.port)}`] };
      case 'recording.closed':
        return { lines: [`-- session ended${e.reason ? `: ${plain(e.reason)}` : ''}`] };
      default: {
        if (typeof e.type === 'string' && e.type.startsWith('sftp.')) {
          const { type, path, to, ok, error } = e;
          return { lines: [`${plain(type).replace('.', ' ')} ${plain(path)}${to !== undefined ? ` → ${plain(to)}` : ''}${ok === false ? ` FAILED: ${plain(error)}` : ''}`] };
        }
        const { type, ...rest } = e;
        return { lines: [`-- ${plain(type)} ${plain(JSON.stringify(rest))}`] };
      }
    }
  }

  get sized(): boolean { return this.#sized; }
}
