// Opens gripmesh's admin page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), waits for two live updates, saves a screenshot and prints what the page
// shows as one JSON line. Used by tests/e2e/admin_page.rs.
//
//   node admin_page.mjs ADMIN_URL SCREENSHOT.png
//
// Fails (exit 1) when the page requests anything outside the admin listener's origin.
import { chromium } from 'playwright-core';

const [adminUrl, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--no-first-run'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const origin = new URL(adminUrl).origin;
  const foreign = [];
  const errors = [];
  page.on('request', (r) => { if (!r.url().startsWith(origin)) foreign.push(r.url()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const resp = await page.goto(adminUrl, { waitUntil: 'load' });
  await page.waitForSelector('body[data-loaded="true"]', { timeout: 15000 });
  // A second poll, so rates (messages/s) have a previous sample.
  const first = await page.textContent('#meta');
  await page.waitForFunction((t) => document.querySelector('#meta').textContent !== t, first, { timeout: 15000 });
  await page.waitForTimeout(2500);
  const text = async (sel) => (await page.textContent(sel)).trim();
  const out = {
    status: resp.status(),
    csp: resp.headers()['content-security-policy'] || null,
    title: await page.title(),
    ready: await text('#ready'),
    bus: await text('#bus'),
    connTotal: await text('#conn-total'),
    conns: await text('#conns'),
    channels: await text('#channels'),
    rateSent: await text('#rate-sent'),
    latP50: await text('#lat-p50'),
    routes: await text('#routes'),
    routesVersion: await text('#routes-version'),
    revocations: await text('#revocations'),
    authz: await text('#authz'),
    apps: await text('#apps'),
    history: await text('#history'),
    error: await text('#error'),
    foreign,
    errors,
  };
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(out));
  if (foreign.length) process.exitCode = 1;
} finally {
  await browser.close();
}
