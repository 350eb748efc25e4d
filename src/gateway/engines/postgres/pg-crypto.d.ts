// Types for node-postgres' md5 and certificate helpers (pg/lib/crypto, exported by pg's
// package.json "./lib/*"). SCRAM itself is scram.ts (it caches the derived keys).
declare module 'pg/lib/crypto/utils.js' {
  export function postgresMd5PasswordHash(user: string, password: string, salt: Buffer): Promise<string>;
}
declare module 'pg/lib/crypto/cert-signatures.js' {
  /** WebCrypto name of the hash of a DER certificate's signature algorithm ('SHA-256', ...) */
  export function signatureAlgorithmHashFromCertificate(cert: Buffer): string;
}
