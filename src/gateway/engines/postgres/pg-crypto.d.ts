// Types for node-postgres' SCRAM and md5 helpers (pg/lib/crypto, exported by pg's package.json
// "./lib/*"). Reused rather than re-implemented: SASLprep, nonce checks, channel binding.
declare module 'pg/lib/crypto/sasl.js' {
  import type { Socket } from 'node:net';
  export interface SaslSession { mechanism: string; response: string; message: string }
  export function startSession(mechanisms: string[], stream?: Socket | null): SaslSession;
  export function continueSession(session: SaslSession, password: string, serverData: string, stream?: Socket | null): Promise<void>;
  export function finalizeSession(session: SaslSession, serverData: string): void;
}
declare module 'pg/lib/crypto/utils.js' {
  export function postgresMd5PasswordHash(user: string, password: string, salt: Buffer): Promise<string>;
}
