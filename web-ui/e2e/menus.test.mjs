// Right-click menus on the canvas, a node and a link; a node's title, colour and collapse are
// saved in the file's `appearance:` section and read back from it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, shot } from './lib.mjs';

const file = join(WORKFLOWS, 'menus.yaml');
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
  show: [620, 0]
`,
  );
  ({ browser, page } = await launch());
});

after(async () => {
  rmSync(file, { force: true });
  await browser?.close();
});

const state = (f) => page.evaluate(f);
const nodeIds = () => state(() => window.__weft.getState().nodes.map((n) => n.id));
const edgeIds = () => state(() => window.__weft.getState().edges.map((e) => e.id).sort());

async function menuOnNode(id) {
  await page.locator(`${node(id)} .wn-kind`).click({ button: 'right' });
  await page.locator('[data-testid="context-menu"]').waitFor();
}

async function choose(item) {
  await page.locator(`[data-testid="${item}"]`).click();
  await page.locator('[data-testid="context-menu"]').waitFor({ state: 'detached' });
}

test('the node menu renames, colours, collapses, bypasses, duplicates and deletes; saved as appearance', async () => {
  await open(page, 'menus');

  await menuOnNode('b');
  await page.locator('[data-testid="ctx-rename"]').click();
  await page.locator('[data-testid="ctx-title"]').fill('Sum of two');
  await page.keyboard.press('Enter');
  assert.equal(await page.locator(`${node('b')} [data-testid="node-title"]`).innerText(), 'Sum of two');

  await menuOnNode('b');
  await choose('ctx-colour-green');
  const bg = await page.locator(`${node('b')} .wn-head`).evaluate((h) => getComputedStyle(h).backgroundColor);
  assert.equal(bg, 'rgb(51, 85, 51)');

  await menuOnNode('b');
  await choose('ctx-bypass');
  assert.equal(await page.locator(node('b')).getAttribute('data-mode'), 'bypass');
  await menuOnNode('b');
  assert.equal(await page.locator('[data-testid="ctx-bypass"] span').innerText(), 'Stop bypassing');
  await choose('ctx-bypass');
  assert.equal(await page.locator(node('b')).getAttribute('data-mode'), null);

  const heightOpen = (await page.locator(node('b')).boundingBox()).height;
  await menuOnNode('b');
  await choose('ctx-collapse');
  await page.locator(`${node('b')}[data-collapsed]`).waitFor();
  const heightFolded = (await page.locator(node('b')).boundingBox()).height;
  assert.ok(heightFolded < heightOpen / 2, `collapsed to its header: ${heightFolded} px from ${heightOpen} px`);
  // Its links are still drawn, to the header.
  await page.waitForFunction(() => document.querySelectorAll('.react-flow__edge').length === 2);
  await shot(page, 'menu-node-collapsed');

  // Duplicate copies the node with its look; delete removes the copy.
  await menuOnNode('b');
  await shot(page, 'menu-node');
  await choose('ctx-duplicate');
  assert.deepEqual(await nodeIds(), ['a', 'b', 'show', 'add_int']);
  const copy = await state(() => window.__weft.getState().nodes.find((n) => n.id === 'add_int').data);
  assert.deepEqual(copy.look, { title: 'Sum of two', color: '#335533', collapsed: true });
  assert.deepEqual(await edgeIds(), ['b:a', 'show:value'], 'a link from a node not copied is not copied');
  await menuOnNode('add_int');
  await choose('ctx-delete');
  assert.deepEqual(await nodeIds(), ['a', 'b', 'show']);

  // Alt+C on the selection toggles collapse too.
  await page.locator(`${node('a')} .wn-kind`).click();
  await page.keyboard.press('Alt+c');
  await page.locator(`${node('a')}[data-collapsed]`).waitFor();
  await page.keyboard.press('Alt+c');
  await page.locator(`${node('a')}:not([data-collapsed])`).waitFor();

  await page.keyboard.press('Control+s');
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  const saved = readFileSync(file, 'utf8');
  assert.match(saved, /\nappearance:\n {2}b: \{title: "Sum of two", color: "#335533", collapsed: true\}\n/, saved);
  assert.doesNotMatch(saved, /\n {2}a: \{/, 'a node drawn as default writes no appearance line');

  await open(page, 'menus');
  assert.equal(await page.locator(`${node('b')} [data-testid="node-title"]`).innerText(), 'Sum of two');
  assert.equal(await page.locator(node('b')).getAttribute('data-collapsed'), 'true');
  // Expanded again from the header's button.
  await page.locator(`${node('b')} [data-testid="collapse"]`).click();
  await page.locator(`${node('b')} [aria-label="b"]`).waitFor();
});

test('the link menu deletes a link; the canvas menu adds a node where it was opened, pastes, selects all', async () => {
  await open(page, 'menus');
  // The middle of the link's path, on screen.
  const mid = await page.evaluate(() => {
    const path = document.querySelector('.react-flow__edge[data-id="show:value"] path.react-flow__edge-interaction')
      ?? document.querySelector('.react-flow__edge[data-id="show:value"] path');
    const p = path.getPointAtLength(path.getTotalLength() / 2);
    const m = path.getScreenCTM();
    return { x: p.x * m.a + p.y * m.c + m.e, y: p.x * m.b + p.y * m.d + m.f };
  });
  await page.mouse.click(mid.x, mid.y, { button: 'right' });
  await page.locator('[data-testid="context-menu"]').waitFor();
  await choose('ctx-delete-link');
  assert.deepEqual(await edgeIds(), ['b:a']);
  await page.locator('[data-testid="canvas"]').focus();
  await page.keyboard.press('Control+z');
  assert.deepEqual(await edgeIds(), ['b:a', 'show:value']);

  // Empty canvas below the nodes.
  const box = await page.locator(node('b')).boundingBox();
  const at = { x: box.x + 20, y: box.y + box.height + 160 };
  await page.mouse.click(at.x, at.y, { button: 'right' });
  await page.locator('[data-testid="context-menu"]').waitFor();
  assert.equal(await page.locator('[data-testid="ctx-paste"]').isDisabled(), true, 'nothing to paste yet');
  await shot(page, 'menu-canvas');
  await choose('ctx-add');
  await page.keyboard.type('ShowInt');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => window.__weft.getState().nodes.length === 4);
  const added = await page.locator(node('show_int')).boundingBox();
  assert.ok(Math.abs(added.x - at.x) < 4 && Math.abs(added.y - at.y) < 4, `the node landed where the menu was opened: ${JSON.stringify(added)} vs ${JSON.stringify(at)}`);

  // Copy it, paste it through the menu at another point, select all.
  await page.keyboard.press('Control+c');
  await page.mouse.click(at.x + 300, at.y, { button: 'right' });
  await choose('ctx-paste');
  await page.waitForFunction(() => window.__weft.getState().nodes.length === 5);
  await page.mouse.click(at.x + 300, at.y + 200, { button: 'right' });
  await choose('ctx-select-all');
  assert.equal(await state(() => window.__weft.getState().nodes.filter((n) => n.selected).length), 5);
  await page.evaluate(() => window.__weft.setState({ dirty: false }));
});
