// Loaded with --import: records every module the process loads and prints the list to stderr at
// exit, so a test can assert that `--help` and `--version` stay lean.
import module from 'node:module';

const seen = new Set();
module.registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    seen.add(r.url);
    return r;
  },
});
process.on('exit', () => process.stderr.write(`\n__IMPORTS__${JSON.stringify([...seen])}\n`));
