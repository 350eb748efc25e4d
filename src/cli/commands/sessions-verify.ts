/**
 * `hoopctl sessions verify <session-id>`: checks a recording's hash chain here, on the client,
 * rather than taking the gateway's word for it. Exit 0 when intact; exit 1 when the recording was
 * altered (an entry edited, dropped or reordered), naming the first entry that does not verify.
 *
 * A hash chain alone cannot show that its last batches were removed; the gateway closes the
 * recording of a session that ended with a counting `recording.closed` entry, so a cut-off end
 * of an ended session is reported too (recorder.ts).
 */
import type { Command } from 'commander';
import { authedClient } from '../../client/auth.ts';
import { ExitCode } from '../../errors.ts';
import { out, printJson, line } from '../output.ts';
import { fetchVerifiedRecording } from './replay.ts';

type Opts = { gateway?: string; json?: boolean };

export default async function sessionsVerify(id: string, _own: Opts, cmd: Command): Promise<number> {
  // `hoopctl sessions --json verify <id>` gives --json to `sessions`: honour it here too
  const opts = cmd.optsWithGlobals<Opts>();
  if (opts.json) out.json = true;
  const gw = await authedClient(opts.gateway);
  const { session, entries, check: r } = await fetchVerifiedRecording(gw, id);
  // a crash end: the gateway that restarted closed the recording (session/recovery.ts)
  let interrupted = false;
  try { interrupted = r.ok && entries.length > 0 && JSON.parse(entries[entries.length - 1].event).interrupted === true; } catch { /* not JSON */ }
  if (out.json) {
    printJson(r.ok ? { session: session.id, ok: true, entries: entries.length, ...(interrupted ? { interrupted: true } : {}) } : { session: session.id, ok: false, entries: entries.length, problem: r.problem, seq: r.seq });
    return r.ok ? ExitCode.ok : ExitCode.target;
  }
  if (r.ok) {
    const none = entries.length === 0 && session.type !== 'postgres' ? ` (a ${session.type} session records no events)` : '';
    const crash = interrupted ? '; the session was interrupted (the gateway stopped during it; its last moments may be missing)' : '';
    line(`recording of ${session.id}: ${entries.length} ${entries.length === 1 ? 'entry' : 'entries'}${none}, hash chain intact${crash}`);
    return ExitCode.ok;
  }
  process.stderr.write(`hoopctl: the recording of ${session.id} was altered: ${r.problem} (first entry that does not verify: ${r.seq}; ${entries.length} entries read)\n`);
  return ExitCode.target;
}
