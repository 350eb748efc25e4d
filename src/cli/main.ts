/**
 * The command registry: declarations only. Each action `await import()`s its implementation so
 * `--help` and `--version` load nothing heavy (no ink, react, openid-client or gateway code).
 */
import { Command, Option, CommanderError } from 'commander';
import { VERSION } from '../version.ts';
import { exitCodeTable, ExitCode } from '../errors.ts';
import { out, reportError } from './output.ts';
import { defaultPortsText } from './ports.ts';

export function buildProgram(): Command {
  const program = new Command('hoopctl')
    .description('Access gateway and CLI without standing credentials: log in, lease a connection, connect through the gateway.')
    .version(VERSION, '-v, --version')
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .addHelpText('after', `\nEnvironment: HOOP_GATEWAY, HOOP_TOKEN, HOOP_CLIENT_ID/HOOP_CLIENT_SECRET, HOOP_CONFIG_DIR, NO_COLOR\n\n${exitCodeTable}`)
    .hook('preAction', (_this, action) => {
      out.json = Boolean(action.opts().json);
    });

  const gatewayOpt = () => new Option('--gateway <url>', 'gateway URL (default: HOOP_GATEWAY or the last login)');
  const run = (load: () => Promise<{ default: (...a: any[]) => Promise<number | void> }>) =>
    async (...args: unknown[]) => {
      const code = await (await load()).default(...args);
      if (typeof code === 'number' && code !== 0) process.exitCode = code;
    };

  program.command('login')
    .description('log in with OIDC device flow (RFC 8628), or as a machine with --client-credentials')
    .addOption(gatewayOpt())
    .option('--no-browser', 'do not try to open a browser; just print the URL and code')
    .option('--client-credentials', 'machine identity from HOOP_CLIENT_ID / HOOP_CLIENT_SECRET')
    .option('--json', 'print the result as JSON')
    .action(run(() => import('./commands/login.ts')));

  program.command('logout')
    .description('revoke and delete the stored tokens for the gateway')
    .addOption(gatewayOpt())
    .option('--json', 'print the result as JSON')
    .action(run(() => import('./commands/logout.ts')));

  program.command('whoami')
    .description('show who you are logged in as: subject, groups, gateway, token expiry')
    .addOption(gatewayOpt())
    .option('--json', 'print as JSON')
    .action(run(() => import('./commands/whoami.ts')));

  program.command('connections').alias('ls')
    .description('list the connections you may use')
    .addOption(gatewayOpt())
    .option('--json', 'print as JSON')
    .action(run(() => import('./commands/connections.ts')));

  program.command('connect')
    .description('lease a connection and open a local port that tunnels to it through the gateway')
    .argument('<conn>', 'connection name (see `hoopctl connections`)')
    .option('-p, --port <n>', `local port (default by type: ${defaultPortsText}; a free one when that is taken)`)
    .option('-d, --duration <dur>', 'lease duration, e.g. 30m (clamped to the connection\'s lease.max)')
    .option('-r, --reason <text>', 'why you need access (recorded, shown to reviewers)')
    .option('--new-lease', 'take a fresh lease even if an active one exists')
    .option('--socket-dir <dir>', 'listen on a Unix-domain socket in this folder (made 0700) instead of a TCP port: only you can connect, on any OS (psql -h <dir> -p <port>)')
    .option('--any-local-user', 'do not check which local user opens a TCP connection (Linux checks by default; other users could ride your lease)')
    .addOption(gatewayOpt())
    .option('--json', 'print the listener and lease as JSON lines')
    .action(run(() => import('./commands/connect.ts')));

  program.command('leases')
    .description('list your leases (--all: every user\'s, admins only)')
    .option('-a, --all', 'every user\'s leases (admins)')
    .addOption(gatewayOpt())
    .option('--json', 'print as JSON')
    .action(run(() => import('./commands/leases.ts')));

  program.command('revoke')
    .description('end a lease now: its open connections are closed')
    .argument('<lease-id>')
    .addOption(gatewayOpt())
    .option('--json', 'print as JSON')
    .action(run(() => import('./commands/revoke.ts')));

  program.command('reviews')
    .description('review requests you may decide (--mine: yours; --all: everyone\'s, admins); --watch stays open')
    .option('--mine', 'your own requests, in every state')
    .option('-a, --all', 'every request (admins)')
    .option('-w, --watch', 'stay open: a live list on a terminal, one line per change otherwise')
    .addOption(gatewayOpt())
    .option('--json', 'print as JSON (with --watch: one JSON object a line)')
    .action(run(() => import('./commands/reviews.ts')));

  program.command('approve')
    .description('approve a review request: a pending lease starts, a held statement runs (never your own request)')
    .argument('<review-id>', 'see `hoopctl reviews`')
    .option('-r, --reason <text>', 'why (at most 4 KiB; audited, shown to the requester)')
    .addOption(gatewayOpt())
    .option('--json', 'print as JSON')
    .action(run(async () => ({ default: (await import('./commands/decide.ts')).approve })));

  program.command('reject')
    .description('reject a review request: the lease is refused, or the held statement gets an error')
    .argument('<review-id>', 'see `hoopctl reviews`')
    .option('-r, --reason <text>', 'why (at most 4 KiB; shown to the requester)')
    .addOption(gatewayOpt())
    .option('--json', 'print as JSON')
    .action(run(async () => ({ default: (await import('./commands/decide.ts')).reject })));

  const sessions = program.command('sessions')
    .description('list recorded sessions (yours; admins may pass --user)')
    .option('--conn <name>', 'only this connection')
    .option('--user <user>', 'only this user (admins)')
    .option('--since <dur>', 'only sessions started within this window, e.g. 24h')
    .addOption(gatewayOpt())
    .option('--json', 'print as JSON')
    .action(run(() => import('./commands/sessions.ts')));
  // `sessions` and `sessions verify` both take --json/--gateway: each keeps the ones written after it
  sessions.enablePositionalOptions();
  sessions.command('verify')
    .description('check a recording\'s hash chain on this machine (exit 1 when it was altered, 4 when retention deleted it)')
    .argument('<session-id>')
    .addOption(gatewayOpt())
    .option('--json', 'print {session, ok, entries, problem?, seq?}')
    .action(run(() => import('./commands/sessions-verify.ts')));

  program.command('replay')
    .description('replay a session\'s recording: statements, masked results, blocked statements, or an ssh terminal, with the original timing')
    .argument('<session-id>', 'see `hoopctl sessions`')
    .option('--speed <n>', 'play faster (2) or slower (0.5); implies --timing')
    .option('--timing', 'pause between events even when stdout is not a terminal')
    .option('--no-timing', 'print everything at once')
    .addOption(new Option('--format <fmt>', 'text transcript (default), NDJSON (one event a line) or asciicast v2 for `asciinema play`').choices(['text', 'json', 'asciicast']))
    .addOption(gatewayOpt())
    .option('--json', 'same as --format json')
    .addHelpText('after', `
Timing: the text transcript pauses between events as they were recorded (divided by --speed,
each pause at most 3s). It pauses only when stdout is a terminal, unless --timing or --speed is
given; --no-timing never pauses. --format json never pauses; --format asciicast writes the same
pauses into its timestamps instead of sleeping.`)
    .action(run(() => import('./commands/replay.ts')));

  program.command('audit')
    .description('the gateway\'s audit log: leases, sessions, blocked statements (admins)')
    .option('--since <dur>', 'window, e.g. 24h', '24h')
    .addOption(gatewayOpt())
    .option('--json', 'print as JSON')
    .action(run(() => import('./commands/audit.ts')));

  program.command('exec')
    .description('run SQL on a connection through the gateway (-c, -f or stdin), or wrap a command: exec <conn> -- <command>')
    .argument('<conn>', 'connection name (see `hoopctl connections`)')
    .argument('[command...]', 'after --: a command to run with the tunnel in its environment (PGHOST, PGPORT, DATABASE_URL, HOOP_URL, ...)')
    .option('-c, --command <sql>', 'SQL to run (repeatable; split into statements like psql)', (v: string, prev: string[] = []) => [...prev, v])
    .option('-f, --file <file>', 'read SQL from a file (- for stdin; stdin is read when neither -c nor -f is given)')
    .addOption(new Option('--format <fmt>', 'output format (default: table on a terminal, csv otherwise)').choices(['table', 'csv', 'json', 'ndjson']))
    .option('--continue-on-error', 'run the remaining statements after one fails (default: stop, like psql -v ON_ERROR_STOP=1)')
    .option('-r, --reason <text>', 'why you need access (recorded, shown to reviewers)')
    .option('-d, --duration <dur>', 'lease duration when a new lease is taken, e.g. 30m')
    .option('--wait <dur>', 'wait this long for a review (the lease\'s or a held statement\'s) instead of exiting 5 at once')
    .option('--review <id>', 'run a statement held earlier, once its review r_… is approved (same statement text)')
    .option('--timeout <dur>', 'limit for the whole command: the running statement is cancelled on the target')
    .option('-p, --port <n>', 'wrapped command: local port for the tunnel (default: a free one)')
    .addOption(gatewayOpt())
    .option('--json', 'progress events as JSON lines on stderr (lease, waiting_approval, approved, running, completed)')
    .addHelpText('after', `
Examples:
  hoopctl exec app -c 'select count(*) from orders'
  hoopctl exec app -f migration.sql --reason "deploy 42" --wait 15m
  hoopctl exec app --format ndjson < report.sql
  hoopctl exec app -- psql -f migration.sql
  hoopctl exec app -- pgbench -c 4 -T 10

A held statement exits 5 with its review id unless --wait; after approval, run the same input
again with --review <id>. SIGTERM cancels the running statement on the target.`)
    .action(run(() => import('./commands/exec.ts')));

  program.command('mcp')
    .description('MCP server on stdio for AI agents: tools list_connections and query (same policy as exec)')
    .option('--wait <dur>', 'how long a query waits for a held statement\'s review before answering "waiting for approval"', '0s')
    .option('--max-rows <n>', 'rows returned per statement (the rest is counted, not returned)', '500')
    .addOption(gatewayOpt())
    .action(run(() => import('./commands/mcp.ts')));

  program.command('gateway')
    .description('run the gateway server')
    .requiredOption('-c, --config <file>', 'gateway.yaml')
    .option('--check', 'validate the config and exit')
    .action(run(() => import('./commands/gateway.ts')));

  program.command('demo')
    .description('start a gateway, dev IdP and a seeded demo PostgreSQL, and print what to try')
    .option('--port <n>', 'gateway port', '8009')
    .option('--dir <dir>', 'working directory for the demo (default: a temp dir)')
    .action(run(() => import('./commands/demo.ts')));

  program.command('completion')
    .description('print a shell completion script')
    .argument('<shell>', 'bash, zsh or fish')
    .action(run(() => import('./commands/completion.ts')));

  return program;
}

/**
 * Output to a closed pipe (`hoopctl sessions | head -1`) ends the command quietly with exit 0, as
 * for any Unix filter, in every command; without this Node throws EPIPE with a stack trace. A
 * long-running command (`out.persistent`: demo, gateway, connect) keeps running with its output
 * gone instead: the demo must still stop its database, the gateway keep serving.
 */
function quietOnClosedPipe(): void {
  for (const s of [process.stdout, process.stderr]) {
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      if (!out.persistent) process.exit(0);
    });
  }
}

export async function main(argv = process.argv): Promise<void> {
  quietOnClosedPipe();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : ExitCode.usage;
      return;
    }
    process.exitCode = reportError(err);
  }
}
