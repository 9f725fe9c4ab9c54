// The mask painter: on a LoadImage node, paint a stroke, save; the node points at a new upload
// whose painted pixels have alpha 0 (ComfyUI's mask = 1 - alpha) and unpainted ones 255, the
// colour under the paint kept; the original file is left as it was. Painting a mask on the
// inpaint example and running it changes the painted pixels only.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { WORKFLOWS, launch, open, node, queueAndWait, shot } from './lib.mjs';

let browser;
let page;

before(async () => {
  ({ browser, page } = await launch());
});

after(async () => {
  await browser?.close();
});

/** RGBA of a PNG the browser decodes (its own decoder, not ours): alpha exact. */
const browserPixels = (url) =>
  page.evaluate(async (u) => {
    const blob = await (await fetch(u)).blob();
    const bitmap = await createImageBitmap(blob, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
    const c = new OffscreenCanvas(bitmap.width, bitmap.height);
    const g = c.getContext('2d');
    g.drawImage(bitmap, 0, 0);
    return { width: bitmap.width, height: bitmap.height, data: [...g.getImageData(0, 0, bitmap.width, bitmap.height).data] };
  }, url);

/** The RGBA rows of an 8-bit RGBA PNG whose rows are unfiltered (what the painter writes). */
function rawRgba(png) {
  let at = 8;
  const idat = [];
  let width = 0;
  while (at < png.length) {
    const len = png.readUInt32BE(at);
    const type = png.subarray(at + 4, at + 8).toString('latin1');
    if (type === 'IHDR') width = png.readUInt32BE(at + 8);
    if (type === 'IDAT') idat.push(png.subarray(at + 8, at + 8 + len));
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * 4 + 1;
  const rows = [];
  for (let y = 0; y * stride < raw.length; y++) {
    assert.equal(raw[y * stride], 0, 'unfiltered rows');
    rows.push(raw.subarray(y * stride + 1, (y + 1) * stride));
  }
  return { width, rows };
}

test('paint a stroke on the LoadImage picture, save: a new PNG, alpha 0 where painted', async () => {
  const original = join(WORKFLOWS, 'inputs', 'yellow-star.png');
  const before = readFileSync(original);
  await open(page, 'img2img');
  const button = page.locator(`${node('input')} [data-testid="open-mask-editor"]`);
  await button.click();
  const canvas = page.locator('[data-testid="mask-canvas"]');
  await canvas.waitFor();
  // The picture (64x64) is shown larger; a 6-pixel brush across the middle row, x 16 to 48.
  await page.locator('[data-testid="mask-size"]').fill('6');
  const box = await canvas.boundingBox();
  const px = (x, y) => ({ x: box.x + (x / 64) * box.width, y: box.y + (y / 64) * box.height });
  const from = px(16, 32);
  const to = px(48, 32);
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(to.x, to.y, { steps: 12 });
  await page.mouse.up();
  await shot(page, 'mask-painted');

  const oldPath = await page.evaluate(() => window.__weft.getState().nodes.find((n) => n.id === 'input').data.values.path);
  await page.locator('[data-testid="mask-save"]').click();
  await page.locator('[data-testid="mask-editor"]').waitFor({ state: 'detached' });
  const newPath = await page.evaluate(() => window.__weft.getState().nodes.find((n) => n.id === 'input').data.values.path);
  assert.notEqual(newPath, oldPath);
  assert.match(newPath, /upload-[0-9a-f]+\.png$/);
  await shot(page, 'mask-saved-node');

  const file = newPath.split('/').pop();
  const saved = await browserPixels(`/api/uploads/${file}`);
  const plain = await browserPixels('/api/uploads/yellow-star.png');
  assert.equal(saved.width, 64);
  assert.equal(saved.height, 64);
  const alpha = (x, y) => saved.data[(y * 64 + x) * 4 + 3];
  for (const x of [20, 32, 44]) assert.equal(alpha(x, 32), 0, `painted pixel (${x}, 32)`);
  for (const [x, y] of [[2, 2], [32, 10], [32, 54], [6, 32], [58, 32]]) assert.equal(alpha(x, y), 255, `unpainted pixel (${x}, ${y})`);
  // Colour: unpainted pixels as in the original; under the paint too (the file keeps it).
  const rgb = (d, x, y) => d.slice((y * 64 + x) * 4, (y * 64 + x) * 4 + 3);
  assert.deepEqual(rgb(saved.data, 2, 2), rgb(plain.data, 2, 2));
  const bytes = Buffer.from(await page.evaluate(async (u) => [...new Uint8Array(await (await fetch(u)).arrayBuffer())], `/api/uploads/${file}`));
  const raw = rawRgba(bytes);
  assert.deepEqual([...raw.rows[32].subarray(32 * 4, 32 * 4 + 3)], rgb(plain.data, 32, 32), 'the colour under the paint is kept');

  // The original is untouched, and the new file is what the node now loads.
  assert.deepEqual(readFileSync(original), before);
  assert.ok(readFileSync(join(WORKFLOWS, 'inputs', file)).equals(bytes));
  await page.evaluate(() => window.__weft.setState({ dirty: false }));
});

test('the node menu opens the painter too; eraser and clear undo the paint', async () => {
  await open(page, 'img2img');
  await page.locator(`${node('input')} .wn-kind`).click({ button: 'right' });
  await page.locator('[data-testid="ctx-mask"]').click();
  const canvas = page.locator('[data-testid="mask-canvas"]');
  await canvas.waitFor();
  const coverage = () =>
    canvas.evaluate((c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n;
    });
  const box = await canvas.boundingBox();
  const stroke = async () => {
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.5);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.5, { steps: 8 });
    await page.mouse.up();
  };
  await stroke();
  const painted = await coverage();
  assert.ok(painted > 50, `painted ${painted} pixels`);
  await page.locator('[data-testid="mask-eraser"]').click();
  await stroke();
  assert.ok((await coverage()) < painted / 4, 'the eraser takes the paint off');
  await page.locator('[data-testid="mask-brush"]').click();
  await stroke();
  await page.locator('[data-testid="mask-clear"]').click();
  assert.equal(await coverage(), 0);
  await page.keyboard.press('Escape');
  await page.locator('[data-testid="mask-editor"]').waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => window.__weft.getState().dirty), false, 'cancel changes nothing');
});

test('paint a mask on the inpaint example and run it: only the painted pixels change', async () => {
  await open(page, 'inpaint');
  await page.locator(`${node('input')} [data-testid="open-mask-editor"]`).click();
  const canvas = page.locator('[data-testid="mask-canvas"]');
  await canvas.waitFor();
  await page.locator('[data-testid="mask-clear"]').click();
  // A 10-pixel brush along the lower-left diagonal, away from the example's own square.
  await page.locator('[data-testid="mask-size"]').fill('10');
  const box = await canvas.boundingBox();
  const px = (x, y) => ({ x: box.x + (x / 64) * box.width, y: box.y + (y / 64) * box.height });
  const from = px(8, 40);
  const to = px(24, 56);
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(to.x, to.y, { steps: 10 });
  await page.mouse.up();
  await page.locator('[data-testid="mask-save"]').click();
  await page.locator('[data-testid="mask-editor"]').waitFor({ state: 'detached' });
  const path = await page.evaluate(() => window.__weft.getState().nodes.find((n) => n.id === 'input').data.values.path);
  const input = await browserPixels(`/api/uploads/${path.split('/').pop()}`);

  // Several minutes: CI's machine is slow and shared; the example samples 20 steps.
  assert.equal(await queueAndWait(page, 300_000), 'succeeded');
  const url = await page.evaluate(async () => {
    const run = await (await fetch(`/api/runs/${window.__weftRun.getState().run}`)).json();
    return run.outputs?.[0]?.url ?? null;
  });
  assert.ok(url, 'the run saved a picture');
  const output = await browserPixels(url);
  assert.equal(output.width, 64);
  assert.equal(output.height, 64);
  await shot(page, 'mask-inpainted');

  let kept = 0;
  let painted = 0;
  let changed = 0;
  for (let i = 0; i < 64 * 64; i++) {
    const alpha = input.data[i * 4 + 3];
    const rgb = (d) => [d[i * 4], d[i * 4 + 1], d[i * 4 + 2]];
    if (alpha === 255) {
      // Mask 0: ImageCompositeMasked gives back the input's pixel exactly.
      assert.deepEqual(rgb(output.data), rgb(input.data), `unmasked pixel ${i % 64}, ${Math.floor(i / 64)}`);
      kept++;
    } else if (alpha === 0) {
      painted++;
      const d = rgb(output.data).map((v, c) => Math.abs(v - rgb(input.data)[c]));
      if (Math.max(...d) > 8) changed++;
    }
  }
  assert.ok(painted > 50 && kept > 3000, `painted ${painted}, kept ${kept}`);
  assert.ok(changed > painted / 4, `${changed} of ${painted} painted pixels were repainted`);
  // The example's own square (centre) was cleared away: it is kept as it was.
  assert.equal(input.data[(32 * 64 + 32) * 4 + 3], 255, 'the cleared centre is unmasked');
  await page.evaluate(() => window.__weft.setState({ dirty: false }));
});
