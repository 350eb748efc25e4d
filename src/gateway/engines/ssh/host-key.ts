/**
 * Host keys as OpenSSH writes them: `ssh-ed25519 AAAA...` (a known_hosts line without its host
 * field, or a .pub file's line) or a `SHA256:...` fingerprint (what `ssh-keygen -lf` prints).
 * Pure functions: config load checks `target.host_key` with them, the engine compares the key the
 * target presents during key exchange (the raw public key blob).
 */
import { createHash } from 'node:crypto';

export interface HostKeySpec {
  /** the key type (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`), when the spec is a key */
  type?: string;
  /** the public key blob, when the spec is a key */
  blob?: Buffer;
  /** the unpadded base64 SHA-256 of the blob, when the spec is a fingerprint */
  sha256?: string;
  problem?: string;
}

const KEY_TYPES = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com|ssh-dss)$/;

export function parseHostKeySpec(spec: string): HostKeySpec {
  const s = spec.trim();
  const fp = /^SHA256:([A-Za-z0-9+/]{43})=?$/.exec(s);
  if (fp) return { sha256: fp[1] };
  // a whole known_hosts line ("host type key") works too: the host field is ignored
  const parts = s.split(/\s+/);
  const at = parts.findIndex((p) => KEY_TYPES.test(p));
  if (at === -1 || !parts[at + 1]) return { problem: 'must be a public key like "ssh-ed25519 AAAA..." (from the target\'s /etc/ssh/ssh_host_*_key.pub or `ssh-keyscan`) or a fingerprint "SHA256:..."' };
  const blob = Buffer.from(parts[at + 1], 'base64');
  if (blobType(blob) !== parts[at]) return { problem: `the base64 key does not hold a ${parts[at]} key (copy the whole line from the .pub file)` };
  return { type: parts[at], blob };
}

/** The key type a public key blob starts with (a length-prefixed string), or undefined. */
export function blobType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const n = blob.readUInt32BE(0);
  if (n > 64 || blob.length < 4 + n) return undefined;
  return blob.subarray(4, 4 + n).toString('latin1');
}

/** OpenSSH's fingerprint of a public key blob: `SHA256:` + unpadded base64. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** `type base64`, the form kept in the store and shown in messages */
export function keyLine(blob: Buffer): string {
  return `${blobType(blob) ?? 'unknown'} ${blob.toString('base64')}`;
}

export function matches(spec: HostKeySpec, blob: Buffer): boolean {
  if (spec.blob) return spec.blob.equals(blob);
  if (spec.sha256) return fingerprint(blob) === `SHA256:${spec.sha256}`;
  return false;
}

/**
 * The host key algorithms to offer the target, the configured key's first: a server with several
 * host keys signs with the first one both sides know, and it must be the one we can check.
 */
export function hostKeyAlgorithms(type: string | undefined): string[] | undefined {
  if (!type) return undefined;
  if (type === 'ssh-rsa') return ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];
  return [type];
}
