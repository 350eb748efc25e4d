/**
 * An off-path reader of the SFTP protocol (draft-ietf-secsh-filexfer-02, version 3, which OpenSSH
 * speaks) for the recording: the sftp subsystem's bytes are relayed untouched, and a copy of each
 * direction's packet headers is read here to record file operations with their paths and byte
 * counts (issue 12). File contents are never copied: of a WRITE or DATA packet only the header is
 * read, the payload is skipped by count. Modern `scp` rides SFTP too, so it is recorded the same.
 *
 *   client ─► OPEN path ─────────────► server     pending[id] = open path
 *   client ◄──────────── HANDLE h ◄─── server     handles[h] = { path } → record sftp.open
 *   client ─► WRITE h len ───────────► server     handles[h].written += len
 *   client ◄──────────── DATA len ◄─── server     (READ's id → h).read += len
 *   client ─► CLOSE h ───────────────► server     record sftp.close { path, read, written }
 */
import type { RecordEvent } from '../engine.ts';

const T = {
  OPEN: 3, CLOSE: 4, READ: 5, WRITE: 6, SETSTAT: 9, OPENDIR: 11, REMOVE: 13, MKDIR: 14, RMDIR: 15,
  RENAME: 18, SYMLINK: 20, STATUS: 101, HANDLE: 102, DATA: 103, EXTENDED: 200,
} as const;

/** the largest packet kept whole for parsing (paths, attrs); bigger ones are skipped */
const MAX_KEPT = 64 * 1024;
/** enough of a WRITE packet for id, handle (OpenSSH's are 4 bytes; the spec allows 256), offset and data length */
const WRITE_HEAD = 4 + 4 + 256 + 8 + 4;

const OPEN_FLAGS: Array<[number, string]> = [[1, 'read'], [2, 'write'], [4, 'append'], [8, 'create'], [16, 'truncate'], [32, 'excl']];

interface Pending { op: string; path?: string; to?: string; handle?: string }
interface OpenFile { path: string; mode: string; read: number; written: number }

/** Splits one direction's byte stream into SFTP packets, handing over each packet's type, kept head and full length. */
class Framer {
  #hdr = Buffer.alloc(5);
  #hdrLen = 0;
  #type = 0;
  #bodyLen = 0;
  #want = 0;
  #kept: Buffer[] = [];
  #keptLen = 0;
  #skip = 0;
  readonly #onPacket: (type: number, head: Buffer, bodyLen: number) => void;
  readonly #headSize: (type: number, bodyLen: number) => number;
  constructor(headSize: (type: number, bodyLen: number) => number, onPacket: (type: number, head: Buffer, bodyLen: number) => void) {
    this.#headSize = headSize;
    this.#onPacket = onPacket;
  }

  push(b: Buffer): void {
    let i = 0;
    while (i < b.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, b.length - i);
        this.#skip -= n;
        i += n;
        continue;
      }
      if (this.#hdrLen < 5) {
        const n = Math.min(5 - this.#hdrLen, b.length - i);
        b.copy(this.#hdr, this.#hdrLen, i, i + n);
        this.#hdrLen += n;
        i += n;
        if (this.#hdrLen < 5) return;
        const len = this.#hdr.readUInt32BE(0);
        this.#type = this.#hdr[4];
        this.#bodyLen = Math.max(0, len - 1);
        this.#want = Math.min(this.#bodyLen, this.#headSize(this.#type, this.#bodyLen));
        this.#kept = [];
        this.#keptLen = 0;
        if (this.#want === 0) this.#finish();
        continue;
      }
      const n = Math.min(this.#want - this.#keptLen, b.length - i);
      this.#kept.push(b.subarray(i, i + n));
      this.#keptLen += n;
      i += n;
      if (this.#keptLen === this.#want) this.#finish();
    }
  }

  #finish(): void {
    const head = this.#kept.length === 1 ? this.#kept[0] : Buffer.concat(this.#kept, this.#keptLen);
    this.#kept = [];
    this.#hdrLen = 0;
    this.#skip = this.#bodyLen - this.#want;
    try {
      this.#onPacket(this.#type, head, this.#bodyLen);
    } catch { /* a malformed packet is the server's problem; the tap only watches */ }
  }
}

/** a cursor over a packet's kept head; reads past its end throw (caught by the framer) */
class Reader {
  #p = 0;
  readonly #b: Buffer;
  constructor(b: Buffer) { this.#b = b; }
  u32(): number { const v = this.#b.readUInt32BE(this.#p); this.#p += 4; return v; }
  u64(): void { this.#p += 8; }
  bytes(): Buffer { const n = this.u32(); if (this.#p + n > this.#b.length) throw new RangeError('short'); const v = this.#b.subarray(this.#p, this.#p + n); this.#p += n; return v; }
  str(): string { return this.bytes().toString('utf8'); }
}

export class SftpTap {
  readonly #pending = new Map<number, Pending>();
  readonly #handles = new Map<string, OpenFile>();
  readonly #record: (e: RecordEvent) => void;
  readonly fromClient: Framer;
  readonly fromServer: Framer;
  /** totals for the session row */
  read = 0;
  written = 0;

  constructor(record: (e: RecordEvent) => void) {
    this.#record = record;
    this.fromClient = new Framer((type, len) => (type === T.WRITE ? WRITE_HEAD : len <= MAX_KEPT ? len : 0), (t, h) => this.#client(t, h));
    this.fromServer = new Framer((type, len) => (type === T.DATA ? 8 : len <= MAX_KEPT ? len : 0), (t, h) => this.#server(t, h));
  }

  #client(type: number, head: Buffer): void {
    if (head.length < 4) return;
    const r = new Reader(head);
    const id = r.u32();
    switch (type) {
      case T.OPEN: {
        const path = r.str();
        const flags = r.u32();
        this.#pending.set(id, { op: 'open', path: path, to: OPEN_FLAGS.filter(([f]) => flags & f).map(([, n]) => n).join(',') });
        break;
      }
      case T.READ: this.#pending.set(id, { op: 'read', handle: r.bytes().toString('latin1') }); break;
      case T.WRITE: {
        const f = this.#handles.get(r.bytes().toString('latin1'));
        r.u64();
        const n = r.u32();
        if (f) f.written += n;
        this.written += n;
        break;
      }
      case T.CLOSE: {
        const h = r.bytes().toString('latin1');
        const f = this.#handles.get(h);
        if (f) {
          this.#handles.delete(h);
          this.#record({ type: 'sftp.close', path: f.path, mode: f.mode, read: f.read, written: f.written });
        }
        break;
      }
      case T.REMOVE: this.#pending.set(id, { op: 'remove', path: r.str() }); break;
      case T.MKDIR: this.#pending.set(id, { op: 'mkdir', path: r.str() }); break;
      case T.RMDIR: this.#pending.set(id, { op: 'rmdir', path: r.str() }); break;
      case T.SETSTAT: this.#pending.set(id, { op: 'setstat', path: r.str() }); break;
      case T.RENAME: this.#pending.set(id, { op: 'rename', path: r.str(), to: r.str() }); break;
      case T.SYMLINK: this.#pending.set(id, { op: 'symlink', path: r.str(), to: r.str() }); break;
      case T.EXTENDED: {
        const name = r.str();
        if (name === 'posix-rename@openssh.com') this.#pending.set(id, { op: 'rename', path: r.str(), to: r.str() });
        else if (name === 'hardlink@openssh.com') this.#pending.set(id, { op: 'hardlink', path: r.str(), to: r.str() });
        break;
      }
    }
  }

  #server(type: number, head: Buffer): void {
    if (head.length < 4) return;
    const r = new Reader(head);
    const id = r.u32();
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    switch (type) {
      case T.HANDLE:
        if (p.op === 'open') {
          this.#handles.set(r.bytes().toString('latin1'), { path: p.path!, mode: p.to!, read: 0, written: 0 });
          this.#record({ type: 'sftp.open', path: p.path, mode: p.to });
        }
        break;
      case T.DATA: {
        const n = r.u32();
        const f = p.handle !== undefined ? this.#handles.get(p.handle) : undefined;
        if (f) f.read += n;
        this.read += n;
        break;
      }
      case T.STATUS: {
        const code = r.u32();
        if (p.op === 'read') break; // EOF ends every download
        const ev: RecordEvent = { type: `sftp.${p.op}`, path: p.path };
        if (p.to !== undefined) ev[p.op === 'open' ? 'mode' : 'to'] = p.to;
        ev.ok = code === 0;
        if (code !== 0) { try { ev.error = r.str(); } catch { ev.error = `status ${code}`; } }
        this.#record(ev);
        break;
      }
    }
  }

  /** files still open when the channel closes are recorded as closed, with what moved */
  end(): void {
    for (const f of this.#handles.values()) this.#record({ type: 'sftp.close', path: f.path, mode: f.mode, read: f.read, written: f.written, unclosed: true });
    this.#handles.clear();
    this.#pending.clear();
  }
}
