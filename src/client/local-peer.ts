/**
 * Who opened a connection to `hoopctl connect`'s local port. The port listens on 127.0.0.1, which
 * every local user can reach: without a check, any of them rides the lease, recorded as its owner.
 *
 * - Linux: the kernel's socket tables (/proc/net/tcp, /proc/net/tcp6) list every TCP socket of the
 *   network namespace with its owner's uid. The connecting socket is the one whose local end is
 *   the peer's address and whose remote end is our listening port; its uid must be ours. Two small
 *   file reads per accepted connection (no subprocess, no native module).
 * - Elsewhere (macOS, Windows) no such table is readable without privileges: the TCP port is open
 *   to every local user, and `connect --socket-dir DIR` offers a Unix-domain socket in a 0700
 *   directory instead (PostgreSQL clients: `psql -h DIR -p PORT`), which only the owner can open.
 */
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import type net from 'node:net';

export type PeerCheck = { ok: true } | { ok: false; uid?: number; why: string };

/** whether this platform can tell who connected (Linux with a readable /proc/net/tcp) */
export function peerCheckAvailable(): boolean {
  if (process.platform !== 'linux' || typeof process.getuid !== 'function') return false;
  try {
    readFileSync('/proc/net/tcp', { flag: 'r' });
    return true;
  } catch {
    return false;
  }
}

const hexPort = (addr: string): number => parseInt(addr.slice(addr.lastIndexOf(':') + 1), 16);
/** 127.0.0.1 as /proc/net/tcp writes it (host byte order, little-endian), also inside a v4-mapped v6 address */
const LOOPBACK_HEX = '0100007F';

/** The uid owning the client end of `socket` (accepted on 127.0.0.1), from the kernel's tables. */
export async function peerUid(socket: net.Socket): Promise<number | undefined> {
  const peerPort = socket.remotePort;
  const ourPort = socket.localPort;
  if (peerPort === undefined || ourPort === undefined) return undefined;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = await readFile(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
      const f = line.trim().split(/\s+/);
      if (f.length < 8 || f[0] === 'sl') continue;
      const local = f[1];
      const rem = f[2];
      if (hexPort(local) !== peerPort || hexPort(rem) !== ourPort) continue;
      if (!rem.slice(0, rem.lastIndexOf(':')).toUpperCase().endsWith(LOOPBACK_HEX)) continue;
      const uid = Number(f[7]);
      if (Number.isInteger(uid)) return uid;
    }
  }
  return undefined;
}

/** a uid's login name from /etc/passwd, for messages */
export function userName(uid: number): string {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f.length > 2 && Number(f[2]) === uid) return f[0];
    }
  } catch { /* no passwd file: the number alone */ }
  return `uid ${uid}`;
}

/** Checks that the connection on `socket` comes from this process's own user. */
export async function checkLocalPeer(socket: net.Socket): Promise<PeerCheck> {
  const me = process.getuid!();
  const uid = await peerUid(socket);
  if (uid === undefined) return { ok: false, why: 'cannot tell which local user opened this connection (it is not in /proc/net/tcp)' };
  if (uid === me) return { ok: true };
  return { ok: false, uid, why: `local user ${userName(uid)} (uid ${uid}) may not use this tunnel: it belongs to ${userName(me)} (uid ${me}), who ran hoopctl connect` };
}
