// Reordering the queue from the panel: a waiting run moves one place up or down or to the
// front, the panel shows the server's new order, and the scheduler takes the runs in it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BASE, WORKFLOWS, launch, open, shot } from './lib.mjs';

let browser;
let page;
const file = join(WORKFLOWS, 'queue-order.yaml');

before(async () => {
  const base = readFileSync(join(WORKFLOWS, 'txt2img.yaml'), 'utf8');
  assert.match(base, /steps: 20/);
  // Long runs: the copies wait behind the first while the test moves them.
  writeFileSync(file, base.replace(/steps: 20/, 'steps: 5000'));
  ({ browser, page } = await launch());
});

after(async () => {
  const runs = await (await fetch(`${BASE}/api/runs?limit=50`)).json();
  for (const r of runs.runs) if (['queued', 'running'].includes(r.status)) await fetch(`${BASE}/api/runs/${r.id}/cancel`, { method: 'POST' });
  rmSync(file, { force: true });
  await browser?.close();
});

const panelIds = () =>
  page.$$eval('[data-testid="queue-panel"] [data-testid^="queue-run-"]', (rows) => rows.map((r) => Number(r.dataset.testid.replace('queue-run-', ''))));
const status = (id) => page.evaluate(async (i) => (await (await fetch(`/api/runs/${i}`)).json()).status, id);
async function panelShows(want) {
  await page.waitForFunction(
    (w) => JSON.stringify([...document.querySelectorAll('[data-testid="queue-panel"] [data-testid^="queue-run-"]')].map((r) => Number(r.dataset.testid.replace('queue-run-', '')))) === JSON.stringify(w),
    want,
    { timeout: 30_000 },
  ).catch(async () => assert.fail(`the panel shows ${JSON.stringify(await panelIds())}, not ${JSON.stringify(want)}`));
}
const button = (id, which) => page.locator(`[data-testid="queue-run-${id}"] [data-testid="queue-${which}"]`);

test('a waiting run moves up, down and to the front; Ctrl+Shift+Enter queues in front; runs are taken in that order', async () => {
  await open(page, 'queue-order');
  await page.locator('[data-testid="history-toggle"]').click();
  await page.locator('[data-testid="copies-count"]').fill('4');
  await page.locator('[data-testid="queue-copies"]').click();
  await page.locator('[data-testid="toast"]', { hasText: 'queued 4 copies' }).waitFor();
  await page.waitForFunction(() => window.__weftRun.getState().queue.queued.length === 3, null, { timeout: 60_000 });
  const [running, a, b, c] = (await panelIds());
  assert.equal(await status(running), 'running');
  await panelShows([running, a, b, c]);
  // The running run and the ends of the queue offer no move that would do nothing.
  assert.equal(await page.locator(`[data-testid="queue-run-${running}"] [data-testid="queue-up"]`).count(), 0);
  assert.ok(await button(a, 'up').isDisabled());
  assert.ok(await button(a, 'front').isDisabled());
  assert.ok(await button(c, 'down').isDisabled());

  await button(a, 'down').click();
  await panelShows([running, b, a, c]);
  await button(c, 'up').click();
  await panelShows([running, b, c, a]);
  await button(a, 'front').click();
  await panelShows([running, a, b, c]);
  await button(b, 'down').click();
  await panelShows([running, a, c, b]);
  // The server holds the order: a reloaded page reads it back.
  await open(page, 'queue-order');
  await page.locator('[data-testid="history-toggle"]').click();
  await panelShows([running, a, c, b]);
  await shot(page, 'queue-reordered');

  // Ctrl+Shift+Enter (ComfyUI's Queue Front) queues the canvas ahead of the waiting runs.
  await page.locator('[data-testid="canvas"]').click({ position: { x: 5, y: 300 } });
  await page.keyboard.press('Control+Shift+Enter');
  await page.waitForFunction(() => window.__weftRun.getState().queue.queued.length === 4, null, { timeout: 60_000 });
  const front = await page.evaluate(() => window.__weftRun.getState().run);
  assert.ok(![running, a, b, c].includes(front), `the new run is #${front}`);
  await panelShows([running, front, a, c, b]);

  // Cancel the running run: the scheduler takes the first waiting one, and then the next as moved.
  await page.locator(`[data-testid="queue-run-${running}"] [data-testid="history-cancel"]`).click();
  await page.waitForFunction((id) => window.__weftRun.getState().queue.running === id, front, { timeout: 60_000 });
  await page.locator(`[data-testid="queue-run-${front}"] [data-testid="history-cancel"]`).click();
  await page.waitForFunction((id) => window.__weftRun.getState().queue.running === id, a, { timeout: 60_000 });
  assert.equal(await status(c), 'queued');
  assert.equal(await status(b), 'queued');
  for (const id of [a, c, b]) await page.locator(`[data-testid="queue-run-${id}"] [data-testid="history-cancel"]`).click();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="queue-panel"] [data-testid^="queue-run-"]').length === 0, null, { timeout: 60_000 });
});

test('a waiting run is dragged onto another waiting run: above or below it, as dropped', async () => {
  await open(page, 'queue-order');
  await page.locator('[data-testid="history-toggle"]').click();
  await page.locator('[data-testid="copies-count"]').fill('4');
  await page.locator('[data-testid="queue-copies"]').click();
  await page.waitForFunction(() => window.__weftRun.getState().queue.queued.length === 3, null, { timeout: 60_000 });
  // The panel lists the runs once it has read them (a moment after the queue event under load).
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="queue-panel"] [data-testid^="queue-run-"]').length === 4, null, { timeout: 60_000 });
  const [running, a, b, c] = await panelIds();
  await panelShows([running, a, b, c]);
  const row = (id) => page.locator(`[data-testid="queue-run-${id}"]`);
  // Onto the upper half of a's row: c goes before a.
  await row(c).dragTo(row(a), { sourcePosition: { x: 30, y: 8 }, targetPosition: { x: 30, y: 2 } });
  await panelShows([running, c, a, b]);
  // Onto the lower half of b's row: c goes after b.
  const box = await row(b).boundingBox();
  await row(c).dragTo(row(b), { sourcePosition: { x: 30, y: 8 }, targetPosition: { x: 30, y: box.height - 2 } });
  await panelShows([running, a, b, c]);
  assert.deepEqual(await page.evaluate(() => window.__weftRun.getState().queue.queued), [a, b, c]);
  // The running run is no drop target and cannot be dragged.
  assert.equal(await row(running).getAttribute('draggable'), null);
  for (const id of [running, a, b, c]) await row(id).locator('[data-testid="history-cancel"]').click();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="queue-panel"] [data-testid^="queue-run-"]').length === 0, null, { timeout: 60_000 });
});

test('the sweep panel queues a sweep at the front: its cells ahead of the waiting runs, in cell order', async () => {
  await open(page, 'queue-order');
  await page.locator('[data-testid="history-toggle"]').click();
  await page.locator('[data-testid="copies-count"]').fill('2');
  await page.locator('[data-testid="queue-copies"]').click();
  await page.waitForFunction(() => { const q = window.__weftRun.getState().queue; return q.running != null && q.queued.length === 1; }, null, { timeout: 60_000 });
  const { running, queued: [waiting] } = await page.evaluate(() => window.__weftRun.getState().queue);
  await panelShows([running, waiting]);
  await page.locator('[data-testid="sweep-toggle"]').click();
  await page.locator('[data-testid="sweep-add"]').click();
  await page.locator('[data-testid="sweep-axis-0"] [data-testid="sweep-node"]').selectOption('sample');
  await page.locator('[data-testid="sweep-axis-0"] [data-testid="sweep-input"]').selectOption('seed');
  await page.locator('[data-testid="sweep-axis-0"] [data-testid="sweep-values"]').fill('1, 2, 3');
  await page.locator('[data-testid="sweep-queue-front"]').click();
  await page.waitForFunction(() => window.__weftSweep.getState().view?.cells.length === 3, null, { timeout: 60_000 });
  const cells = await page.evaluate(() => window.__weftSweep.getState().view.cells.map((c) => c.run));
  assert.equal(await status(running), 'running', 'the first copy still runs');
  await panelShows([running, ...cells, waiting]);
  for (const id of [running, ...cells, waiting]) await page.locator(`[data-testid="queue-run-${id}"] [data-testid="history-cancel"]`).click();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="queue-panel"] [data-testid^="queue-run-"]').length === 0, null, { timeout: 60_000 });
});
