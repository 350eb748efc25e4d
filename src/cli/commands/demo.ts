/**
 * `hoopctl demo`: a gateway with the embedded store and dev IdP, a seeded demo PostgreSQL and a
 * config showing masking, blocking and review — then the commands to try, until Ctrl-C.
 */
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { UsageError } from '../../errors.ts';
import { line, info, bold, dim, out } from '../output.ts';

export default async function demo(opts: { port: string; dir?: string }): Promise<number> {
  const port = Number(opts.port);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new UsageError(`--port must be a port number (got ${opts.port})`);
  // `… | tee log` and Ctrl-C: the pipe closes first; the demo must still stop its database
  out.persistent = true;
  const dir = opts.dir ? resolve(opts.dir) : mkdtempSync(join(tmpdir(), 'hoopctl-demo-'));
  mkdirSync(dir, { recursive: true });
  const [{ startDemoDatabase }, { demoConfig, DEMO_PASSWORD_ENV }, { parseConfig }, { startGateway }] = await Promise.all([
    import('../../demo/demo-postgres.ts'), import('../../demo/demo-config.ts'), import('../../gateway/config/load.ts'), import('../../gateway/server.ts'),
  ]);
  info('Starting the demo database...');
  const db = await startDemoDatabase(dir);
  if (db.warning) info(`warning: ${db.warning}`);
  process.env[DEMO_PASSWORD_ENV] = db.password;
  const yaml = stringify(demoConfig(port, db));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, yaml);
  let gw;
  try {
    gw = await startGateway(parseConfig(yaml, file, process.env, dir));
  } catch (err) {
    await db.stop();
    throw err;
  }
  const url = gw.url;
  line(`
${bold('hoopctl demo is running')} (Ctrl-C stops it)
  gateway   ${url}   config ${file}
  database  ${db.description}, table "customers" with names, emails, phones, SSNs and card numbers
  users     alice / alice (group eng)   bob / bob (groups dba, sec-admins)   machines: ci-bot / ci-secret, dba-bot / dba-secret (dba)

${bold('Try it, in another terminal:')}
  export HOOP_GATEWAY=${url}
  hoopctl login                          ${dim('# open the URL, enter the code, sign in as alice / alice')}
  hoopctl connections
  hoopctl connect customers              ${dim('# leaves a local port open; in a third terminal:')}
  psql "postgres://127.0.0.1:5433/${db.database}" -c "select * from customers"          ${dim('# emails, SSNs, cards masked')}
  psql "postgres://127.0.0.1:5433/${db.database}" -c "select lower(email) from customers" ${dim('# still masked')}
  psql "postgres://127.0.0.1:5433/${db.database}" -c "delete from customers"            ${dim('# blocked by a guardrail')}
  psql "postgres://127.0.0.1:5433/${db.database}" -c "update customers set phone = '555-0100' where id = 1"   ${dim('# held for review: the notice names r_…')}
  hoopctl connect customers-jit --port 5434   ${dim('# the lease itself waits for approval by a dba')}
  hoopctl leases; hoopctl revoke <lease-id>

${bold('Approve as bob, in a fourth terminal')} ${dim('(his own config dir, so alice stays logged in):')}
  export HOOP_GATEWAY=${url} HOOP_CONFIG_DIR=$HOME/.hoopctl-bob
  hoopctl login                          ${dim('# sign in as bob / bob')}
  hoopctl reviews --watch                ${dim('# requests as they arrive (Ctrl-C to leave)')}
  hoopctl approve <review-id> --reason "ok for INC-1"   ${dim('# the held statement runs once; the lease starts')}
  hoopctl reject <review-id> --reason "use the migration"
  ${dim('(nobody approves their own request: alice cannot, and bob cannot approve his own)')}

  Scripts: HOOP_CLIENT_ID=ci-bot HOOP_CLIENT_SECRET=ci-secret hoopctl login --client-credentials
`);
  await new Promise<void>((res) => {
    // SIGHUP: the terminal that ran the demo was closed; the throwaway cluster must not outlive it
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => res());
  });
  info('Stopping the demo...');
  await gw.close();
  await db.stop();
  // a folder the demo made for itself goes with it (~47 MB of cluster); one given with --dir stays
  if (!opts.dir) rmSync(dir, { recursive: true, force: true });
  return 0;
}
