/**
 * Completes a device authorization in the dev IdP the way a person in a browser would —
 * plain HTTP, the same HTML forms, cookies kept in a tiny jar, redirects followed by hand so
 * every Set-Cookie is seen. Pages are told apart by `<body data-page="...">`
 * (src/gateway/idp/views.ts).
 *
 *   enter code → confirm (or deny) → username/password → success
 */

export interface Page { url: string; status: number; html: string }
export interface Form { id?: string; action: string; fields: Map<string, string> }

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|#39|apos);/gi, (_, e: string) => {
    const l = e.toLowerCase();
    if (l.startsWith('#x')) return String.fromCodePoint(parseInt(l.slice(2), 16));
    if (l.startsWith('#')) return String.fromCodePoint(parseInt(l.slice(1), 10));
    return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[l];
  });
}

function attrs(tag: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of tag.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g)) {
    out.set(m[1].toLowerCase(), decodeEntities(m[2] ?? m[3] ?? m[4] ?? ''));
  }
  return out;
}

function parseForms(html: string, base: string): Form[] {
  const forms: Form[] = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const a = attrs(m[1]);
    const fields = new Map<string, string>();
    for (const i of m[2].matchAll(/<input\b([^>]*)>/gi)) {
      const ia = attrs(i[1]);
      const name = ia.get('name');
      if (name && !['submit', 'button', 'checkbox', 'radio'].includes(ia.get('type') ?? 'text')) fields.set(name, ia.get('value') ?? '');
    }
    forms.push({ id: a.get('id'), action: new URL(a.get('action') || base, base).href, fields });
  }
  return forms;
}

export function pageName(html: string): string | undefined {
  return /<body\b[^>]*\bdata-page="([^"]+)"/i.exec(html)?.[1];
}

export function pageError(html: string): string {
  const m = /<p class="err"[^>]*>([\s\S]*?)<\/p>/i.exec(html);
  return m ? decodeEntities(m[1]) : (/<title>([\s\S]*?)<\/title>/i.exec(html)?.[1] ?? 'unknown page');
}

/** A cookie-keeping, redirect-following form submitter; exported for tests that need single steps. */
export class Browser {
  readonly #jar = new Map<string, string>();

  #keep(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...rest] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = rest.some((r) => /^\s*max-age=0\s*$/i.test(r) || (/^\s*expires=/i.test(r) && Date.parse(r.split('=')[1]) < Date.now()));
      if (expired || value === '') this.#jar.delete(name);
      else this.#jar.set(name, value);
    }
  }

  async request(url: string, init: { method?: string; form?: URLSearchParams } = {}): Promise<Page> {
    let method = init.method ?? (init.form ? 'POST' : 'GET');
    let body: string | undefined = init.form?.toString();
    for (let hop = 0; hop < 10; hop++) {
      const headers: Record<string, string> = { accept: 'text/html' };
      if (this.#jar.size) headers.cookie = [...this.#jar].map(([k, v]) => `${k}=${v}`).join('; ');
      if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
      const res = await fetch(url, { method, headers, body, redirect: 'manual' });
      this.#keep(res);
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.arrayBuffer();
        url = new URL(location, url).href;
        if (res.status !== 307 && res.status !== 308) {
          method = 'GET';
          body = undefined;
        }
        continue;
      }
      return { url, status: res.status, html: await res.text() };
    }
    throw new Error(`device flow: too many redirects at ${url}`);
  }

  async submit(page: Page, pick: (f: Form) => boolean, set: Record<string, string> = {}): Promise<Page> {
    const form = parseForms(page.html, page.url).find(pick);
    if (!form) throw new Error(`device flow: expected a form on the "${pageName(page.html) ?? page.url}" page (HTTP ${page.status}): ${pageError(page.html)}`);
    const data = new URLSearchParams([...form.fields]);
    for (const [k, v] of Object.entries(set)) data.set(k, v);
    return this.request(form.action, { form: data });
  }
}

export function expectPage(page: Page, name: string, step: string): void {
  const got = pageName(page.html);
  if (got !== name) throw new Error(`device flow: ${step}: expected the "${name}" page, got "${got ?? 'unknown'}" (HTTP ${page.status}): ${pageError(page.html)}`);
}

/**
 * Approves (or with `deny: true`, denies on the confirm page) a pending device authorization.
 * Pass `verification_uri_complete`, or `verification_uri` with the user code to type in.
 * Throws with the page's message when a step fails (wrong password, expired code).
 */
export async function completeDeviceFlow(
  verificationUriComplete: string | { uri: string; userCode: string },
  username: string,
  password: string,
  opts: { deny?: boolean } = {},
): Promise<void> {
  const browser = new Browser();
  let page = await openLoginPage(browser, verificationUriComplete, opts);
  if (!page) return;
  page = await browser.submit(page, (f) => f.id === 'login', { username, password, action: 'login' });
  expectPage(page, 'success', `sign in as ${username}`);
}

/** Steps up to the login page (returned), or through Deny (returns undefined). */
export async function openLoginPage(
  browser: Browser,
  verificationUriComplete: string | { uri: string; userCode: string },
  opts: { deny?: boolean } = {},
): Promise<Page | undefined> {
  let page: Page;
  if (typeof verificationUriComplete === 'string') {
    // oidc-provider answers verification_uri_complete with a self-submitting form (a script
    // posts it; without scripts a button does). Submit it as the button would.
    page = await browser.request(verificationUriComplete);
    page = await browser.submit(page, () => true);
  } else {
    page = await browser.request(verificationUriComplete.uri);
    expectPage(page, 'enter-code', 'open verification_uri');
    page = await browser.submit(page, (f) => f.id === 'op.deviceInputForm', { user_code: verificationUriComplete.userCode });
  }
  expectPage(page, 'confirm', 'enter the user code');

  if (opts.deny) {
    page = await browser.submit(page, (f) => f.id === 'op.deviceConfirmForm', { abort: 'yes' });
    expectPage(page, 'denied', 'deny');
    return undefined;
  }
  page = await browser.submit(page, (f) => f.id === 'op.deviceConfirmForm');
  expectPage(page, 'login', 'confirm');
  return page;
}
