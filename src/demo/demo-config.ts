/** The demo's gateway.yaml: users alice (eng) and bob (dba), and connections that show masking, blocking and review. */
import type { DemoDatabase } from './demo-postgres.ts';

export const DEMO_PASSWORD_ENV = 'HOOP_DEMO_DB_PASSWORD';

export function demoConfig(port: number, db: DemoDatabase) {
  const target = { host: db.host, port: db.port, database: db.database, user: db.user, password_env: DEMO_PASSWORD_ENV };
  const policy = {
    guardrails: {
      deny: ['drop', 'truncate', 'delete_without_where', 'update_without_where', 'grant', 'copy_to_program'],
      review: ['delete', 'update', 'alter'],
      deny_patterns: ['pg_read_file', 'pg_ls_dir'],
    },
    masking: { columns: ['email', '*ssn*', 'card_number'], detectors: ['email', 'credit_card', 'ssn', 'phone'] },
    recording: { results: true, retention: '90d' },
  };
  return {
    listen: `127.0.0.1:${port}`,
    public_url: `http://127.0.0.1:${port}`,
    store: 'sqlite:./data/hoop.db',
    auth: { issuer: 'dev', client_id: 'hoopctl', groups_claim: 'groups', admins: ['sec-admins'] },
    dev_idp: {
      users: [
        { username: 'alice', password: 'alice', groups: ['eng'] },
        { username: 'bob', password: 'bob', groups: ['dba', 'sec-admins'] },
      ],
      clients: [
        { client_id: 'ci-bot', client_secret: 'ci-secret', groups: ['ci'] },
        // a machine reviewer, for scripts that try approvals without a second browser login
        { client_id: 'dba-bot', client_secret: 'dba-secret', groups: ['dba'] },
      ],
    },
    connections: [
      // everyday access: masked results, dangerous statements blocked, risky ones need review
      // (delete/update/alter wait for one approval by a dba; the lease itself needs none)
      { name: 'customers', type: 'postgres', target, access: { groups: ['eng', 'dba', 'ci'] }, lease: { default: '30m', max: '2h' },
        review: { groups: ['dba'], min_approvals: 1, timeout: '15m', lease: false }, ...policy },
      // just-in-time: a lease on this one waits until someone in dba approves it
      { name: 'customers-jit', type: 'postgres', target, access: { groups: ['eng', 'dba'] }, lease: { default: '15m', max: '1h' },
        review: { groups: ['dba'], min_approvals: 1, timeout: '15m' }, ...policy },
    ],
  };
}
