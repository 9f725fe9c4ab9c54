// The keys of EDITOR.md's ComfyUI table that no other browser test presses: each pressed on the
// canvas as a person would, and what it must do seen in the page (the table itself is unit
// tested in src/shortcuts.test.ts; this proves the page wires each row to the real action).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { BASE, WORKFLOWS, launch, open, node, shot } from './lib.mjs';

let browser;
let page;
const file = join(WORKFLOWS, 'keys.yaml');
const savedAs = join(WORKFLOWS, 'keys-copy.yaml');

before(async () => {
  const base = readFileSync(join(WORKFLOWS, 'txt2img.yaml'), 'utf8');
  assert.match(base, /steps: 20/);
  // A long run, so that Ctrl+Alt+Enter finds it going.
  writeFileSync(file, base.replace(/steps: 20/, 'steps: 5000'));
  ({ browser, page } = await launch());
});

after(async () => {
  const runs = await (await fetch(`${BASE}/api/runs?limit=50`)).json();
  for (const r of runs.runs) if (['queued', 'running'].includes(r.status)) await fetch(`${BASE}/api/runs/${r.id}/cancel`, { method: 'POST' });
  for (const f of [file, savedAs]) rmSync(f, { force: true });
  await browser?.close();
});

const state = () => page.evaluate(() => {
  const s = window.__weft.getState();
  return { nodes: s.nodes.length, selected: s.nodes.filter((n) => n.selected).map((n) => n.id).sort() };
});
/** The canvas has the keyboard (keys act only there), with nothing selected. */
const focusCanvas = () => page.locator('[data-testid="canvas"]').click({ position: { x: 5, y: 300 } });

test('Ctrl+Enter queues the canvas; Ctrl+Alt+Enter cancels the run', async () => {
  await open(page, 'keys');
  const before = await page.evaluate(() => window.__weftRun.getState().run);
  await focusCanvas();
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction((b) => { const s = window.__weftRun.getState(); return s.run !== b && (s.nodes.sample?.step ?? 0) >= 1; }, before, { timeout: 90_000 });
  const run = await page.evaluate(() => window.__weftRun.getState().run);
  await page.keyboard.press('Control+Alt+Enter');
  await page.waitForFunction(() => window.__weftRun.getState().status === 'cancelled', null, { timeout: 60_000 });
  const detail = await page.evaluate(async (id) => (await fetch(`/api/runs/${id}`)).json(), run);
  assert.equal(detail.status, 'cancelled');
  assert.equal(detail.workflow_name, 'keys');
});

test('Ctrl+A selects every node; Shift+D duplicates the selection; Backspace deletes it', async () => {
  await open(page, 'keys');
  const all = (await state()).nodes;
  await focusCanvas();
  await page.keyboard.press('Control+a');
  assert.equal((await state()).selected.length, all);
  await focusCanvas();
  await page.locator(`${node('latent')} .wn-head`).click();
  await page.keyboard.press('Shift+D');
  const duplicated = await state();
  assert.equal(duplicated.nodes, all + 1);
  assert.equal(duplicated.selected.length, 1);
  assert.notEqual(duplicated.selected[0], 'latent', 'the copy is selected, not the original');
  await page.keyboard.press('Backspace');
  assert.equal((await state()).nodes, all);
  assert.equal(await page.locator(node(duplicated.selected[0])).count(), 0);
  assert.equal(await page.locator(node('latent')).count(), 1);
});

test('Space and Tab open the node search; Q shows and hides the queue', async () => {
  await open(page, 'keys');
  for (const key of ['Space', 'Tab']) {
    await focusCanvas();
    await page.keyboard.press(key);
    await page.locator('.palette input').waitFor({ timeout: 10_000 });
    await page.keyboard.press('Escape');
    await page.locator('.palette').waitFor({ state: 'detached' });
  }
  await focusCanvas();
  await page.keyboard.press('q');
  await page.locator('[data-testid="history"]').waitFor();
  await shot(page, 'shortcut-q-queue');
  await focusCanvas();
  await page.keyboard.press('q');
  await page.locator('[data-testid="history"]').waitFor({ state: 'detached' });
});

test('Ctrl+Shift+S saves the canvas under a new name', async () => {
  await open(page, 'keys');
  await focusCanvas();
  await page.keyboard.press('Control+Shift+S');
  const name = page.locator('input[aria-label="workflow name"]');
  await name.waitFor();
  await name.fill('keys-copy');
  await name.press('Enter');
  await page.waitForFunction(() => window.__weft.getState().name === 'keys-copy', null, { timeout: 30_000 });
  assert.ok(existsSync(savedAs), 'keys-copy.yaml written');
  assert.match(readFileSync(savedAs, 'utf8'), /steps: 5000/);
});
