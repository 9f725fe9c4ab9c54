// Reroute points: double-click a link (or its menu) puts a dot on it; dragging the dot bends
// the link through it; saved in the file's `reroutes:` and read back; Del removes the dot and
// the link stays.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, shot } from './lib.mjs';

const file = join(WORKFLOWS, 'rerouted.yaml');
let browser;
let page;

before(async () => {
  writeFileSync(file, readFileSync(join(WORKFLOWS, 'txt2img.yaml'), 'utf8'));
  ({ browser, page } = await launch());
});

after(async () => {
  rmSync(file, { force: true });
  await browser?.close();
});

const edgePath = (id) => `.react-flow__edge[data-id="${id}"] path.react-flow__edge-path`;
const reroutes = () => page.evaluate(() => window.__weft.getState().reroutes);
const links = () => page.evaluate(() => window.__weft.getState().edges.map((e) => `${e.source}.${e.sourceHandle}>${e.target}.${e.targetHandle}`).sort());

/** The screen point a fraction along a drawn link. */
function pointOn(id, fraction) {
  return page.evaluate(
    ([sel, f]) => {
      const path = document.querySelector(sel);
      const p = path.getPointAtLength(path.getTotalLength() * f);
      const m = path.getScreenCTM();
      return { x: p.x * m.a + p.y * m.c + m.e, y: p.x * m.b + p.y * m.d + m.f };
    },
    [edgePath(id), fraction],
  );
}

/** How far (screen px) the drawn link passes from the middle of a reroute dot. */
function missBy(id, dot) {
  return page.evaluate(
    ([sel, dotSel]) => {
      const path = document.querySelector(sel);
      const r = document.querySelector(dotSel).getBoundingClientRect();
      const [cx, cy] = [r.x + r.width / 2, r.y + r.height / 2];
      const m = path.getScreenCTM();
      const len = path.getTotalLength();
      let best = Infinity;
      for (let i = 0; i <= 400; i++) {
        const p = path.getPointAtLength((len * i) / 400);
        const [x, y] = [p.x * m.a + p.y * m.c + m.e, p.x * m.b + p.y * m.d + m.f];
        best = Math.min(best, Math.hypot(x - cx, y - cy));
      }
      return best;
    },
    [edgePath(id), `[data-testid="reroute-${dot}"]`],
  );
}

test('a reroute point: added on a link, dragged, saved, read back, deleted with its link kept', async () => {
  await open(page, 'rerouted');
  const before = await links();

  // Double-click the long link model.vae -> decode.vae: a point where the mouse was.
  const at = await pointOn('decode:vae', 0.5);
  await page.mouse.dblclick(at.x, at.y);
  await page.waitForFunction(() => Object.keys(window.__weft.getState().reroutes).length === 1);
  assert.deepEqual(Object.keys(await reroutes()), ['r1']);
  assert.equal((await reroutes()).r1.from, 'model.vae');
  assert.deepEqual((await reroutes()).r1.to, ['decode.vae']);
  const dot = page.locator('[data-testid="reroute-r1"]');
  await dot.waitFor();

  // Drag it 160 px down: the point moves, the link is drawn through it.
  const placed = (await reroutes()).r1.at;
  const box = await dot.boundingBox();
  await page.mouse.move(box.x + box.width / 2 - 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2 - 2, box.y + box.height / 2 + 80, { steps: 6 });
  await page.mouse.move(box.x + box.width / 2 - 2, box.y + box.height / 2 + 160, { steps: 6 });
  await page.mouse.up();
  const dragged = (await reroutes()).r1.at;
  assert.ok(dragged[1] - placed[1] > 60, `the point moved down: ${placed} -> ${dragged}`);
  assert.ok((await missBy('decode:vae', 'r1')) < 3, 'the link goes through the dot');
  assert.deepEqual(await links(), before, 'no link changed');

  // The link's right-click menu puts a second point on sample.latent -> decode.latent.
  const second = await pointOn('decode:latent', 0.5);
  await page.mouse.click(second.x, second.y, { button: 'right' });
  await page.locator('[data-testid="ctx-add-reroute"]').click();
  await page.waitForFunction(() => Object.keys(window.__weft.getState().reroutes).length === 2);
  assert.deepEqual((await reroutes()).r2.to, ['decode.latent']);

  await page.keyboard.press('Control+s');
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  const saved = readFileSync(file, 'utf8');
  const [x, y] = dragged;
  assert.ok(saved.includes(`reroutes:\n  r1: {at: [${x}, ${y}], from: model.vae, to: [decode.vae]}\n  r2: {at: [`), saved);
  assert.ok(saved.includes('    vae: $model.vae\n'), 'the link itself is unchanged');

  // Read back: the points are there and the link still goes through r1.
  await open(page, 'rerouted');
  assert.deepEqual((await reroutes()).r1.at, dragged);
  await dot.waitFor();
  assert.ok((await missBy('decode:vae', 'r1')) < 3, 'read back, the link goes through the dot');

  // Drag from the dot's socket to empty canvas: the palette offers what takes a VAE; the new
  // node is fed from model.vae through the same dot.
  const socket = await page.locator('.react-flow__handle[data-nodeid="reroute:r1"]').boundingBox();
  await page.mouse.move(socket.x + socket.width / 2, socket.y + socket.height / 2);
  await page.mouse.down();
  await page.mouse.move(700, 900, { steps: 6 });
  await page.mouse.move(800, 920, { steps: 6 });
  await page.mouse.up();
  await page.locator('.palette input').fill('decode');
  await page.keyboard.press('Enter');
  await page.locator('.palette').waitFor({ state: 'detached' });
  await page.waitForFunction(() => window.__weft.getState().reroutes.r1.to.length === 2);
  const fed = (await reroutes()).r1.to[1];
  const newNode = fed.split('.')[0];
  assert.ok((await links()).includes(`model.vae>${fed}`), `${fed} is fed from model.vae`);
  assert.ok((await missBy(`${newNode}:vae`, 'r1')) < 3, 'the new link goes through the dot too');
  await shot(page, 'reroute');
  const withNew = await links();

  // Del on the selected point: it goes, the link stays (drawn straight), one undo brings it back.
  await dot.click();
  await page.waitForFunction(() => window.__weft.getState().selectedReroute === 'r1');
  await page.keyboard.press('Delete');
  await page.waitForFunction(() => !window.__weft.getState().reroutes.r1);
  assert.deepEqual(await links(), withNew, 'deleting the point kept every link');
  assert.equal(await page.locator(`.react-flow__edge[data-id="decode:vae"]`).count(), 1);
  await page.keyboard.press('Control+z');
  await page.waitForFunction(() => !!window.__weft.getState().reroutes.r1);
  await page.keyboard.press('Control+y');
  await page.waitForFunction(() => !window.__weft.getState().reroutes.r1);

  // r2 through its menu.
  const r2 = await page.locator('[data-testid="reroute-r2"]').boundingBox();
  await page.mouse.click(r2.x + r2.width / 2 - 2, r2.y + r2.height / 2, { button: 'right' });
  await page.locator('[data-testid="ctx-delete-reroute"]').click();
  await page.waitForFunction(() => Object.keys(window.__weft.getState().reroutes).length === 0);
  await page.keyboard.press('Control+s');
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  const after = readFileSync(file, 'utf8');
  assert.ok(!after.includes('reroutes:'), after);
  assert.ok(after.includes('    vae: $model.vae\n') && after.includes('    latent: $sample.latent\n'), after);
});
