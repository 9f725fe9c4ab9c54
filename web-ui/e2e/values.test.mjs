// ShowInt / ShowText show their values on the node (issue 21, item 5), after a run and after a
// rerun the cache serves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, queueAndWait, shot } from './lib.mjs';

const file = join(WORKFLOWS, 'show-values.yaml');
let browser;
let page;

before(async () => {
  writeFileSync(
    file,
    `weft: 1
nodes:
  a: {type: Int, value: 30}
  b: {type: AddInt, a: $a.value, b: 12}
  show: {type: ShowInt, value: $b.sum}
  words: {type: ShowText, text: "a red circle"}
layout:
  a: [0, 0]
  b: [280, 0]
  show: [560, 0]
  words: [560, 200]
`,
  );
  ({ browser, page } = await launch());
});

after(async () => {
  rmSync(file, { force: true });
  await browser?.close();
});


test('ShowInt and ShowText show their values, also when the rerun is cached', async () => {
  await open(page, 'show-values');
  assert.equal(await queueAndWait(page, 30_000), 'succeeded');
  assert.equal(await page.locator(`${node('show')} [data-testid="value"]`).innerText(), '42');
  assert.equal(await page.locator(`${node('words')} [data-testid="value"]`).innerText(), 'a red circle');
  await shot(page, 'show-values');
  await page.reload();
  await page.waitForFunction(() => window.__weft?.getState().name === 'show-values' && window.__weft.getState().types.length > 0);
  assert.equal(await queueAndWait(page, 30_000), 'succeeded');
  assert.equal(await page.evaluate(() => window.__weftRun.getState().nodes.show?.state), 'cached');
  assert.equal(await page.locator(`${node('show')} [data-testid="value"]`).innerText(), '42');
});
