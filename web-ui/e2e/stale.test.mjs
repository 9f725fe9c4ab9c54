// After a disk edit (issue 21, item 5): nodes that will re-run lose their CACHED/DONE badge,
// time and value; those that will not keep them. A diagnostic's line:column is shown only when
// it is a place in the file (not in the canvas's serialisation sent for validation).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, queueAndWait, shot } from './lib.mjs';

const file = join(WORKFLOWS, 'stale-marks.yaml');
const text = (a, b) => `weft: 1
nodes:
  a: {type: Int, value: ${a}}
  b: {type: AddInt, a: $a.value, b: ${b}}
  show: {type: ShowInt, value: $b.sum}
  words: {type: ShowText, text: "left alone"}
layout:
  a: [0, 0]
  b: [280, 0]
  show: [560, 0]
  words: [560, 200]
`;
let browser;
let page;

before(async () => {
  writeFileSync(file, text(30, 12));
  ({ browser, page } = await launch());
});

after(async () => {
  rmSync(file, { force: true });
  await browser?.close();
});

const st = (id) => page.evaluate((n) => window.__weftRun.getState().nodes[n]?.state ?? 'idle', id);

test('a disk edit drops the marks of the nodes that will re-run, keeps the others', async () => {
  await open(page, 'stale-marks');
  assert.equal(await queueAndWait(page, 30_000), 'succeeded');
  assert.equal(await queueAndWait(page, 30_000), 'succeeded');
  assert.equal(await st('show'), 'cached');
  assert.equal(await page.locator(`${node('show')} [data-testid="value"]`).innerText(), '42');
  writeFileSync(file, text(30, 13));
  await page.waitForFunction(() => window.__weft.getState().doc().nodes.b.b === 13, null, { timeout: 10_000 });
  for (const id of ['b', 'show']) {
    assert.equal(await st(id), 'idle', `${id} will re-run: no badge`);
    assert.equal(await page.locator(`${node(id)} [data-testid="node-status"]`).count(), 0);
  }
  assert.equal(await page.locator(`${node('show')} [data-testid="value"]`).count(), 0, 'the old value is gone');
  assert.equal(await st('a'), 'cached', 'a did not change: it keeps its badge');
  assert.equal(await st('words'), 'cached');
  await shot(page, 'stale-after-disk-edit');
  assert.equal(await queueAndWait(page, 30_000), 'succeeded');
  assert.equal(await page.locator(`${node('show')} [data-testid="value"]`).innerText(), '43');
});

test('line:column only for what the file says', async () => {
  // A value of the wrong type in the file: located there, so the position is shown.
  writeFileSync(file, text(30, '"twelve"'));
  await open(page, 'stale-marks');
  const diag = page.locator(`${node('b')} [data-testid="diagnostic"]`).first();
  await diag.waitFor({ timeout: 10_000 });
  assert.match(await diag.innerText(), /^4:\d+ /, 'the file says it on line 4');
  // The same mistake made on the canvas: validated from the canvas, no file position.
  writeFileSync(file, text(30, 12));
  await open(page, 'stale-marks');
  await page.evaluate(() => window.__weft.getState().setValue('a', 'value', 'thirty'));
  const canvasDiag = page.locator(`${node('a')} [data-testid="diagnostic"]`).first();
  await canvasDiag.waitFor({ timeout: 10_000 });
  assert.doesNotMatch(await canvasDiag.innerText(), /^\d+:\d+/, 'no position in a serialisation the user never sees');
});
