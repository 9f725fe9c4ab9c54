// The sweep panel and the grid viewer in a real browser against a real `weft serve`
// (scripts/test-ui.sh starts both).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, shot } from './lib.mjs';

let browser;
let page;
const wf = (name) => join(WORKFLOWS, `${name}.yaml`);
const axis = (i) => `[data-testid="sweep-axis-${i}"]`;

before(async () => {
  assert.ok(WORKFLOWS && existsSync(wf('txt2img')), 'WEFT_WORKFLOWS must name a copy of workflows/');
  ({ browser, page } = await launch());
});
after(async () => {
  await browser?.close();
});

/** Adds an axis with the panel's controls, as a person would: node, input, values. */
async function addAxis(i, nodeId, input, values) {
  await page.locator('[data-testid="sweep-add"]').click();
  await page.locator(`${axis(i)} [data-testid="sweep-node"]`).selectOption(nodeId);
  await page.locator(`${axis(i)} [data-testid="sweep-input"]`).selectOption(input);
  if (values != null) await page.locator(`${axis(i)} [data-testid="sweep-values"]`).fill(values);
}

const cells = () => page.locator('[data-testid="sweep-count"]').getAttribute('data-cells');

test('a 2 seeds × 2 cfg sweep: the count live, four cells fill the grid, then the composed grid', async () => {
  await open(page, 'txt2img');
  await page.locator(`${node('sample')} [data-input="steps"] input`).fill('4');
  await page.locator('[data-testid="sweep-toggle"]').click();
  await page.locator('[data-testid="sweep-panel"]').waitFor();
  await addAxis(0, 'sample', 'seed', '1, 2');
  await addAxis(1, 'sample', 'cfg', '4..6 step 2');
  assert.equal(await cells(), '4');
  assert.equal(await page.locator('[data-testid="sweep-count"]').innerText(), '4 cells · 2 rows × 2 columns');
  assert.match(await page.locator(`${axis(1)} [data-testid="sweep-axis-status"]`).innerText(), /^2 values: 4, 6$/);

  // Over 10,000 cells: refused with the reason, nothing to queue.
  await page.locator(`${axis(0)} [data-testid="sweep-values"]`).fill('1..101');
  await page.locator(`${axis(1)} [data-testid="sweep-values"]`).fill('0..9.9 step 0.1');
  assert.equal(await cells(), '');
  assert.equal(await page.locator('[data-testid="sweep-count"]').innerText(), '10,100 cells is over the limit of 10,000: fewer values, or zip instead of grid');
  assert.ok(await page.locator('[data-testid="sweep-queue"]').isDisabled());
  await shot(page, 'sweep-over-limit');
  // A value out of the input's range names itself before anything runs.
  await page.locator(`${axis(1)} [data-testid="sweep-values"]`).fill('4, 400');
  assert.match(await page.locator(`${axis(1)} [data-testid="sweep-axis-status"]`).innerText(), /400 is above the maximum 100/);
  await shot(page, 'sweep-refused');
  await page.locator(`${axis(0)} [data-testid="sweep-values"]`).fill('1, 2');
  await page.locator(`${axis(1)} [data-testid="sweep-values"]`).fill('4..6 step 2');
  assert.equal(await cells(), '4');

  await page.locator('[data-testid="sweep-queue"]').click();
  await page.waitForFunction(() => window.__weftSweep.getState().view?.cells.length === 4);
  const { rows, columns, runs } = await page.evaluate(() => {
    const v = window.__weftSweep.getState().view;
    return { rows: v.rows, columns: v.columns, runs: v.cells.map((c) => c.run) };
  });
  assert.deepEqual(rows, ['sample.seed']);
  assert.deepEqual(columns, ['sample.cfg']);
  // The canvas follows the cells as they run: some moment shows a cell running on it.
  await page
    .waitForFunction(() => /sweep cell \d of 4/.test(document.querySelector('[data-testid="run-status"]')?.textContent ?? ''), null, { polling: 'raf', timeout: 60_000 })
    .then(() => shot(page, 'sweep-running'))
    .catch(() => console.log('no cell seen running on the canvas (they finished between frames)'));
  await page.waitForFunction(() => document.querySelectorAll('[data-testid^="sweep-cell-"] img').length === 4, null, { timeout: 180_000 });
  await page.locator('[data-testid="sweep-grid-image"]').waitFor({ timeout: 60_000 });
  const grid = await page.locator('[data-testid="sweep-grid-image"]').evaluate(async (img) => {
    await img.decode();
    return { w: img.naturalWidth, h: img.naturalHeight, src: img.getAttribute('src') };
  });
  console.log('composed grid:', grid);
  assert.ok(grid.w > 128 && grid.h > 128, `a grid of 2×2 64 px cells with headers: ${grid.w}×${grid.h}`);
  assert.match(grid.src, /^\/api\/outputs\/sweeps\/[^/]+\/grid\.png$/);
  assert.equal(await page.locator('[data-testid="sweep-results"]').getAttribute('data-status'), 'succeeded');
  // Headers give the values; the cells sit where their values say.
  assert.deepEqual(await page.locator('[data-testid="sweep-grid"] thead th[scope="col"]').allInnerTexts(), ['cfg 4', 'cfg 6']);
  assert.deepEqual(await page.locator('[data-testid="sweep-grid"] tbody th[scope="row"]').allInnerTexts(), ['seed 1', 'seed 2']);
  // What the cells share ran once: after the first cell, the checkpoint and the prompts come from the cache.
  const states = await page.evaluate(async (ids) => {
    const out = [];
    for (const id of ids) out.push((await (await fetch(`/api/runs/${id}`)).json()).nodes);
    return out.map((n) => ({ model: n.model?.state, positive: n.positive?.state, sample: n.sample?.state }));
  }, runs);
  console.log('cell node states:', JSON.stringify(states));
  for (const s of states.slice(1)) {
    assert.equal(s.model, 'cached');
    assert.equal(s.positive, 'cached');
  }
  // Seeds and cfg are both per-image inputs of the Sampler: the four cells are sampled as one
  // batch in the first cell's run; the others find their samples cached.
  assert.deepEqual(states.map((s) => s.sample), ['ran', 'cached', 'cached', 'cached']);
  await shot(page, 'sweep-grid');
  // Each cell is a run of its own in the history, named as a cell of the sweep.
  await page.locator('[data-testid="history-toggle"]').click();
  await page.locator('[data-testid="history-sweep"]').first().waitFor();
  assert.match(await page.locator('[data-testid="history-sweep"]').first().innerText(), /^sweep \d+ · cell 4$/);
  await page.locator('[data-testid="history-toggle"]').click();

  // A cell full size, then its own workflow on the canvas; one undo brings the sweep back.
  await page.locator('[data-testid="sweep-cell-3"]').click();
  await page.locator('[data-testid="sweep-cellview"] img').waitFor();
  await shot(page, 'sweep-cell');
  await page.locator('[data-testid="sweep-load-cell"]').click();
  await page.waitForFunction(() => window.__weft.getState().sweep.axes.length === 0);
  const loaded = await page.evaluate(() => window.__weft.getState().nodes.find((n) => n.id === 'sample').data.values);
  assert.equal(loaded.seed, 2);
  assert.equal(loaded.cfg, 6);
  assert.equal(loaded.steps, 4);
  await page.locator('[data-testid="canvas"]').focus();
  await page.keyboard.press('Control+z');
  assert.equal(await page.evaluate(() => window.__weft.getState().sweep.axes.length), 2);
});

test('the sweep is saved in the file and read back from it', async () => {
  const text = readFileSync(wf('txt2img'), 'utf8');
  writeFileSync(wf('swept'), text);
  await open(page, 'swept');
  if (!(await page.locator('[data-testid="sweep-panel"]').isVisible())) await page.locator('[data-testid="sweep-toggle"]').click();
  assert.equal(await page.locator('[data-testid^="sweep-axis-"]').count(), 0);
  await addAxis(0, 'sample', 'seed', '1, 2, 3');
  await addAxis(1, 'sample', 'sampler', null);
  // A choices input is ticked, not typed.
  await page.locator(`${axis(1)} label`, { hasText: /^euler$/ }).locator('input').check();
  await page.locator(`${axis(1)} label`, { hasText: /^dpmpp_2m$/ }).locator('input').check();
  await page.locator('[data-testid="sweep-mode-zip"]').click();
  assert.match(await page.locator('[data-testid="sweep-count"]').innerText(), /zip takes axes of equal length; these have 3, 2 values/);
  await page.locator('[data-testid="sweep-mode-grid"]').click();
  assert.equal(await cells(), '6');
  await page.locator('[data-testid="save"]').click();
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  const saved = readFileSync(wf('swept'), 'utf8');
  console.log('saved sweep section:\n' + saved.slice(saved.indexOf('sweep:'), saved.indexOf('layout:')));
  assert.match(saved, /\nsweep:\n  mode: grid\n  axes:\n    sample\.seed: \[1, 2, 3\]\n    sample\.sampler: \[euler, dpmpp_2m\]\n/);

  // Read back on a fresh page, and followed when the file changes on disk.
  await open(page, 'swept');
  const back = () => page.evaluate(() => window.__weft.getState().sweep);
  assert.deepEqual(await back(), {
    mode: 'grid',
    axes: [
      { node: 'sample', input: 'seed', text: '1, 2, 3' },
      { node: 'sample', input: 'sampler', text: 'euler, dpmpp_2m' },
    ],
  });
  writeFileSync(wf('swept'), readFileSync(wf('swept'), 'utf8').replace('sample.seed: [1, 2, 3]', 'sample.seed: 10..12').replace('mode: grid', 'mode: zip').replace('[euler, dpmpp_2m]', '[euler, dpmpp_2m, euler]'));
  await page.waitForFunction(() => window.__weft.getState().sweep.mode === 'zip', null, { timeout: 5000 });
  assert.equal((await back()).axes[0].text, '10..12');
  if (!(await page.locator('[data-testid="sweep-panel"]').isVisible())) await page.locator('[data-testid="sweep-toggle"]').click();
  assert.equal(await cells(), '3');
  await shot(page, 'sweep-from-file');
});

test('Cancel while a cell runs stops the whole sweep, not only that cell', async () => {
  await open(page, 'txt2img');
  await page.locator(`${node('sample')} [data-input="steps"] input`).fill('2000');
  if (!(await page.locator('[data-testid="sweep-panel"]').isVisible())) await page.locator('[data-testid="sweep-toggle"]').click();
  await addAxis(0, 'sample', 'seed', '1..3');
  assert.equal(await cells(), '3');
  await page.locator('[data-testid="sweep-queue"]').click();
  // The toolbar's Cancel, once the first cell's sampler is stepping (the canvas follows it).
  await page.waitForFunction(() => {
    const v = window.__weftSweep.getState().view;
    const r = window.__weftRun.getState();
    return v?.cells.length === 3 && r.run === v.cells[0].run && (r.nodes.sample?.step ?? 0) >= 1;
  }, null, { timeout: 90_000 });
  await page.locator('[data-testid="cancel"]').click();
  await page.waitForFunction(() => window.__weftSweep.getState().view?.status === 'cancelled', null, { timeout: 30_000 });
  const statuses = await page.evaluate(() => window.__weftSweep.getState().view.cells.map((c) => c.status));
  assert.deepEqual(statuses, ['cancelled', 'cancelled', 'cancelled']);
  assert.equal(await page.locator('[data-testid="sweep-results"]').getAttribute('data-status'), 'cancelled');
  assert.equal(await page.locator('[data-testid="sweep-cancel"]').count(), 0);
  await shot(page, 'sweep-cancelled');
});

test('a reloaded page shows the sweep of its workflow file again, in flight or finished', async () => {
  const text = readFileSync(wf('txt2img'), 'utf8').replace(/steps: \d+/, 'steps: 2');
  writeFileSync(wf('reattach'), text.replace('\nlayout:', '\nsweep:\n  axes:\n    sample.seed: [1, 2]\nlayout:'));
  await open(page, 'reattach');
  if (!(await page.locator('[data-testid="sweep-panel"]').isVisible())) await page.locator('[data-testid="sweep-toggle"]').click();
  assert.equal(await cells(), '2');
  await page.locator('[data-testid="sweep-queue"]').click();
  await page.waitForFunction(() => window.__weftSweep.getState().view?.cells.length === 2);
  const id = await page.evaluate(() => window.__weftSweep.getState().view.id);
  // Reloaded while the cells run (or just after): the page asks the server for the file's
  // newest sweep and shows it again.
  await page.reload();
  await page.waitForFunction((want) => window.__weftSweep?.getState().view?.id === want, id, { timeout: 15_000 });
  // The Sweep panel opens by itself to show it (nobody clicks the toggle).
  await page.locator('[data-testid="sweep-panel"]').waitFor({ timeout: 15_000 });
  await page.locator('[data-testid="sweep-grid-image"]').waitFor({ timeout: 180_000 });
  assert.equal(await page.locator('[data-testid="sweep-results"]').getAttribute('data-status'), 'succeeded');
  assert.equal(await page.locator('[data-testid^="sweep-cell-"] img').count(), 2);
  await shot(page, 'sweep-reattached');
  // A fresh page on a file no sweep was queued from by name: nothing is shown.
  await open(page, 'txt2img');
  assert.equal(await page.evaluate(() => window.__weftSweep.getState().view), null);
});
