// A subgraph node's state is its inner nodes' (issue 21, item 4): `repaint` (Img2Img) is not
// "done" while its upstream `draw` (Txt2Img) still samples, and why a node re-ran is said with
// the names on the canvas (`repaint › sample`), never the engine's inner ids (`repaint__sample`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, queueAndWait, shot } from './lib.mjs';

const source = join(WORKFLOWS, 'txt2img-then-img2img.yaml');
const file = join(WORKFLOWS, 'subgraph-state.yaml');
let browser;
let page;

before(async () => {
  assert.ok(existsSync(source), 'WEFT_WORKFLOWS must name a copy of workflows/');
  ({ browser, page } = await launch());
});

after(async () => {
  rmSync(file, { force: true });
  await browser?.close();
});

const state = (id) => page.evaluate((n) => window.__weftRun.getState().nodes[n] ?? null, id);

test('a subgraph node is not done while inner nodes it planned have yet to run', async () => {
  // draw samples long; repaint's prompt encodes run before it (they need only the model).
  const text = readFileSync(source, 'utf8').replace('seed: 3\n', 'seed: 3\n    steps: 3000\n');
  writeFileSync(file, text);
  await open(page, 'subgraph-state');
  await page.locator('[data-testid="queue"]').click();
  await page.waitForFunction(() => (window.__weftRun.getState().nodes.draw?.step ?? 0) > 0, null, { timeout: 60_000 });
  const draw = await state('draw');
  const repaint = await state('repaint');
  assert.equal(draw.state, 'running');
  assert.notEqual(repaint.state, 'done', `repaint shows ${JSON.stringify(repaint)} while draw samples`);
  assert.ok(repaint.innerTotal >= 5, `repaint counts its planned inner nodes: ${JSON.stringify(repaint)}`);
  if (repaint.innerDone > 0) {
    assert.equal(repaint.state, 'queued');
    assert.match(await page.locator(`${node('repaint')} [data-testid="node-status"]`).innerText(), /^queued \d+\/\d+$/i);
  }
  await shot(page, 'subgraph-state-running');
  await page.locator('[data-testid="cancel"]').click();
  await page.waitForFunction(() => window.__weftRun.getState().status === 'cancelled', null, { timeout: 30_000 });
  assert.notEqual((await state('repaint')).state, 'done');
});

test('why a subgraph node re-ran names its inner nodes as the canvas does', async () => {
  writeFileSync(file, readFileSync(source, 'utf8').replace('seed: 3\n', 'seed: 3\n    steps: 4\n').replace('seed: 7\n', 'seed: 7\n    steps: 4\n'));
  await open(page, 'subgraph-state');
  assert.equal(await queueAndWait(page), 'succeeded');
  assert.equal((await state('repaint')).state, 'done');
  assert.equal((await state('draw')).state, 'done');
  // A new seed for repaint: its sampler re-runs, and its decoder because the sampler changed.
  await page.evaluate(() => window.__weft.getState().setValue('repaint', 'seed', 8));
  assert.equal(await queueAndWait(page), 'succeeded');
  const repaint = await state('repaint');
  assert.equal(repaint.state, 'done');
  assert.equal((await state('draw')).state, 'cached');
  const why = await page.locator(`${node('repaint')} .wn-why`).innerText();
  assert.match(why, /upstream 'repaint › sample' changed/);
  assert.doesNotMatch(why, /__/, `no engine ids in "${why}"`);
  await shot(page, 'subgraph-why');
});
