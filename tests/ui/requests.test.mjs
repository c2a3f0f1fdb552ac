// The two-person reveal in a real browser: Debian's headless Chromium driven by playwright-core,
// two people in two browser contexts (two sessions). Run by
// crates/keyward-cli/tests/web_ui_browser.rs against the real server, which passes in:
//   KEYWARD_UI_URL         the server
//   KEYWARD_UI_DEVICE      an enrolled device that has escrowed a key for volume `data`
//   KEYWARD_UI_HELPDESK    a helpdesk account's name, KEYWARD_UI_HELPDESK_PASSWORD its password
//   KEYWARD_UI_APPROVER    an approver's name, KEYWARD_UI_APPROVER_PASSWORD its password
//   KEYWARD_UI_HANDOFF     a directory: the key shown goes to key.txt, the request id to request.txt
//   KEYWARD_UI_ARTIFACTS   where screenshots go
// The help desk requests the key with a reason and cannot reveal it yet; the approver finds
// the request in the queue and approves it; the help desk reveals the key once, after which the
// request shows as revealed with no way to reveal it again; the audit log names both people.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { browser, env, screenshots } from './browser.mjs';

const base = env('KEYWARD_UI_URL');
const device = env('KEYWARD_UI_DEVICE');
const helpdesk = { name: env('KEYWARD_UI_HELPDESK'), password: env('KEYWARD_UI_HELPDESK_PASSWORD') };
const approver = { name: env('KEYWARD_UI_APPROVER'), password: env('KEYWARD_UI_APPROVER_PASSWORD') };
const handoff = env('KEYWARD_UI_HANDOFF');
const shot = screenshots(env('KEYWARD_UI_ARTIFACTS'));

// One person: their own browser (so their own session cookie), watched for complaints, signed in.
async function person(who, complaints) {
  const b = await browser(who.name, complaints);
  const { page } = b;
  await page.goto(`${base}/ui/login`);
  await page.fill('#name', who.name);
  await page.fill('#password', who.password);
  await Promise.all([page.waitForURL(/\/ui\/devices$/), page.click('button[type=submit]')]);
  assert.equal(await page.locator('header .who strong').textContent(), who.name);
  return b;
}

test('the help desk requests a key, an approver approves it, the help desk reveals it once', async () => {
  const complaints = [];
  const desk = await person(helpdesk, complaints);
  const boss = await person(approver, complaints);
  try {
    // The help desk: the device's page offers a request, not the key.
    let page = desk.page;
    assert.equal(await page.locator('#role').textContent(), 'helpdesk');
    assert.equal(await page.locator('header nav a[href="/ui/requests"]').count(), 0, 'no queue for the help desk');
    await page.goto(`${base}/ui/devices/${device}`);
    assert.equal(await page.getByText('Show recovery key').count(), 0);
    const form = page.locator('form.request').first();
    await form.locator('button[type=submit]').click();
    assert.match(page.url(), /\/ui\/devices\/dev-[0-9a-f]+$/, 'an empty reason stays on the page');
    const reason = 'Browser drill: laptop locked out after a BIOS update, ticket 9001';
    await form.locator('textarea[name=reason]').fill(reason);
    await Promise.all([page.waitForURL(/\/ui\/requests\/mine$/), form.locator('button[type=submit]').click()]);
    const row = page.locator('table.requests tbody tr').first();
    const id = (await row.locator('code.request-id').textContent()).trim();
    assert.match(id, /^req-[0-9a-f]{24}$/);
    assert.match(await row.textContent(), /pending/);
    assert.equal(await row.locator('button.reveal').count(), 0, 'nothing to reveal before approval');
    await shot(page, '11-helpdesk-requested');

    // The approver: the queue has it, with the reason and the requester; approve.
    page = boss.page;
    assert.equal(await page.locator('#role').textContent(), 'approver');
    assert.equal(await page.locator('header nav a[href="/ui/requests/mine"]').count(), 0);
    await Promise.all([page.waitForURL(/\/ui\/requests$/), page.click('header nav a[href="/ui/requests"]')]);
    const waiting = page.locator('table.requests tbody tr').filter({ hasText: id });
    assert.match(await waiting.textContent(), /ticket 9001/);
    assert.match(await waiting.textContent(), new RegExp(`web:${helpdesk.name}`));
    await shot(page, '12-approver-queue');
    await Promise.all([page.waitForURL(/\/ui\/requests$/), waiting.locator('button.approve').click()]);
    assert.ok(await page.locator('#queue-empty').isVisible(), 'the queue is empty again');
    const decided = page.locator('table.requests tbody tr').filter({ hasText: id });
    assert.match(await decided.textContent(), /approved/);
    assert.match(await decided.textContent(), new RegExp(`web:${approver.name}`));

    // The help desk reveals it, once.
    page = desk.page;
    await page.goto(`${base}/ui/requests/mine`);
    const mine = page.locator('table.requests tbody tr').filter({ hasText: id });
    assert.match(await mine.textContent(), /approved/);
    await Promise.all([page.waitForURL(/\/reveal$/), mine.locator('button.reveal').click()]);
    const key = (await page.locator('#recovery-key').textContent()).trim();
    assert.equal((await page.locator('#request-id').textContent()).trim(), id);
    writeFileSync(join(handoff, 'request.txt'), id);
    writeFileSync(join(handoff, 'key.tmp'), key);
    renameSync(join(handoff, 'key.tmp'), join(handoff, 'key.txt'));
    await page.locator('#recovery-key .half').evaluateAll((halves) => {
      for (const h of halves) h.textContent = h.textContent.replace(/[0-9A-Za-z]/g, 'x');
    });
    await shot(page, '13-helpdesk-revealed');
    await page.goto(`${base}/ui/requests/mine`);
    const used = page.locator('table.requests tbody tr').filter({ hasText: id });
    assert.match(await used.textContent(), /revealed/);
    assert.equal(await used.locator('button.reveal').count(), 0, 'revealed once only');

    // The audit log, seen by the approver: request, approval and reveal, each with the id.
    page = boss.page;
    await Promise.all([page.waitForURL(/\/ui\/audit$/), page.click('header nav a:text("Audit log")')]);
    for (const [action, who] of [
      ['reveal-request', helpdesk.name],
      ['reveal-approve', approver.name],
      ['key-show', helpdesk.name],
    ]) {
      const entry = page.locator('table.audit tbody tr').filter({ hasText: action }).first();
      assert.match(await entry.textContent(), new RegExp(`web:${who}`), action);
      assert.match(await entry.textContent(), new RegExp(id), action);
    }
    assert.doesNotMatch(await page.content(), new RegExp(key), 'the audit never holds the key');
    await shot(page, '14-audit');

    assert.deepEqual(complaints, [], 'the pages caused no console errors or CSP violations');
  } finally {
    await desk.close();
    await boss.close();
  }
});
