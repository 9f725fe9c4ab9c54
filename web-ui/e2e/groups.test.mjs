// Groups (Ctrl+G): a titled, coloured box around the selected nodes; dragging its title moves
// the nodes inside; saved in the file's `groups:` section and read back from it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, shot } from './lib.mjs';

const file = join(WORKFLOWS, 'grouped.yaml');
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
layout:
  a: [0, 0]
  b: [300, 0]
  show: [700, 0]
`,
  );
  ({ browser, page } = await launch());
});

after(async () => {
  rmSync(file, { force: true });
  await browser?.close();
});

const positions = () => page.evaluate(() => Object.fromEntries(window.__weft.getState().nodes.map((n) => [n.id, [n.position.x, n.position.y]])));

test('Ctrl+G groups the selection; dragging the title moves its nodes; saved and read back', async () => {
  await open(page, 'grouped');
  await page.locator(`${node('a')} .wn-id`).click();
  await page.locator(`${node('b')} .wn-id`).click({ modifiers: ['Control'] });
  await page.waitForFunction(() => window.__weft.getState().nodes.filter((n) => n.selected).length === 2);
  await page.keyboard.press('Control+g');
  const title = page.locator('[data-testid="group-0"] .wg-title');
  await title.waitFor();
  const before = await positions();
  const groupAt = () => page.evaluate(() => window.__weft.getState().groups[0].box.slice(0, 2));
  const groupBefore = await groupAt();

  // Rename and colour it.
  await title.dblclick();
  await page.locator('[aria-label="group title"]').fill('Numbers');
  await page.keyboard.press('Enter');
  assert.equal(await page.locator('[data-testid="group-0"] .wg-name').innerText(), 'Numbers');

  const box = await title.boundingBox();
  await page.mouse.move(box.x + 60, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + 110, box.y + box.height / 2 + 40, { steps: 6 });
  await page.mouse.move(box.x + 160, box.y + box.height / 2 + 80, { steps: 6 });
  await page.mouse.up();
  const after = await positions();
  const moved = (id) => [after[id][0] - before[id][0], after[id][1] - before[id][1]];
  // The group went where the mouse took it (less React Flow's drag threshold), its nodes as far.
  const groupAfter = await groupAt();
  const expect = [groupAfter[0] - groupBefore[0], groupAfter[1] - groupBefore[1]];
  assert.ok(expect[0] > 50 && expect[1] > 40, `the group moved: ${expect}`);
  for (const id of ['a', 'b']) assert.deepEqual(moved(id), expect, `${id} moved with its group`);
  assert.deepEqual(moved('show'), [0, 0], 'a node outside the group stays');
  await shot(page, 'group');

  await page.keyboard.press('Control+s');
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  const saved = readFileSync(file, 'utf8');
  assert.match(saved, /\ngroups:\n  - \{title: "Numbers", color: "#3f789e", box: \[-?\d+, -?\d+, \d+, \d+\]\}\n/);

  await open(page, 'grouped');
  assert.equal(await page.locator('[data-testid="group-0"] .wg-name').innerText(), 'Numbers');
});
