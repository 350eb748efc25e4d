/**
 * The dev IdP's HTML: plain forms with no scripts and no external assets, so they work in any
 * browser, in a terminal browser and for test/helpers/device-flow.ts. Element ids and the
 * `data-page` attribute are the contract that helper relies on.
 */

export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

const STYLE = 'body{font:16px/1.4 system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#222}'
  + 'h1{font-size:1.4rem}input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;margin:.25rem 0 .75rem;font-size:1rem}'
  + 'button{padding:.5rem 1rem;font-size:1rem;margin-right:.5rem}.err{color:#b00020}.code{font:1.6rem monospace;letter-spacing:.1em}'
  + '.note{color:#666;font-size:.85rem;margin-top:2rem}';

/** `page` names the step for scripts (`enter-code`, `confirm`, `login`, `success`, `denied`, `error`). */
export function layout(page: string, title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)} · hoop dev IdP</title><style>${STYLE}</style></head>
<body data-page="${esc(page)}"><h1>${esc(title)}</h1>
${body}
<p class="note">hoop development identity provider — users and passwords come from <code>dev_idp</code> in gateway.yaml. Not for production.</p>
</body></html>`;
}

/** Wraps oidc-provider's user code form (id op.deviceInputForm, hidden xsrf). */
export function enterCodePage(form: string, error?: string): string {
  return layout('enter-code', 'Sign in to hoop',
    `${error ? `<p class="err" role="alert">${esc(error)}</p>` : '<p>Enter the code shown by <code>hoopctl login</code>.</p>'}
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
}

/** Wraps oidc-provider's confirm form (id op.deviceConfirmForm: xsrf, user_code, confirm=yes). */
export function confirmPage(form: string, clientId: string, userCode: string): string {
  return layout('confirm', 'Confirm device',
    `<p><strong>${esc(clientId)}</strong> asks to sign in with the code</p>
<p class="code">${esc(userCode)}</p>
<p>Continue only if this is the code your terminal shows.</p>
${form}
<button type="submit" form="op.deviceConfirmForm" id="confirm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes" id="abort">Deny</button>`);
}

export function loginPage(action: string, opts: { username?: string; error?: string; clientId: string }): string {
  return layout('login', 'Sign in',
    `<p>Sign in to authorize <strong>${esc(opts.clientId)}</strong>.</p>
${opts.error ? `<p class="err" role="alert">${esc(opts.error)}</p>` : ''}
<form id="login" method="post" action="${esc(action)}">
<label>Username<input type="text" name="username" value="${esc(opts.username ?? '')}" autocomplete="username" autofocus required></label>
<label>Password<input type="password" name="password" autocomplete="current-password" required></label>
<button type="submit" name="action" value="login" id="submit">Sign in</button>
<button type="submit" name="action" value="cancel" id="cancel" formnovalidate>Cancel</button>
</form>`);
}

export function successPage(): string {
  return layout('success', 'Signed in', '<p>You are signed in. Return to your terminal; you can close this page.</p>');
}

export function deniedPage(reason?: string): string {
  return layout('denied', 'Sign-in denied',
    `${reason ? `<p class="err" role="alert">${esc(reason)}</p>` : ''}<p>The request was denied. Your terminal will report that access was denied; you can close this page.</p>`);
}

export function errorPage(title: string, message: string): string {
  return layout('error', title, `<p class="err" role="alert">${esc(message)}</p>`);
}
