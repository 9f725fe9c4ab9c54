// The queue panel: every workflow's queued and running runs from the server, each cancellable;
// "queue N copies with new seeds"; a past run's workflow opened back onto the canvas.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BASE, WORKFLOWS, launch, open, node, queueAndWait, shot } from './lib.mjs';

let browser;
let page;
const files = ['queue.yaml', 'queue-other.yaml'].map((f) => join(WORKFLOWS, f));

before(async () => {
  const base = readFileSync(join(WORKFLOWS, 'txt2img.yaml'), 'utf8');
  assert.match(base, /steps: 20/);
  // Long runs, so that copies wait in the queue while the test looks at them.
  writeFileSync(files[0], base.replace(/steps: 20/, 'steps: 5000'));
  writeFileSync(files[1], base.replace(/steps: 20/, 'steps: 5000').replace(/seed: 42/, 'seed: 5'));
  ({ browser, page } = await launch());
});

after(async () => {
  // Nothing of this test keeps the server busy for the next file.
  const runs = await (await fetch(`${BASE}/api/runs?limit=50`)).json();
  for (const r of runs.runs) if (['queued', 'running'].includes(r.status)) await fetch(`${BASE}/api/runs/${r.id}/cancel`, { method: 'POST' });
  for (const f of files) rmSync(f, { force: true });
  await browser?.close();
});

const rows = () => page.locator('[data-testid="queue-panel"] [data-testid^="queue-run-"]');
const detail = (id) => page.evaluate(async (i) => (await fetch(`/api/runs/${i}`)).json(), id);
const idOf = async (row) => Number((await row.getAttribute('data-testid')).replace('queue-run-', ''));

test('queue N copies with new seeds; every workflow\'s runs listed; cancel any', async () => {
  await open(page, 'queue');
  await page.locator('[data-testid="history-toggle"]').click();
  await page.locator('[data-testid="copies-count"]').fill('3');
  await page.locator('[data-testid="queue-copies"]').click();
  await page.locator('[data-testid="toast"]', { hasText: 'queued 3 copies' }).waitFor();
  // Another workflow's run, queued from elsewhere (the API), is in the same queue.
  const other = await page.evaluate(async () => {
    const r = await fetch('/api/runs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ workflow: 'queue-other' }) });
    return (await r.json()).id;
  });
  await page.locator(`[data-testid="queue-run-${other}"]`).waitFor({ timeout: 30_000 });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="queue-panel"] [data-testid^="queue-run-"]').length === 4, null, { timeout: 30_000 });
  assert.match(await page.locator(`[data-testid="queue-run-${other}"]`).innerText(), /queue-other/);
  await shot(page, 'queue-panel');

  const ids = [];
  for (const r of await rows().all()) ids.push(await idOf(r));
  const copies = ids.filter((i) => i !== other).sort((a, b) => a - b);
  assert.equal(copies.length, 3);
  // Each copy ran the file by name, each with a seed of its own (never the file's 42).
  const seeds = [];
  for (const id of copies) {
    const d = await detail(id);
    assert.equal(d.workflow_name, 'queue');
    seeds.push(d.workflow.nodes.sample.seed);
    assert.equal(d.workflow.nodes.sample.steps, 5000);
  }
  assert.equal(new Set(seeds).size, 3, `seeds ${seeds}`);
  assert.ok(!seeds.includes(42), `seeds ${seeds}`);
  // The canvas is not changed by queueing copies.
  assert.equal(await page.evaluate(() => window.__weft.getState().dirty), false);

  // Cancel the last queued copy from the panel: it leaves the queue, the others stay.
  const last = copies[2];
  await page.locator(`[data-testid="queue-run-${last}"] [data-testid="history-cancel"]`).click();
  await page.locator(`[data-testid="queue-run-${last}"]`).waitFor({ state: 'detached', timeout: 30_000 });
  assert.equal((await detail(last)).status, 'cancelled');
  assert.ok(['queued', 'running'].includes((await detail(other)).status));
  // Then every other one, the running one included.
  for (let left = await rows().count(); left > 0; left = await rows().count()) {
    await rows().first().locator('[data-testid="history-cancel"]').click();
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="queue-panel"] [data-testid^="queue-run-"]').length < n, left, { timeout: 60_000 });
  }
  for (const id of [...copies, other]) assert.equal((await detail(id)).status, 'cancelled', `run ${id}`);
  assert.equal(await page.locator('[data-testid="queue-count"]').innerText(), 'empty');
});

test('a past run opens back onto the canvas as it ran, with its images; Ctrl+Z goes back', async () => {
  await open(page, 'queue');
  // Run an unsaved edit of the canvas (few steps, another seed).
  await page.locator(`${node('sample')} [data-input="steps"] input`).fill('3');
  await page.locator(`${node('sample')} [data-input="seed"] input`).fill('1234');
  assert.equal(await queueAndWait(page), 'succeeded');
  const run = await page.evaluate(() => window.__weftRun.getState().run);

  // A fresh page shows the file (5000 steps, seed 42); Open brings the run's workflow back.
  await page.evaluate(() => window.__weft.setState({ dirty: false }));
  await open(page, 'queue');
  const value = (input) => page.locator(`${node('sample')} [data-input="${input}"] input`).inputValue();
  assert.equal(await value('seed'), '42');
  await page.locator('[data-testid="history-toggle"]').click();
  await page.locator(`[data-testid="history-run-${run}"] [data-testid="history-open"]`).click();
  await page.waitForFunction(() => window.__weft.getState().dirty === true);
  assert.equal(await value('seed'), '1234');
  assert.equal(await value('steps'), '3');
  assert.equal(await page.evaluate(() => window.__weft.getState().name), 'queue');
  // Its image is on the save node, from that run.
  const src = await page.locator(`${node('save')} img.wn-result`).first().getAttribute('src');
  assert.match(src, new RegExp(`/api/outputs/${run}/`));
  await shot(page, 'queue-open-past-run');
  // Each past run's row is one line at the panel's 300 px: Open beside the run's number, not under it.
  const rows = await page.$$eval('[data-testid^="history-run-"] > .h-line', (lines) =>
    lines.map((l) => {
      const id = l.querySelector('span').getBoundingClientRect();
      const open = l.querySelector('[data-testid="history-open"]').getBoundingClientRect();
      return { text: l.textContent, sameLine: open.top < id.bottom && open.bottom > id.top };
    }),
  );
  assert.ok(rows.length > 0);
  for (const r of rows) assert.ok(r.sameLine, `Open wrapped onto a second line: ${r.text}`);
  // Undo goes back to the file's values.
  await page.locator('[data-testid="canvas"]').click({ position: { x: 5, y: 300 } });
  await page.keyboard.press('Control+z');
  await page.waitForFunction(() => document.querySelector('[data-testid="node-sample"] [data-input="seed"] input')?.value === '42');
  await page.locator('[data-testid="history-toggle"]').click();
});

test('a past run of another workflow opens that workflow first', async () => {
  // Saved, then run by name (the history names the workflow); then the file changes again.
  await open(page, 'queue-other');
  await page.locator(`${node('sample')} [data-input="steps"] input`).fill('2');
  await page.locator('[data-testid="save"]').click();
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  assert.equal(await queueAndWait(page), 'succeeded');
  const run = await page.evaluate(() => window.__weftRun.getState().run);
  assert.equal((await detail(run)).workflow_name, 'queue-other');
  const saved = readFileSync(files[1], 'utf8');
  assert.match(saved, /steps: 2\n/);
  writeFileSync(files[1], saved.replace(/steps: 2\n/, 'steps: 5000\n'));
  await open(page, 'queue');
  await page.locator('[data-testid="history-toggle"]').click();
  await page.locator(`[data-testid="history-run-${run}"] [data-testid="history-open"]`).click();
  await page.waitForFunction(() => window.__weft.getState().name === 'queue-other' && window.__weft.getState().dirty);
  assert.equal(await page.locator(`${node('sample')} [data-input="steps"] input`).inputValue(), '2');
  assert.equal(await page.locator(`${node('sample')} [data-input="seed"] input`).inputValue(), '5');
});
