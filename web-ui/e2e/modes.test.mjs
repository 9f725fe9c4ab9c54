// Bypass and mute (Ctrl+B / Ctrl+M) are the engine's: a bypassed node passes its first input of
// each output's type through, a muted one is left out with what only it feeds; both are node
// keys in the file (`bypass: true`, `mute: true`) and shown on the node.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, queueAndWait, shot } from './lib.mjs';

const file = join(WORKFLOWS, 'modes.yaml');
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
  words: {type: ShowText, text: "not muted"}
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

const value = (id) => page.locator(`${node(id)} [data-testid="value"]`).innerText();
const select = async (id) => {
  await page.locator(`${node(id)} .wn-id`).click();
  await page.waitForFunction((n) => window.__weft.getState().nodes.find((x) => x.id === n)?.selected, id);
};

test('Ctrl+B bypasses a node: its input passes through; Ctrl+M mutes; both saved in the file', async () => {
  await open(page, 'modes');
  assert.equal(await queueAndWait(page, 30_000), 'succeeded');
  assert.equal(await value('show'), '42');

  await select('b');
  await page.keyboard.press('Control+b');
  assert.equal(await page.locator(`${node('b')} [data-testid="node-mode"]`).innerText(), 'BYPASSED');
  assert.equal(await page.locator(node('b')).getAttribute('data-mode'), 'bypass');
  await select('words');
  await page.keyboard.press('Control+m');
  assert.equal(await page.locator(node('words')).getAttribute('data-mode'), 'mute');
  assert.equal(await queueAndWait(page, 30_000), 'succeeded');
  // b passed a's 30 on; words did not run.
  assert.equal(await value('show'), '30');
  const states = await page.evaluate(() => window.__weftRun.getState().nodes);
  assert.notEqual(states.b?.state, 'done', 'a bypassed node does not run');
  assert.notEqual(states.words?.state, 'done', 'a muted node does not run');
  assert.notEqual(states.words?.state, 'cached');
  await shot(page, 'bypass-and-mute');

  await page.keyboard.press('Control+s');
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  const saved = readFileSync(file, 'utf8');
  assert.match(saved, /\n  b:\n    type: AddInt\n    bypass: true\n/);
  assert.match(saved, /\n  words:\n    type: ShowText\n    mute: true\n/);

  // Read back from the file, the marks are there; Ctrl+B again undoes the bypass.
  await open(page, 'modes');
  assert.equal(await page.locator(node('b')).getAttribute('data-mode'), 'bypass');
  await select('b');
  await page.keyboard.press('Control+b');
  assert.equal(await page.locator(node('b')).getAttribute('data-mode'), null);
  assert.equal(await queueAndWait(page, 30_000), 'succeeded');
  assert.equal(await value('show'), '42');
  // Ctrl+Z brings the bypass back (one history for every change).
  await page.locator('.react-flow__pane').click({ position: { x: 5, y: 5 } });
  await page.keyboard.press('Control+z');
  assert.equal(await page.locator(node('b')).getAttribute('data-mode'), 'bypass');
});

test('? shows the keys, drawn from the table the key handler runs', async () => {
  await open(page, 'modes');
  await page.locator('.react-flow__pane').click({ position: { x: 5, y: 5 } });
  await page.keyboard.press('?');
  const help = page.locator('[data-testid="help"]');
  await help.waitFor();
  const text = await help.innerText();
  for (const keys of ['Ctrl+B', 'Ctrl+M', 'Ctrl+G', 'Ctrl+Enter', 'Ctrl+Z']) assert.ok(text.includes(keys), `${keys} listed`);
  await shot(page, 'keys-help');
  await page.keyboard.press('?');
  await help.waitFor({ state: 'detached' });
});
