// Reloading the page mid-run (issue 21, item 3): the page follows the run of its workflow
// still in flight (state, Cancel), and the History panel can cancel any queued or running run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, shot } from './lib.mjs';

const wf = (name) => join(WORKFLOWS, `${name}.yaml`);
let browser;
let page;
let original;

before(async () => {
  assert.ok(WORKFLOWS && existsSync(wf('txt2img')), 'WEFT_WORKFLOWS must name a copy of workflows/');
  original = readFileSync(wf('txt2img'), 'utf8');
  ({ browser, page } = await launch());
});

after(async () => {
  writeFileSync(wf('txt2img'), original);
  await browser?.close();
});

test('a reload mid-run re-attaches to the run; History and Cancel stop it', async () => {
  // A long run of the saved file (named, so the run record carries the workflow's name).
  writeFileSync(wf('txt2img'), original.replace(/steps: \d+/, 'steps: 4000'));
  await open(page, 'txt2img');
  await page.waitForFunction(() => window.__weft.getState().doc().nodes.sample.steps === 4000);
  await page.locator('[data-testid="queue"]').click();
  await page.waitForFunction(() => window.__weftRun.getState().status === 'running', null, { timeout: 30_000 });
  const run = await page.evaluate(() => window.__weftRun.getState().run);
  await page.reload();
  await page.waitForFunction((r) => window.__weftRun?.getState().run === r, run, { timeout: 10_000 });
  assert.equal(await page.evaluate(() => window.__weftRun.getState().status), 'running');
  assert.equal(await page.locator('[data-testid="cancel"]').isEnabled(), true, 'Cancel is back after the reload');
  // Progress of the re-attached run reaches the sampler node.
  await page.waitForFunction(() => (window.__weftRun.getState().nodes.sample?.step ?? 0) > 0, null, { timeout: 30_000 });
  await page.getByRole('button', { name: 'History' }).click();
  await page.locator('[data-testid="history-cancel"]').first().waitFor({ timeout: 5000 });
  await shot(page, 'reattached-run');
  await page.locator('[data-testid="history-cancel"]').first().click();
  await page.waitForFunction(() => window.__weftRun.getState().status === 'cancelled', null, { timeout: 30_000 });
});
