// Runs a browser snippet (docs/clients.md, ```js browser```) in headless Chromium on a page
// served from another origin than gripmesh's, so CORS (`aco`) is exercised too. Used by
// tests/e2e/clients_doc.rs.
//
//   node browser_clients.mjs SNIPPET.js GRIPMESH_URL EXPECTED...
//
// The page defines `GRIPMESH` and `show(text)`. Prints `ready` once the snippet's first
// expectation-independent sign of life appeared (anything shown, or 3 s), then waits (20 s at
// most) until every EXPECTED text was shown and prints the shown texts as JSON.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import http from 'node:http';

const [snippetFile, gripmesh, ...expected] = process.argv.slice(2);
const snippet = readFileSync(snippetFile, 'utf8');
const html = `<!doctype html><meta charset="utf-8"><title>clients</title>
<script>const GRIPMESH = ${JSON.stringify(gripmesh)}; window.shown = [];
function show(t) { window.shown.push(String(t)); }</script>
<script type="module">${snippet}</script>`;
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end(html);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // `localhost` for the page, 127.0.0.1 for gripmesh: two origins.
  await page.goto(`http://localhost:${server.address().port}/`);
  await page.waitForFunction(() => window.shown.length > 0, null, { timeout: 3000 }).catch(() => {});
  await page.waitForTimeout(1000);   // EventSource connected too
  console.log('ready');
  await page.waitForFunction((want) => want.every((w) => window.shown.includes(w)), expected, { timeout: 20000 })
    .catch(() => {});
  const shown = await page.evaluate(() => window.shown);
  console.log(JSON.stringify({ shown, errors }));
  if (!expected.every((w) => shown.includes(w))) process.exitCode = 1;
} finally {
  await browser.close();
  server.close();
}
