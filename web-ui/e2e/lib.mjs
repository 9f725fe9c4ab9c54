// Shared helpers for the browser tests: Debian's Chromium through playwright-core (no browser download).
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BASE = process.env.WEFT_URL ?? 'http://127.0.0.1:8188';
export const WORKFLOWS = process.env.WEFT_WORKFLOWS ?? '';
export const SHOTS = process.env.WEFT_SHOTS ?? new URL('../screenshots/', import.meta.url).pathname;
mkdirSync(SHOTS, { recursive: true });

export async function launch() {
  // A fresh profile each time (playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'weft-chromium-')), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1600, height: 1000 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const browser = { close: () => context.close() };
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => console.error('page error:', e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') console.error('console:', m.text());
  });
  return { browser, page };
}

export async function open(page, name) {
  // A fresh page load each time (a hash change alone would keep the last test's state).
  if (page.url().startsWith('http')) {
    await page.evaluate(() => window.__weft?.setState({ dirty: false }));
    await page.goto('about:blank');
  }
  await page.goto(`${BASE}/#/${name}`);
  await page.waitForFunction((n) => window.__weft?.getState().name === n && window.__weft.getState().types.length > 0, name);
  await page.waitForTimeout(100);
}

/** Clicks Queue and waits for that run (not the last one) to finish; returns its status. */
export async function queueAndWait(page, timeout = 90_000) {
  const before = await page.evaluate(() => window.__weftRun.getState().run);
  await page.locator('[data-testid="queue"]').click();
  await page.waitForFunction(
    (b) => {
      const s = window.__weftRun.getState();
      return s.run !== b && s.run != null && !['queued', 'running'].includes(s.status);
    },
    before,
    { timeout },
  );
  return page.evaluate(() => window.__weftRun.getState().status);
}

export const node = (id) => `[data-testid="node-${id}"]`;
export const handle = (id, name, kind) =>
  `.react-flow__handle[data-nodeid="${id}"][data-handleid="${name}"].${kind === 'source' ? 'source' : 'target'}`;

/** Drags a link from one handle to another with the mouse, as a person would. */
export async function drag(page, from, to) {
  // Diagnostics arriving from the server change node heights: let them land first.
  await page.waitForFunction(() => window.__weftValidating === 0);
  const a = await page.locator(from).boundingBox();
  const b = await page.locator(to).boundingBox();
  if (!a || !b) {
    await shot(page, 'failed-drag');
    throw new Error(`no handle ${!a ? from : to}`);
  }
  await page.mouse.move(a.x + a.width / 2, a.y + a.height / 2);
  await page.mouse.down();
  await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 5 });
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2, { steps: 8 });
  await page.waitForTimeout(60);
  await page.mouse.up();
  await page.waitForTimeout(30);
}

export async function edges(page) {
  return page.evaluate(() => window.__weft.getState().edges.map((e) => `${e.source}.${e.sourceHandle}>${e.target}.${e.targetHandle}`));
}

export async function shot(page, name) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path });
  return path;
}
