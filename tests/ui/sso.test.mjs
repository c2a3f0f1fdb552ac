// Single sign-on in a real browser: Debian's headless Chromium (playwright-core) signs in at a
// real OpenID Connect provider (oidc-provider.mjs) and lands in keyward's web UI with the role
// its groups map to. Run by crates/keyward-cli/tests/web_ui_sso.rs, which passes in:
//   KEYWARD_UI_URL        the escrow server (http://127.0.0.1:PORT)
//   KEYWARD_SSO_ISSUER    the provider (http://localhost:PORT: another site)
//   KEYWARD_UI_HANDOFF    a directory: the URL of alice's successful callback goes to callback.txt,
//                         the Cookie header the browser sent with it to cookie.txt
//   KEYWARD_UI_ARTIFACTS  where screenshots go
// alice (keyward-admins) becomes an admin, hank (it-helpdesk) the help desk; mallory (sales)
// is refused; a callback whose state is not the browser's, and an ID token minted for another
// nonce, sign nobody in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { browser, env, screenshots } from './browser.mjs';

const base = env('KEYWARD_UI_URL');
const issuer = env('KEYWARD_SSO_ISSUER');
const handoff = env('KEYWARD_UI_HANDOFF');
const shot = screenshots(env('KEYWARD_UI_ARTIFACTS'));
const REFUSED = 'Single sign-on did not sign you in';

// At the provider's (development) pages: sign in as `who` (any password), and consent.
async function atTheProvider(page, who) {
  await page.waitForURL((u) => u.href.startsWith(issuer));
  await page.fill('input[name=login]', who);
  await page.fill('input[name=password]', 'any password at this test provider');
  await page.click('button[type=submit]');
  await page.waitForURL((u) => !u.href.startsWith(issuer) || u.pathname.startsWith('/interaction'));
  if (page.url().startsWith(issuer)) {
    // The consent page.
    await page.click('button[type=submit]');
  }
}

// From keyward's login page, "Sign in with SSO" as `who`; the callback URL it came back to
// and the Cookie header sent with it (the sealed sign-in).
async function signIn(page, who) {
  let callback = null;
  let cookies = null;
  page.on('request', async (r) => {
    if (r.url().startsWith(`${base}/ui/sso/callback`)) {
      callback = r.url();
      cookies = (await r.allHeaders()).cookie ?? '';
    }
  });
  await page.goto(`${base}/ui/login`);
  await page.click('#sso');
  await atTheProvider(page, who);
  await page.waitForURL((u) => u.href.startsWith(base));
  await page.waitForLoadState('load');
  return { callback, cookies };
}

test('people sign in with SSO and get the role their groups map to', async () => {
  const complaints = [];
  const alice = await browser('alice', complaints, base);
  const hank = await browser('hank', complaints, base);
  try {
    let page = alice.page;
    const { callback, cookies } = await signIn(page, 'alice');
    await page.waitForURL(/\/ui\/devices$/);
    assert.equal(await page.locator('header .who strong').textContent(), 'sso:alice');
    assert.equal(await page.locator('#role').textContent(), 'admin');
    assert.equal(await page.locator('header nav a[href="/ui/accounts"]').count(), 1);
    await shot(page, 'sso-admin');
    assert.ok(callback, 'the provider sent the browser back to the callback');
    writeFileSync(join(handoff, 'callback.txt'), callback);
    assert.ok(cookies, 'the browser sent its sign-in cookie to the callback');
    writeFileSync(join(handoff, 'cookie.txt'), cookies);
    // The same callback again, in the same browser: refused (the sign-in was used).
    const again = await page.goto(callback);
    assert.equal(again.status(), 403);
    await page.getByText(REFUSED).waitFor();
    // alice's session is untouched by that.
    await page.goto(`${base}/ui/devices`);
    assert.equal(await page.locator('#role').textContent(), 'admin');

    page = hank.page;
    await signIn(page, 'hank');
    await page.waitForURL(/\/ui\/devices$/);
    assert.equal(await page.locator('header .who strong').textContent(), 'sso:hank');
    assert.equal(await page.locator('#role').textContent(), 'helpdesk');
    assert.equal(await page.locator('header nav a[href="/ui/requests/mine"]').count(), 1);
    assert.equal(await page.locator('header nav a[href="/ui/accounts"]').count(), 0);
    assert.equal(await page.locator('header nav a[href="/ui/requests"]').count(), 0);
    await shot(page, 'sso-helpdesk');
  } finally {
    await alice.close();
    await hank.close();
  }
  // The one refusal asked for: the replayed callback.
  const unexpected = complaints.filter((c) => !/status of 403 .*\/ui\/sso\/callback\?/.test(c));
  assert.deepEqual(unexpected, []);
});

test('a person whose groups map to no role is refused', async () => {
  const complaints = [];
  const mallory = await browser('mallory', complaints, base);
  try {
    const { page } = mallory;
    await signIn(page, 'mallory');
    await page.getByText(REFUSED).waitFor();
    assert.match(page.url(), /\/ui\/sso\/callback\?/);
    await shot(page, 'sso-refused');
    await page.goto(`${base}/ui/devices`);
    assert.match(page.url(), /\/ui\/login$/, 'no session');
  } finally {
    await mallory.close();
  }
  assert.deepEqual(complaints.filter((c) => !/status of 403 .*\/ui\/sso\/callback\?/.test(c)), []);
});

test('a tampered state or nonce signs nobody in', async () => {
  const complaints = [];
  const b = await browser('tamper', complaints, base);
  try {
    const { page } = b;
    // The state: while alice is at the provider, the state this browser holds changes (as when
    // a callback from someone else's sign-in is pushed into this browser): the callback's state
    // is no longer this browser's.
    await page.goto(`${base}/ui/login`);
    await page.click('#sso');
    await page.waitForURL((u) => u.href.startsWith(issuer));
    const held = (await b.context.cookies(base)).find((c) => c.name === '__Host-keyward-sso');
    assert.ok(held, 'the sign-in keeps its state in a cookie');
    assert.equal(held.sameSite, 'Lax');
    assert.ok(held.httpOnly && held.secure);
    await b.context.addCookies([{ ...held, value: `${held.value.slice(0, -1)}x` }]);
    await atTheProvider(page, 'alice');
    await page.waitForURL((u) => u.href.startsWith(base));
    await page.getByText(REFUSED).waitFor();
    await page.goto(`${base}/ui/devices`);
    assert.match(page.url(), /\/ui\/login$/, 'no session after a changed state');

    // The nonce: the provider is asked for an ID token for another nonce than keyward's.
    const start = await page.request.get(`${base}/ui/sso`, { maxRedirects: 0 });
    assert.equal(start.status(), 303);
    const auth = new URL(start.headers()['location']);
    assert.ok(auth.searchParams.get('nonce'), 'keyward sends a nonce');
    assert.equal(auth.searchParams.get('code_challenge_method'), 'S256', 'and a PKCE challenge');
    auth.searchParams.set('nonce', 'a-nonce-keyward-never-made');
    await page.goto(auth.href);
    // Signed in at the provider already (above): it sends the browser straight back.
    await page.waitForURL((u) => u.href.startsWith(base));
    await page.getByText(REFUSED).waitFor();
    await page.goto(`${base}/ui/devices`);
    assert.match(page.url(), /\/ui\/login$/, 'no session after a tampered nonce');
  } finally {
    await b.close();
  }
});
