/**
 * The `ssh` engine (issue 12): OpenSSH clients through the gateway. Two SSH connections per
 * session, ssh2 on both sides: an ssh2 Server facing the tunnel (the user's ssh/scp/sftp talk to
 * it, and it shows the gateway's own host key for the connection), an ssh2 Client facing the
 * target (logged in with the connection's key or password, which never leave the gateway). Every
 * channel the user opens is re-opened on the target and relayed, so the gateway sees plaintext and
 * is where policy is enforced. See README.md beside this file for the sequence.
 *
 *   user ssh ══ tunnel ══► ssh2 Server ─ session/exec/sftp/direct-tcpip ─► ssh2 Client ══► sshd
 *                         (auth: none — the lease is the authentication)   (key / password)
 *
 * Policy per channel request: exec commands and lines typed into shells against
 * guardrails.deny_patterns / review_patterns; sftp (and legacy scp) and `ssh -L` per `ssh:`;
 * agent and X11 forwarding refused. Recording: terminal output (input with recording.input),
 * resizes, commands with their exit codes, sftp operations.
 */
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import ssh2 from 'ssh2';
import type { Client, ClientChannel, Connection, PseudoTtyInfo, ServerChannel, Session, TcpipRequestInfo } from 'ssh2';
import type { Engine, EngineContext, EngineFactory, RecordEvent } from '../engine.ts';
import { DEFAULT_SSH, type SshConfig } from '../../config/schema.ts';
import { CommandPolicy, isLegacyScp, type CommandVerdict } from './command-policy.ts';
import { LineTracker, altScreen } from './line-tracker.ts';
import { SftpTap } from './sftp-tap.ts';
import { TermTap } from './term-tap.ts';
import { connectTarget } from './target.ts';

/** recorded output of a command run without a pty (exec), per command, when recording.results */
export const EXEC_OUTPUT_CAP = 1024 * 1024;
/** exit status of a command the gateway did not run: blocked (hoopctl's exit code 6) or not approved (5) */
export const EXIT_BLOCKED = 6;
export const EXIT_NOT_APPROVED = 5;
/** what OpenSSH's own client exits with when the connection fails */
const EXIT_CONNECTION = 255;

const CTRL_C = Buffer.from([0x03]);
/** how long channels get to close before the connection is ended anyway (run-session closes the stream at 250 ms) */
const CLOSE_GRACE_MS = 200;

/** one session channel of the user's SSH connection */
interface Chan {
  /** its number within the connection, for the recording */
  id: number;
  pty?: PseudoTtyInfo;
  env: Record<string, string>;
  /** refusals (agent, X11) said once the channel starts */
  notes: string[];
  ch?: ServerChannel;
  target?: ClientChannel;
  tap?: TermTap;
  /** guarded shells: the line being typed, whether a full-screen program is up, input held during a review */
  lines?: LineTracker;
  alt?: boolean;
  held?: Buffer[];
  withdraw?: AbortController;
}

function allowedEnv(patterns: string[], key: string): boolean {
  return patterns.some((p) => (p.endsWith('*') ? key.startsWith(p.slice(0, -1)) : key === p));
}

class SshEngine implements Engine {
  readonly #ctx: EngineContext;
  readonly #policy: CommandPolicy;
  readonly #ssh: SshConfig;
  #conn: Connection | undefined;
  #target: Promise<Client> | undefined;
  #targetClient: Client | undefined;
  readonly #chans = new Set<Chan>();
  #nextId = 0;
  #clientGone = false;
  #terminated = false;
  readonly #record: (e: RecordEvent) => void;

  constructor(ctx: EngineContext) {
    this.#ctx = ctx;
    this.#policy = new CommandPolicy(ctx.connection.guardrails);
    this.#ssh = ctx.connection.ssh ?? DEFAULT_SSH;
    this.#record = (e) => ctx.record(e);
  }

  async handle(client: Duplex): Promise<void> {
    const ctx = this.#ctx;
    const hostKey = ctx.secret.gatewayHostKey;
    if (!hostKey) throw new Error(`connection "${ctx.connection.name}" has no gateway ssh host key (the gateway loads them at start)`);
    // the target login runs while the user's client does its own key exchange with us
    const target = (this.#target = connectTarget(ctx));
    target.then((c) => {
      this.#targetClient = c;
      if (this.#clientGone) return c.end();
      c.once('close', () => { if (!this.#terminated) this.#closeAll(this.#chans.size ? 'the target closed the connection' : undefined); });
    }, () => {});
    const server = new ssh2.Server({ hostKeys: [hostKey.private], ident: 'hoopctl-gateway' });
    await new Promise<void>((resolve) => {
      server.on('connection', (conn) => {
        this.#onConnection(conn);
        conn.once('close', resolve);
      });
      client.once('close', resolve);
      client.on('error', () => {});
      server.injectSocket(client as Socket);
    });
    this.#clientGone = true;
    for (const c of this.#chans) c.tap?.end();
    this.#targetClient?.end();
    if (!client.destroyed) client.destroy();
    // a target that refused the gateway is the session's close reason (the user was told on each channel)
    const failed = await target.then(() => undefined, (err: Error) => err);
    if (failed && !this.#terminated) throw failed;
  }

  terminate(reason: string): void {
    this.#terminated = true;
    this.#closeAll(`${reason}: the gateway closed this connection`);
    this.#targetClient?.end();
  }

  /**
   * Ends every channel with a message on the user's terminal, then the connection. The
   * connection's end waits for the channels' close: OpenSSH's client exits at once on a
   * DISCONNECT, dropping channel data it has not written out yet (the message itself).
   */
  #closeAll(message: string | undefined): void {
    const open = [...this.#chans].filter((c) => c.ch?.writable);
    for (const c of open) {
      if (message) this.#say(c, message, true);
      try { c.ch!.exit(EXIT_CONNECTION); } catch { /* closed meanwhile */ }
      c.ch!.end();
    }
    const conn = this.#conn;
    if (!conn) return;
    if (!open.length) return void conn.end();
    let left = open.length;
    const done = () => { if (--left === 0) conn.end(); };
    for (const c of open) c.ch!.once('close', done);
    setTimeout(() => conn.end(), CLOSE_GRACE_MS).unref();
  }

  #onConnection(conn: Connection): void {
    this.#conn = conn;
    conn.on('error', (err: Error) => this.#ctx.log.debug({ err: err.message }, 'ssh client connection error'));
    // the lease is the authentication: whoever holds the tunnel is the lease's user
    conn.on('authentication', (a) => a.accept());
    conn.on('session', (accept) => this.#session(accept()));
    conn.on('tcpip', (accept, reject, info: TcpipRequestInfo) => void this.#forward(accept, reject, info));
    // global requests: tcpip-forward (ssh -R), streamlocal-forward: refused
    conn.on('request', (_accept, reject, name: string, info: { bindAddr?: string; bindPort?: number }) => {
      if (name === 'tcpip-forward') this.#record({ type: 'forward.refused', direction: 'remote', host: info?.bindAddr, port: info?.bindPort });
      reject?.();
    });
  }

  #session(session: Session): void {
    const c: Chan = { id: this.#nextId++, env: {}, notes: [] };
    session.on('pty', (accept, _reject, info) => { c.pty = info; accept?.(); });
    session.on('env', (accept, reject, { key, val }) => {
      if (!allowedEnv(this.#ssh.env, key)) return reject?.();
      c.env[key] = val;
      accept?.();
    });
    session.on('window-change', (accept, _reject, info) => {
      if (c.pty) Object.assign(c.pty, { cols: info.cols, rows: info.rows, width: info.width, height: info.height });
      c.target?.setWindow(info.rows, info.cols, info.height, info.width);
      c.tap?.resize(info.cols, info.rows);
      accept?.();
    });
    session.on('signal', (accept, _reject, { name }) => {
      try { c.target?.signal(name); } catch { /* a signal name ssh2 does not know */ }
      accept?.();
    });
    session.on('auth-agent', (_accept, reject) => {
      c.notes.push('agent forwarding (ssh -A) is refused: the gateway logs in to the target with its own key, and the target never sees your agent');
      this.#record({ type: 'agent.refused', ch: c.id });
      reject?.();
    });
    session.on('x11', (_accept, reject) => {
      c.notes.push('X11 forwarding (ssh -X/-Y) is refused by the gateway');
      this.#record({ type: 'x11.refused', ch: c.id });
      reject?.();
    });
    session.on('shell', (accept) => void this.#shell(c, accept()).catch((err: Error) => this.#fail(c, err.message, EXIT_CONNECTION)));
    session.on('exec', (accept, _reject, info) => void this.#exec(c, accept(), info.command).catch((err: Error) => this.#fail(c, err.message, EXIT_CONNECTION)));
    session.on('subsystem', (accept, _reject, info) => void this.#subsystem(c, accept(), info.name).catch((err: Error) => this.#fail(c, err.message, EXIT_CONNECTION)));
  }

  /** the channel has started (shell/exec/subsystem accepted): say what was refused on the way */
  #open(c: Chan, ch: ServerChannel): void {
    c.ch = ch;
    this.#chans.add(c);
    ch.on('error', () => {});
    ch.once('close', () => {
      this.#chans.delete(c);
      c.withdraw?.abort('the client closed the channel');
      try { c.target?.close(); } catch { /* already closed */ }
    });
    for (const n of c.notes) this.#say(c, n);
  }

  /** a line from the gateway on the user's terminal (stderr: it never mixes into a command's output) */
  #say(c: Chan, text: string, loud = false): void {
    if (!c.ch || !c.ch.writable) return;
    const msg = c.pty ? `\r\n${loud ? '\x1b[1;31m' : ''}hoopctl: ${text}${loud ? '\x1b[0m' : ''}\r\n` : `hoopctl: ${text}\n`;
    c.tap?.output(Buffer.from(msg), true);
    c.ch.stderr.write(msg);
  }

  #fail(c: Chan, text: string, code: number): void {
    this.#say(c, text);
    if (!c.ch) return;
    try { c.ch.exit(code); } catch { /* closed meanwhile */ }
    c.ch.end();
  }

  /** the logged-in target, or undefined after telling the user why there is none */
  async #targetFor(c: Chan): Promise<Client | undefined> {
    try {
      return await this.#target!;
    } catch (err) {
      this.#fail(c, `cannot open the target of connection "${this.#ctx.connection.name}": ${(err as Error).message}`, EXIT_CONNECTION);
      return undefined;
    }
  }

  #ptyOptions(c: Chan) {
    const p = c.pty!;
    return { rows: p.rows, cols: p.cols, width: p.width, height: p.height, term: p.term, modes: p.modes };
  }

  async #shell(c: Chan, ch: ServerChannel): Promise<void> {
    this.#open(c, ch);
    const rec = this.#ctx.connection.recording;
    c.tap = new TermTap(this.#record, c.id, { input: rec.input, cap: Infinity });
    this.#record({ type: 'term.started', ch: c.id, kind: 'shell', cols: c.pty?.cols ?? 80, rows: c.pty?.rows ?? 24, term: c.pty?.term ?? null });
    const t = await this.#targetFor(c);
    if (!t || !ch.writable) return;
    if (this.#policy.active) c.lines = new LineTracker();
    t.shell(c.pty ? this.#ptyOptions(c) : false, { env: c.env }, (err, tch) => {
      if (err) return this.#fail(c, `the target refused a shell: ${err.message}`, EXIT_CONNECTION);
      this.#relay(c, ch, tch, { kind: 'shell' });
    });
  }

  async #exec(c: Chan, ch: ServerChannel, command: string): Promise<void> {
    this.#open(c, ch);
    const ctx = this.#ctx;
    ctx.stats.statements++;
    if (!this.#ssh.sftp && isLegacyScp(command)) {
      this.#record({ type: 'sftp.refused', ch: c.id, command });
      return this.#fail(c, `file transfer (scp, sftp) is disabled for connection "${ctx.connection.name}" (ssh.sftp: false)`, 1);
    }
    const verdict = this.#policy.judge(command);
    if (verdict.action === 'deny') {
      this.#blocked(c, command, verdict, 'exec');
      return this.#fail(c, this.#blockedText(verdict, 'the command was not run'), EXIT_BLOCKED);
    }
    if (verdict.action === 'review' && !(await this.#review(c, command, verdict, 'exec'))) {
      if (!ch.writable) return;
      try { ch.exit(EXIT_NOT_APPROVED); } catch { /* closed */ }
      return void ch.end();
    }
    const t = await this.#targetFor(c);
    if (!t || !ch.writable) return;
    const rec = ctx.connection.recording;
    if (c.pty) c.tap = new TermTap(this.#record, c.id, { input: rec.input, cap: Infinity });
    else if (rec.results) c.tap = new TermTap(this.#record, c.id, { input: false, cap: EXEC_OUTPUT_CAP });
    this.#record({ type: 'command.started', ch: c.id, command, pty: Boolean(c.pty), ...(c.pty ? { cols: c.pty.cols, rows: c.pty.rows } : {}) });
    // `ssh -t host bash` is a shell too: what is typed on a pty is checked as in a shell channel
    if (this.#policy.active && c.pty) c.lines = new LineTracker();
    t.exec(command, { env: c.env, ...(c.pty ? { pty: this.#ptyOptions(c) } : {}) }, (err, tch) => {
      if (err) return this.#fail(c, `the target refused to run the command: ${err.message}`, EXIT_CONNECTION);
      this.#relay(c, ch, tch, { kind: 'exec', command });
    });
  }

  async #subsystem(c: Chan, ch: ServerChannel, name: string): Promise<void> {
    this.#open(c, ch);
    if (name !== 'sftp') return this.#fail(c, `the "${name}" subsystem is not available through the gateway`, 1);
    if (!this.#ssh.sftp) {
      this.#record({ type: 'sftp.refused', ch: c.id });
      return this.#fail(c, `sftp and scp are disabled for connection "${this.#ctx.connection.name}" (ssh.sftp: false)`, 1);
    }
    const t = await this.#targetFor(c);
    if (!t || !ch.writable) return;
    t.subsys('sftp', (err, tch) => {
      if (err) return this.#fail(c, `the target refused the sftp subsystem: ${err.message}`, 1);
      this.#record({ type: 'sftp.started', ch: c.id });
      this.#relay(c, ch, tch, { kind: 'sftp', sftp: new SftpTap(this.#record) });
    });
  }

  /** relays one started channel both ways until either side closes; exit status and signal pass through */
  #relay(c: Chan, ch: ServerChannel, tch: ClientChannel, o: { kind: 'shell' | 'exec' | 'sftp'; command?: string; sftp?: SftpTap }): void {
    const { stats } = this.#ctx;
    const started = Date.now();
    c.target = tch;
    if (!ch.writable) return void tch.close();
    const tap = c.tap;
    const sftp = o.sftp;
    // a window change that came while the target channel opened
    if (c.pty) tch.setWindow(c.pty.rows, c.pty.cols, c.pty.height, c.pty.width);

    tch.on('data', (d: Buffer) => {
      stats.bytesOut += d.length;
      tap?.output(d);
      sftp?.fromServer.push(d);
      if (c.lines && d.includes(0x1b)) {
        const alt = altScreen(d);
        if (alt !== undefined) { c.alt = alt; c.lines.reset(); }
      }
    });
    tch.stderr.on('data', (d: Buffer) => { stats.bytesOut += d.length; tap?.output(d, true); });
    tch.pipe(ch, { end: false });
    tch.stderr.pipe(ch.stderr, { end: false });

    if (c.lines) {
      ch.on('data', (d: Buffer) => this.#typed(c, d));
      ch.on('end', () => { if (!c.held) tch.end(); });
    } else {
      ch.on('data', (d: Buffer) => {
        stats.bytesIn += d.length;
        tap?.input(d);
        sftp?.fromClient.push(d);
      });
      ch.pipe(tch);
    }

    let exit: [number | null, string?, boolean?, string?] | undefined;
    tch.on('exit', (code: number | null, signal?: string, dump?: boolean, desc?: string) => { exit = [code, signal, dump, desc]; });
    tch.once('close', () => {
      tap?.end();
      sftp?.end();
      if (ch.writable) {
        try {
          if (exit?.[0] != null) ch.exit(exit[0]);
          else if (exit?.[1]) ch.exit(exit[1].replace(/^SIG/, ''), Boolean(exit[2]), exit[3] ?? '');
        } catch { /* the client closed meanwhile */ }
        ch.end();
      }
      const code = exit?.[0] ?? null;
      const signal = exit?.[1] ?? null;
      if (o.kind === 'exec') this.#record({ type: 'command.completed', ch: c.id, command: o.command, code, signal, durationMs: Date.now() - started });
      else this.#record({ type: o.kind === 'sftp' ? 'sftp.ended' : 'term.ended', ch: c.id, code, signal, ...(sftp ? { read: sftp.read, written: sftp.written } : {}) });
    });
  }

  /**
   * Input of a guarded shell: keystrokes go through as they come, the Enter that would run a
   * line is held until the line is judged. Denied: the line's Enter never reaches the target,
   * a Ctrl-C makes the shell drop it, the rest of the chunk (a paste) is dropped too.
   */
  #typed(c: Chan, d: Buffer): void {
    const tch = c.target!;
    const { stats } = this.#ctx;
    if (c.held) {
      // during a review: Ctrl-C withdraws it, anything else waits for the outcome
      if (d.includes(0x03)) c.withdraw?.abort('withdrawn with Ctrl-C');
      else c.held.push(d);
      return;
    }
    c.tap?.input(d);
    stats.bytesIn += d.length;
    const send = (b: Buffer) => { if (b.length && !tch.write(b)) { c.ch?.pause(); tch.once('drain', () => c.ch?.resume()); } };
    if (c.alt) return send(d);
    const s = d.toString('latin1');
    let pos = 0;
    for (;;) {
      const enter = c.lines!.scan(s, pos);
      if (enter === -1) return send(d.subarray(pos));
      const { line, uncertain } = c.lines!.take();
      const verdict: CommandVerdict = line.trim() ? this.#policy.judge(line) : { action: 'allow' };
      if (line.trim()) stats.statements++;
      if (verdict.action === 'allow') {
        send(d.subarray(pos, enter + 1));
        pos = enter + 1;
        continue;
      }
      send(d.subarray(pos, enter));
      if (verdict.action === 'deny') {
        this.#blocked(c, line, verdict, 'typed', uncertain);
        this.#say(c, this.#blockedText(verdict, 'the line was not run'), true);
        return send(CTRL_C);
      }
      // review: hold the Enter and everything after it until the outcome
      c.held = [d.subarray(enter)];
      void this.#review(c, line, verdict, 'typed').then((ok) => {
        const held = c.held ?? [];
        c.held = undefined;
        if (!ok) return send(CTRL_C);
        const first = held.shift()!;
        send(first.subarray(0, 1)); // the Enter
        if (first.length > 1) this.#typed(c, first.subarray(1));
        for (const b of held) this.#typed(c, b);
      });
      return;
    }
  }

  #blockedText(v: CommandVerdict & { action: 'deny' | 'review' }, what: string): string {
    return `blocked by guardrail ${v.rule} (/${v.pattern}/): ${what}`;
  }

  #blocked(c: Chan, command: string, v: CommandVerdict & { action: 'deny' | 'review' }, source: 'exec' | 'typed', uncertain = false): void {
    this.#ctx.stats.blocked++;
    this.#record({ type: 'command.blocked', ch: c.id, command, rule: v.rule, pattern: v.pattern, source, ...(uncertain ? { uncertain } : {}) });
    this.#ctx.audit('command.blocked', { rule: v.rule, command, source });
  }

  /** holds a command for a reviewer (ctx.requestReview); resolves whether it may run */
  async #review(c: Chan, command: string, v: CommandVerdict & { action: 'deny' | 'review' }, source: 'exec' | 'typed'): Promise<boolean> {
    const ctx = this.#ctx;
    if (!ctx.requestReview) {
      this.#blocked(c, command, v, source);
      this.#say(c, `${command.length > 60 ? 'this command' : JSON.stringify(command)} needs a review (guardrail ${v.rule} /${v.pattern}/), and reviews are not available on this gateway: not run`, true);
      return false;
    }
    const withdraw = (c.withdraw = new AbortController());
    this.#say(c, `held for review by guardrail ${v.rule} (/${v.pattern}/); waiting for a reviewer (Ctrl-C withdraws it)`);
    try {
      const out = await ctx.requestReview({
        rule: v.rule, statement: command, display: command, kind: 'command', signal: withdraw.signal,
        onPending: (r) => this.#say(c, `review ${r.id} is waiting; a reviewer approves it with: ${r.approveCommand}`),
      });
      this.#record({ type: 'command.reviewed', ch: c.id, command, rule: v.rule, review: out.id, status: out.status, by: out.by, source });
      if (out.status === 'approved') {
        this.#say(c, `review ${out.id} approved${out.by ? ` by ${out.by}` : ''}`);
        return true;
      }
      ctx.stats.blocked++;
      this.#say(c, `review ${out.id} ${out.status}${out.by ? ` by ${out.by}` : ''}${out.reason ? `: ${out.reason}` : ''}; not run`, true);
      return false;
    } catch (err) {
      ctx.stats.blocked++;
      this.#say(c, `the review could not be requested (${(err as Error).message}); not run`, true);
      return false;
    } finally {
      c.withdraw = undefined;
    }
  }

  async #forward(accept: () => ServerChannel, reject: () => void, info: TcpipRequestInfo): Promise<void> {
    const ctx = this.#ctx;
    const where = { host: info.destIP, port: info.destPort };
    if (!this.#ssh.port_forwarding) {
      this.#record({ type: 'forward.refused', direction: 'local', ...where });
      return this.#rejectWith(reject, `port forwarding is disabled for connection "${ctx.connection.name}" (ssh.port_forwarding: false)`, true);
    }
    let t: Client;
    try {
      t = await this.#target!;
    } catch (err) {
      return this.#rejectWith(reject, `cannot open the target: ${(err as Error).message}`);
    }
    t.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, (err, tch) => {
      if (err) {
        this.#record({ type: 'forward.failed', ...where, error: err.message });
        return this.#rejectWith(reject, `the target could not connect to ${info.destIP}:${info.destPort}: ${err.message}`);
      }
      const ch = accept();
      const id = this.#nextId++;
      let up = 0;
      let down = 0;
      this.#record({ type: 'forward.opened', ch: id, ...where });
      ch.on('error', () => {});
      tch.on('error', () => {});
      ch.on('data', (d: Buffer) => { up += d.length; ctx.stats.bytesIn += d.length; });
      tch.on('data', (d: Buffer) => { down += d.length; ctx.stats.bytesOut += d.length; });
      ch.pipe(tch).pipe(ch);
      let closed = false;
      const close = () => {
        if (closed) return;
        closed = true;
        ch.close();
        tch.close();
        this.#record({ type: 'forward.closed', ch: id, ...where, bytes_in: up, bytes_out: down });
      };
      ch.once('close', close);
      tch.once('close', close);
    });
  }

  /**
   * Refuses a channel open with a reason the user's ssh prints ("open failed: administratively
   * prohibited: <reason>"). ssh2's reject() sends no description (and "connect failed" once a
   * channel number is reserved), so its protocol's
   * channelOpenFail is wrapped for the one call.
   */
  #rejectWith(reject: () => void, why: string, prohibited = false): void {
    type Proto = { channelOpenFail(remote: number, reason: number, desc?: string): void };
    const proto = (this.#conn as unknown as { _protocol?: Proto } | undefined)?._protocol;
    const orig = proto?.channelOpenFail;
    if (!proto || typeof orig !== 'function') return reject();
    // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED (1) for policy; else ssh2's own code (connect failed)
    proto.channelOpenFail = (remote, reason) => orig.call(proto, remote, prohibited ? 1 : reason, `hoopctl: ${why}`);
    try {
      reject();
    } finally {
      delete (proto as Partial<Proto>).channelOpenFail;
      if (proto.channelOpenFail !== orig) proto.channelOpenFail = orig;
    }
  }
}

export const sshEngine: EngineFactory = { type: 'ssh', create: (ctx) => new SshEngine(ctx) };
