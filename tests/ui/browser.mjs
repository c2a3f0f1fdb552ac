// What every browser suite here shares: the environment the Rust driver passes in, Debian's
// headless Chromium launched the way this machine allows (no background networking: the
// network is closed), one fresh profile per person, and screenshots.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set (this test is run by a Rust test in crates/keyward-cli/tests)`);
  return value;
};

// The probe-tested launch flags: no sandbox (root), and no background connections, which this
// machine's closed network would refuse.
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// A browser of its own (its own cookies), with console errors and page errors collected: of
// every page, or only of pages and resources under `origin` when it is given (another site's
// pages, such as an identity provider's, are not ours to judge).
export async function browser(label, complaints, origin = '') {
  const profile = mkdtempSync(join(tmpdir(), `keyward-ui-${label}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const ours = (url) => !origin || (url ?? '').startsWith(origin);
  page.on('console', (m) => {
    if ((m.type() === 'error' || m.type() === 'warning') && ours(m.location().url)) {
      complaints.push(`${label}: ${m.text()} (${m.location().url})`);
    }
  });
  page.on('pageerror', (e) => {
    if (ours(page.url())) complaints.push(`${label}: ${e}`);
  });
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, close };
}

export function screenshots(dir) {
  mkdirSync(dir, { recursive: true });
  return (page, name) => page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}
