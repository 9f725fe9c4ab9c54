// The keys of EDITOR.md's ComfyUI table that no other browser test presses: each pressed on the
// canvas as a person would, and what it must do seen in the page (the table itself is unit
// tested in src/shortcuts.test.ts; this proves the page wires each row to the real action).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { BASE, WORKFLOWS, launch, open, node, shot } from './lib.mjs';

let browser;
let page;
const file = join(WORKFLOWS, 'keys.yaml');
const savedAs = join(WORKFLOWS, 'keys-copy.yaml');

before(async () => {
  const base = readFileSync(join(WORKFLOWS, 'txt2img.yaml'), 'utf8');
  assert.match(base, /steps: 20/);
  // A long run, so that Ctrl+Alt+Enter finds it going.
  writeFileSync(file, base.replace(/steps: 20/, 'steps: 5000'));
  ({ browser, page } = await launch());
});

after(async () => {
  const runs = await (await fetch(`${BASE}/api/runs?limit=50`)).json();
  for (const r of runs.runs) if (['queued', 'running'].includes(r.status)) await fetch(`${BASE}/api/runs/${r.id}/cancel`, { method: 'POST' });
  for (const f of [file, savedAs]) rmSync(f, { force: true });
  await browser?.close();
});

const state = () => page.evaluate(() => {
  const s = window.__weft.getState();
  return { nodes: s.nodes.length, selected: s.nodes.filter((n) => n.selected).map((n) => n.id).sort() };
});
/** The canvas has the keyboard (keys act only there), with nothing selected. */
const focusCanvas = () => page.locator('[data-testid="canvas"]').click({ position: { x: 5, y: 300 } });

test('Ctrl+Enter queues the canvas; Ctrl+Alt+Enter cancels the run', async () => {
  await open(page, 'keys');
  const before = await page.evaluate(() => window.__weftRun.getState().run);
  await focusCanvas();
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction((b) => { const s = window.__weftRun.getState(); return s.run !== b && (s.nodes.sample?.step ?? 0) >= 1; }, before, { timeout: 90_000 });
  const run = await page.evaluate(() => window.__weftRun.getState().run);
  await page.keyboard.press('Control+Alt+Enter');
  await page.waitForFunction(() => window.__weftRun.getState().status === 'cancelled', null, { timeout: 60_000 });
  const detail = await page.evaluate(async (id) => (await fetch(`/api/runs/${id}`)).json(), run);
  assert.equal(detail.status, 'cancelled');
  assert.equal(detail.workflow_name, 'keys');
});

test('Ctrl+A selects every node; Shift+D duplicates the selection; Backspace deletes it', async () => {
  await open(page, 'keys');
  const all = (await state()).nodes;
  await focusCanvas();
  await page.keyboard.press('Control+a');
  assert.equal((await state()).selected.length, all);
  await focusCanvas();
  await page.locator(`${node('latent')} .wn-head`).click();
  await page.keyboard.press('Shift+D');
  const duplicated = await state();
  assert.equal(duplicated.nodes, all + 1);
  assert.equal(duplicated.selected.length, 1);
  assert.notEqual(duplicated.selected[0], 'latent', 'the copy is selected, not the original');
  await page.keyboard.press('Backspace');
  assert.equal((await state()).nodes, all);
  assert.equal(await page.locator(node(duplicated.selected[0])).count(), 0);
  assert.equal(await page.locator(node('latent')).count(), 1);
});

test('Space and Tab open the node search; Q shows and hides the queue', async () => {
  await open(page, 'keys');
  for (const key of ['Space', 'Tab']) {
    await focusCanvas();
    await page.keyboard.press(key);
    await page.locator('.palette input').waitFor({ timeout: 10_000 });
    await page.keyboard.press('Escape');
    await page.locator('.palette').waitFor({ state: 'detached' });
  }
  await focusCanvas();
  await page.keyboard.press('q');
  await page.locator('[data-testid="history"]').waitFor();
  await shot(page, 'shortcut-q-queue');
  await focusCanvas();
  await page.keyboard.press('q');
  await page.locator('[data-testid="history"]').waitFor({ state: 'detached' });
});

test('Ctrl+Shift+S saves the canvas under a new name', async () => {
  await open(page, 'keys');
  await focusCanvas();
  await page.keyboard.press('Control+Shift+S');
  const name = page.locator('input[aria-label="workflow name"]');
  await name.waitFor();
  await name.fill('keys-copy');
  await name.press('Enter');
  await page.waitForFunction(() => window.__weft.getState().name === 'keys-copy', null, { timeout: 30_000 });
  assert.ok(existsSync(savedAs), 'keys-copy.yaml written');
  assert.match(readFileSync(savedAs, 'utf8'), /steps: 5000/);
});

/** The node's ids, links as `from.output>to.input`, and whether `id` is collapsed. */
const graph = () => page.evaluate(() => {
  const s = window.__weft.getState();
  return {
    ids: s.nodes.map((n) => n.id),
    links: s.edges.map((e) => `${e.source}.${e.sourceHandle}>${e.target}.${e.targetHandle}`),
    at: Object.fromEntries(s.nodes.map((n) => [n.id, [Math.round(n.position.x), Math.round(n.position.y)]])),
    collapsed: s.nodes.filter((n) => n.data.look?.collapsed).map((n) => n.id),
  };
});
const select = async (id) => {
  await focusCanvas();
  await page.locator(`${node(id)} .wn-head`).click();
};

test('Ctrl+Shift+V pastes keeping the links from nodes not copied; Ctrl+V does not', async () => {
  await open(page, 'keys');
  await select('positive');
  await page.keyboard.press('Control+c');
  const before = await graph();
  await page.mouse.move(700, 700);
  await page.keyboard.press('Control+Shift+V');
  const kept = await graph();
  const copy = kept.ids.find((id) => !before.ids.includes(id));
  assert.ok(copy, `a pasted node (ids ${kept.ids})`);
  assert.ok(kept.links.includes(`model.text_encoder>${copy}.encoder`), `the copy is fed by model: ${kept.links}`);
  await page.mouse.move(900, 750);
  await page.keyboard.press('Control+v');
  const plain = await graph();
  const second = plain.ids.find((id) => !kept.ids.includes(id));
  assert.ok(second, 'Ctrl+V pasted too');
  assert.ok(!plain.links.some((l) => l.endsWith(`>${second}.encoder`)), `Ctrl+V keeps no outside link: ${plain.links}`);
});

test('Ctrl+X deletes a node and joins the links through it where the types fit', async () => {
  await open(page, 'keys');
  assert.ok((await graph()).links.includes('sample.latent>decode.latent'));
  await select('sample');
  await page.keyboard.press('Control+x');
  const g = await graph();
  assert.ok(!g.ids.includes('sample'), 'sample deleted');
  assert.ok(g.links.includes('latent.latent>decode.latent'), `decode is fed by the sampler's latent input: ${g.links}`);
  await page.keyboard.press('Control+z');
  assert.ok((await graph()).links.includes('sample.latent>decode.latent'), 'one undo brings it back');
});

test('Alt+drag leaves the original in place and drops a copy', async () => {
  await open(page, 'keys');
  const before = await graph();
  const head = await page.locator(`${node('latent')} .wn-head`).boundingBox();
  const x = head.x + 20;
  const y = head.y + head.height / 2;
  await page.keyboard.down('Alt');
  await page.mouse.move(x, y);
  await page.mouse.down();
  await page.mouse.move(x + 60, y + 80, { steps: 4 });
  await page.mouse.move(x + 120, y + 160, { steps: 6 });
  await page.mouse.up();
  await page.keyboard.up('Alt');
  const g = await graph();
  const copy = g.ids.find((id) => !before.ids.includes(id));
  assert.ok(copy, `a copy was made (ids ${g.ids})`);
  assert.deepEqual(g.at.latent, before.at.latent, 'the original stays where it was');
  assert.ok(g.at[copy][1] > before.at.latent[1] + 40, `the copy is where it was dropped: ${g.at[copy]} vs ${before.at.latent}`);
  assert.ok(g.links.includes('latent.latent>sample.latent'), 'the original keeps its link');
  assert.ok(!g.links.some((l) => l.startsWith(`${copy}.`)), 'the copy has no outside link');
  // Without Alt a drag only moves.
  const moved = await page.locator(`${node('latent')} .wn-head`).boundingBox();
  await page.mouse.move(moved.x + 20, moved.y + moved.height / 2);
  await page.mouse.down();
  await page.mouse.move(moved.x + 20, moved.y + moved.height / 2 + 100, { steps: 6 });
  await page.mouse.up();
  const after = await graph();
  assert.equal(after.ids.length, g.ids.length, 'a plain drag copies nothing');
  assert.notDeepEqual(after.at.latent, before.at.latent);
});

test('Space+drag pans without opening the search; Space alone still opens it', async () => {
  await open(page, 'keys');
  const viewport = () => page.locator('.react-flow__viewport').evaluate((el) => new DOMMatrix(getComputedStyle(el).transform).e);
  const x0 = await viewport();
  await focusCanvas();
  const pane = await page.locator('[data-testid="canvas"]').boundingBox();
  await page.keyboard.down('Space');
  await page.mouse.move(pane.x + 40, pane.y + 300);
  await page.mouse.down();
  await page.mouse.move(pane.x + 140, pane.y + 300, { steps: 5 });
  await page.mouse.move(pane.x + 240, pane.y + 300, { steps: 5 });
  await page.mouse.up();
  await page.keyboard.up('Space');
  await page.waitForTimeout(200);
  assert.equal(await page.locator('.palette').count(), 0, 'no search after Space+drag');
  const x1 = await viewport();
  assert.ok(Math.abs(x1 - x0 - 200) < 20, `panned by the drag: ${x0} -> ${x1}`);
  // Started on a node, Space+drag pans too, and the node stays where it was in the file.
  const at = (await graph()).at.latent;
  const head = await page.locator(`${node('latent')} .wn-head`).boundingBox();
  await page.keyboard.down('Space');
  await page.mouse.move(head.x + 30, head.y + head.height / 2);
  await page.mouse.down();
  await page.mouse.move(head.x + 130, head.y + head.height / 2, { steps: 5 });
  await page.mouse.move(head.x + 230, head.y + head.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.keyboard.up('Space');
  await page.waitForTimeout(200);
  assert.deepEqual((await graph()).at.latent, at, 'the node did not move');
  const x2 = await viewport();
  assert.ok(Math.abs(x2 - x1 - 200) < 20, `panned from the node: ${x1} -> ${x2}`);
  assert.equal(await page.locator('.palette').count(), 0, 'no search after Space+drag');
  await focusCanvas();
  await page.keyboard.press('Space');
  await page.locator('.palette input').waitFor({ timeout: 10_000 });
  await page.keyboard.press('Escape');
});

test('H collapses the selected node and opens it again, as Alt+C', async () => {
  await open(page, 'keys');
  await select('latent');
  await page.keyboard.press('h');
  assert.deepEqual((await graph()).collapsed, ['latent']);
  await page.keyboard.press('h');
  assert.deepEqual((await graph()).collapsed, []);
});

/** The middle of link `id`'s grip: its last pixels before the input. */
const grip = async (id) => {
  // Diagnostics arriving from the server change node heights (a link removed, then put back):
  // measure once they have landed, as drag() in lib.mjs does.
  await page.waitForFunction(() => window.__weftValidating === 0);
  const box = await page.locator(`[data-testid="rf__edge-${id}"] .react-flow__edgeupdater-target`).boundingBox();
  assert.ok(box, `link ${id} has a grip at its input`);
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
};

test('a link end dragged off its input onto the canvas removes it; a click removes nothing; Ctrl+Z brings it back', async () => {
  await open(page, 'keys');
  const before = (await graph()).links;
  assert.ok(before.includes('model.vae>decode.vae'));

  // A click on the grip (no drag) leaves the link.
  const at = await grip('decode:vae');
  await page.mouse.click(at.x, at.y);
  assert.deepEqual((await graph()).links, before, 'a click removes nothing');

  // Dropped on the canvas below the nodes: removed; Ctrl+Z brings it back.
  await page.mouse.move(at.x, at.y);
  await page.mouse.down();
  await page.mouse.move(at.x - 40, at.y + 120, { steps: 5 });
  await page.mouse.move(at.x - 80, at.y + 260, { steps: 5 });
  await page.mouse.up();
  const off = (await graph()).links;
  assert.ok(!off.includes('model.vae>decode.vae'), `the link is gone: ${off}`);
  assert.equal(off.length, before.length - 1, 'only that link');
  assert.equal(await page.locator('.palette').count(), 0, 'no node search opens for a link pulled off');
  await focusCanvas();
  await page.keyboard.press('Control+z');
  assert.ok((await graph()).links.includes('model.vae>decode.vae'), 'one undo brings it back');

  // Dropped on another input of its type the link moves there: src/movelink.test.ts (the browser
  // version of that drag passed alone but failed twice in the full suite; see issue 21's note).
  await shot(page, 'link-pulled-off-and-back');
});

test('Ctrl+drag on the canvas box-selects, as Shift+drag', async () => {
  await open(page, 'keys');
  await focusCanvas();
  const a = await page.locator(node('positive')).boundingBox();
  const b = await page.locator(node('negative')).boundingBox();
  const start = { x: Math.min(a.x, b.x) - 12, y: Math.min(a.y, b.y) - 12 };
  const end = { x: Math.max(a.x + a.width, b.x + b.width) + 12, y: Math.max(a.y + a.height, b.y + b.height) + 12 };
  const onPane = await page.evaluate(({ x, y }) => !!document.elementFromPoint(x, y)?.closest('.react-flow__pane'), start);
  assert.ok(onPane, 'the drag starts on empty canvas');
  for (const key of ['Control', 'Shift']) {
    await focusCanvas();
    assert.deepEqual((await state()).selected, [], 'nothing selected first');
    await page.keyboard.down(key);
    await page.mouse.move(start.x, start.y);
    await page.mouse.down();
    await page.mouse.move((start.x + end.x) / 2, (start.y + end.y) / 2, { steps: 5 });
    await page.mouse.move(end.x, end.y, { steps: 5 });
    await page.mouse.up();
    await page.keyboard.up(key);
    assert.deepEqual((await state()).selected, ['negative', 'positive'], `${key}+drag selects the boxed nodes`);
  }
});
