// Two tabs on one workflow (issue 21, item 2): a tab whose save is refused because the other
// saved first merges input by input, so neither tab's edit is lost; an input both changed is
// named, and the file is only replaced when asked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, shot } from './lib.mjs';

const wf = (name) => join(WORKFLOWS, `${name}.yaml`);
let a;
let b;
let original;

before(async () => {
  assert.ok(WORKFLOWS && existsSync(wf('txt2img')), 'WEFT_WORKFLOWS must name a copy of workflows/');
  original = readFileSync(wf('txt2img'), 'utf8');
  a = await launch();
  b = await launch();
});

after(async () => {
  writeFileSync(wf('txt2img'), original);
  await a?.browser.close();
  await b?.browser.close();
});

const set = (page, node, input, value) =>
  page.evaluate(([n, i, v]) => window.__weft.getState().setValue(n, i, v), [node, input, value]);

async function save(page) {
  await page.locator('[data-testid="save"]').click();
  await page.waitForFunction(() => !window.__weft.getState().saving);
}

test('tab B, refused after tab A saved, merges: the file has both edits and tab A follows', async () => {
  await open(a.page, 'txt2img');
  await open(b.page, 'txt2img');
  // Both edit; A saves first: B, with unsaved edits, is told the file changed, and its own
  // save is refused (the old "Keep mine" would have dropped A's cfg here).
  await set(b.page, 'sample', 'seed', 7771);
  await set(a.page, 'sample', 'cfg', 6.25);
  await save(a.page);
  assert.match(readFileSync(wf('txt2img'), 'utf8'), /cfg: 6\.25/);
  await b.page.locator('[data-testid="conflict"]').waitFor({ timeout: 5000 });
  await save(b.page);
  assert.doesNotMatch(readFileSync(wf('txt2img'), 'utf8'), /seed: 7771/, 'refused before the merge');
  await b.page.locator('[data-testid="merge"]').click();
  await b.page.waitForFunction(() => window.__weft.getState().message?.text.startsWith('merged your edits'));
  await shot(b.page, 'merge-two-tabs');
  await save(b.page);
  await b.page.waitForFunction(() => window.__weft.getState().message?.text.startsWith('saved'));
  const text = readFileSync(wf('txt2img'), 'utf8');
  assert.match(text, /cfg: 6\.25/, 'tab A\'s cfg survives');
  assert.match(text, /seed: 7771/, 'tab B\'s seed is written');
  // Tab A had no unsaved edits: it follows the file, with both.
  await a.page.waitForFunction(() => {
    const n = window.__weft.getState().doc().nodes.sample;
    return n.seed === 7771 && n.cfg === 6.25;
  });
});

test('an input both tabs changed is named after the merge, and the canvas value is kept', async () => {
  await open(a.page, 'txt2img');
  await open(b.page, 'txt2img');
  await set(b.page, 'sample', 'steps', 31);
  await set(a.page, 'sample', 'steps', 13);
  await save(a.page);
  await b.page.locator('[data-testid="merge"]').click();
  await b.page.waitForFunction(() => window.__weft.getState().message?.text.includes('sample.steps (file 13, yours 31)'));
  await shot(b.page, 'merge-conflict-named');
  assert.equal(await b.page.evaluate(() => window.__weft.getState().doc().nodes.sample.steps), 31);
  assert.match(readFileSync(wf('txt2img'), 'utf8'), /steps: 13/, 'nothing written before Save');
});
