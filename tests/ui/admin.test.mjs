// The admin web UI in a real browser: Debian's headless Chromium driven by playwright-core
// (never a downloaded browser). Run by crates/keyward-cli/tests/web_ui_browser.rs against the
// real server, helper and agent, which passes in:
//   KEYWARD_UI_URL        the server, e.g. http://127.0.0.1:34567
//   KEYWARD_UI_ADMIN      an admin's name, KEYWARD_UI_PASSWORD its password
//   KEYWARD_UI_DEVICE     an enrolled device that has escrowed a key and reported it
//   KEYWARD_UI_HANDOFF    a directory: the key shown goes to key.txt (and its escrow id to
//                         escrow.txt); the test then waits for a file named `continue` there,
//                         written once the Rust side has tried the key on the disk
//   KEYWARD_UI_ARTIFACTS  where screenshots go
// The admin signs in, finds the device by searching, opens it, shows its recovery key with a
// reason, finds that in the audit log, and sees the device rotate the key at its next check-in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { browser, env, screenshots } from './browser.mjs';

const base = env('KEYWARD_UI_URL');
const admin = env('KEYWARD_UI_ADMIN');
const password = env('KEYWARD_UI_PASSWORD');
const device = env('KEYWARD_UI_DEVICE');
const handoff = env('KEYWARD_UI_HANDOFF');
const shot = screenshots(env('KEYWARD_UI_ARTIFACTS'));

async function until(what, seconds, check) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(500);
  }
}

test('an admin reveals a recovery key and watches the device rotate it', async () => {
  // Anything the page complains about — a CSP violation above all — fails the test.
  const complaints = [];
  const { context, page, close } = await browser('admin', complaints);
  try {
    // Signing in.
    await page.goto(`${base}/ui/`);
    assert.match(page.url(), /\/ui\/login$/);
    await shot(page, '01-login');
    await page.fill('#name', admin);
    await page.fill('#password', password);
    await Promise.all([page.waitForURL(/\/ui\/devices$/), page.click('button[type=submit]')]);
    const session = (await context.cookies()).find((c) => c.name === '__Host-keyward-session');
    assert.ok(session, 'Chromium keeps the Secure session cookie on http://127.0.0.1');
    assert.equal(session.httpOnly, true);
    assert.equal(session.secure, true);
    assert.equal(session.sameSite, 'Strict');
    assert.equal(await page.evaluate(() => document.cookie), '', 'no cookie visible to scripts');
    assert.equal(await page.locator('header .who strong').textContent(), admin);

    // The fleet: the devices that need someone first, each state in words.
    const health = await page.locator('table.devices tbody tr td:nth-child(2)').allTextContents();
    assert.equal(health.length, 5);
    assert.deepEqual(health.map((h) => h.trim().replace(/ · .*/, '')), [
      'needs attention', 'stale', 'never checked in', 'pending', 'escrow verified',
    ]);
    await shot(page, '02-devices');

    // Finding the device by a piece of its id.
    const piece = device.slice(4, 14);
    await page.fill('#q', piece);
    await Promise.all([page.waitForURL(/\?q=/), page.press('#q', 'Enter')]);
    const rows = page.locator('table.devices tbody tr');
    assert.equal(await rows.count(), 1);
    assert.equal((await rows.locator('td').nth(1).textContent()).trim(), 'escrow verified');
    await shot(page, '03-search');

    // Its page: the volume's active escrow.
    await Promise.all([page.waitForURL(/\/ui\/devices\/dev-/), page.click(`a.device-link:text("${device}")`)]);
    assert.match(await page.locator('h1').textContent(), new RegExp(device));
    const active = (await page.locator('table.volumes code.escrow-id').first().textContent()).trim();
    assert.match(active, /^esc-/);
    await shot(page, '04-device');

    // Showing the key: a reason is required before the form goes anywhere.
    const form = page.locator('form.reveal').first();
    await form.locator('button[type=submit]').click();
    assert.match(page.url(), /\/ui\/devices\/dev-[0-9a-f]+$/, 'an empty reason stays on the page');
    const reason = 'E2E drill: user locked out after firmware update, ticket 4711';
    await form.locator('textarea[name=reason]').fill(reason);
    await Promise.all([page.waitForURL(/\/reveal$/), form.locator('button[type=submit]').click()]);
    const key = (await page.locator('#recovery-key').textContent()).trim();
    const shown = (await page.locator('#escrow-id').textContent()).trim();
    assert.equal(shown, active, 'the latest key is the active one');
    assert.match(await page.locator('#standing').textContent(), /reported this key/);
    writeFileSync(join(handoff, 'escrow.txt'), shown);
    // Renamed into place: the Rust side never reads half a key.
    writeFileSync(join(handoff, 'key.tmp'), key);
    renameSync(join(handoff, 'key.tmp'), join(handoff, 'key.txt'));
    // The picture keeps the layout and loses the secret.
    await page.locator('#recovery-key .half').evaluateAll((halves) => {
      for (const h of halves) h.textContent = h.textContent.replace(/[0-9A-Za-z]/g, 'x');
    });
    assert.doesNotMatch(await page.locator('#recovery-key').textContent(), new RegExp(key));
    await shot(page, '05-revealed-key');

    // The Rust side tries the key on the disk while the device is held still.
    await until('the go-ahead from web_ui_browser.rs', 120, () => existsSync(join(handoff, 'continue')));

    // The audit log has it, under this admin, with the reason.
    await page.click('header nav a:text("Audit log")');
    await page.waitForURL(/\/ui\/audit$/);
    const entry = page.locator('table.audit tbody tr').filter({ hasText: 'key-show' }).first();
    assert.match(await entry.textContent(), new RegExp(`web:${admin}`));
    assert.match(await entry.textContent(), /ticket 4711/);
    assert.match(await entry.textContent(), new RegExp(device));
    await shot(page, '06-audit');

    // The device rotates the seen key at its next check-in: a new active escrow.
    await page.goto(`${base}/ui/devices/${device}`);
    const rotated = await until('the rotation after use', 90, async () => {
      await page.reload();
      const now = (await page.locator('table.volumes code.escrow-id').first().textContent()).trim();
      const verified = await page.locator('table.volumes').getByText('escrow verified').count();
      return now !== active && verified > 0 ? now : null;
    });
    assert.match(rotated, /^esc-/);
    const old = page.locator('table.escrows tbody tr').filter({ hasText: active });
    assert.match(await old.textContent(), /seen/);
    await shot(page, '07-device-rotated');

    // Signing out ends the session.
    await Promise.all([page.waitForURL(/\/ui\/login$/), page.click('form.logout button')]);
    await page.goto(`${base}/ui/devices`);
    assert.match(page.url(), /\/ui\/login$/);

    assert.deepEqual(complaints, [], 'the pages caused no console errors or CSP violations');
  } finally {
    await close();
  }
});
