/**
 * The gateway's own SSH host key per ssh connection: what `ssh` through `hoopctl connect` sees and
 * checks (the CLI writes it into a known_hosts file of its own). Generated on the gateway's first
 * start (ed25519, OpenSSH format) and kept in the store's meta table, so it survives restarts and
 * every replica on a shared PostgreSQL store presents the same key (setMetaIfAbsent: the first
 * writer wins). Removing the connection from the config leaves its key in the store: re-adding
 * it brings the same key back, and users' known_hosts entries stay valid.
 */
import ssh2 from 'ssh2';

// ssh2 is CommonJS: its exports come through the default import
const { utils } = ssh2;
import type { GatewayConfig } from '../../config/load.ts';
import type { Store } from '../../store/store.ts';
import type { Logger } from '../../log.ts';

export const hostKeyMetaKey = (connection: string) => `ssh.host_key.${connection}`;

/**
 * A new ed25519 key in OpenSSH format. ssh2 1.17's generator writes about one key in 300 that
 * its own parser then rejects ("Malformed OpenSSH private key"): such a key is never kept.
 */
function generateHostKey(): string {
  for (let i = 0; i < 20; i++) {
    const text = utils.generateKeyPairSync('ed25519').private;
    if (!(utils.parseKey(text) instanceof Error)) return text;
  }
  throw new Error('could not generate a usable ed25519 host key');
}

/** Loads (or creates) the host key of every ssh connection into `cfg.secrets`. */
export async function ensureGatewayHostKeys(cfg: GatewayConfig, store: Store, log: Logger): Promise<void> {
  for (const c of cfg.connections) {
    if (c.type !== 'ssh') continue;
    const key = hostKeyMetaKey(c.name);
    let text = await store.getMeta(key);
    if (!text) {
      text = await store.setMetaIfAbsent(key, generateHostKey());
      log.info({ connection: c.name }, 'generated the gateway ssh host key of the connection');
    }
    const parsed = utils.parseKey(text);
    const k = Array.isArray(parsed) ? parsed[0] : parsed;
    if (k instanceof Error || !k) throw new Error(`the stored ssh host key of connection "${c.name}" (store meta ${key}) cannot be parsed: ${k instanceof Error ? k.message : 'empty'}`);
    const secret = cfg.secrets.get(c.name) ?? {};
    secret.gatewayHostKey = { private: text, public: `${k.type} ${k.getPublicSSH().toString('base64')}` };
    cfg.secrets.set(c.name, secret);
  }
}
