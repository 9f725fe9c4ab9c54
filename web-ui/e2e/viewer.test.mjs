// The image viewer: a result image opens full size in the page; wheel zoom, drag pan, arrows
// step through the run's images, Compare shows two with a slider; Esc closes. The History
// panel's thumbnails open it too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, queueAndWait, shot } from './lib.mjs';

const file = join(WORKFLOWS, 'viewer.yaml');
let browser;
let page;

// Two samplers with different seeds, each saved: one run, two images.
before(async () => {
  const base = readFileSync(join(WORKFLOWS, 'txt2img.yaml'), 'utf8');
  assert.match(base, /steps: 20/);
  const two = base
    .replace(/steps: 20/, 'steps: 4')
    .replace(/\nlayout:[\s\S]*$/, '\n')
    .concat(`  sample_b:
    type: Sampler
    model: $model.unet
    positive: $positive.conditioning
    negative: $negative.conditioning
    latent: $latent.latent
    seed: 7
    steps: 4
    cfg: 5.0
  decode_b:
    type: VaeDecode
    vae: $model.vae
    latent: $sample_b.latent
  save_b:
    type: SaveImage
    image: $decode_b.image
    prefix: viewer_b
`);
  writeFileSync(file, two);
  ({ browser, page } = await launch());
});

after(async () => {
  rmSync(file, { force: true });
  await browser?.close();
});

const viewer = '[data-testid="viewer"]';
const zoomText = async () => parseInt(await page.locator('[data-testid="viewer-zoom"]').innerText(), 10);
const layerBox = () => page.locator('[data-testid="viewer-layer"]').boundingBox();

test('a result image opens in the viewer: zoom, pan, step, compare, Esc', async () => {
  await open(page, 'viewer');
  assert.equal(await queueAndWait(page), 'succeeded');
  await page.waitForSelector(`${node('save_b')} img.wn-result`);
  await page.locator(`${node('save')} img.wn-result`).first().click();
  await page.locator(viewer).waitFor();
  // Opened in the page (no new tab), fitted: a 64 px image drawn far larger than in the node.
  assert.equal(page.context().pages().length, 1);
  assert.equal(await page.locator('[data-testid="viewer-count"]').innerText(), '1 / 2');
  assert.equal(await page.locator('[data-testid="viewer-label"]').innerText(), 'save');
  await page.waitForFunction(() => document.querySelector('[data-testid="viewer-image"]')?.naturalWidth === 64);
  const fitted = await layerBox();
  assert.ok(fitted.width > 400, `fitted width ${fitted.width}`);
  await shot(page, 'viewer-open');

  // 1:1 is the file's own pixels; the wheel zooms in about the pointer.
  await page.locator('[data-testid="viewer-1to1"]').click();
  assert.equal(await zoomText(), 100);
  assert.equal(Math.round((await layerBox()).width), 64);
  const stage = await page.locator('[data-testid="viewer-stage"]').boundingBox();
  const cx = stage.x + stage.width / 2;
  const cy = stage.y + stage.height / 2;
  await page.mouse.move(cx, cy);
  await page.mouse.wheel(0, -400);
  await page.waitForFunction(() => parseInt(document.querySelector('[data-testid="viewer-zoom"]').textContent, 10) > 150);
  const zoomed = await layerBox();
  // The image point under the pointer (its centre) stayed under it.
  assert.ok(Math.abs(zoomed.x + zoomed.width / 2 - cx) < 2, `centre x ${zoomed.x + zoomed.width / 2} vs ${cx}`);
  // A drag pans by the distance dragged.
  await page.mouse.down();
  await page.mouse.move(cx + 120, cy + 40, { steps: 6 });
  await page.mouse.up();
  const panned = await layerBox();
  assert.ok(Math.abs(panned.x - zoomed.x - 120) < 2 && Math.abs(panned.y - zoomed.y - 40) < 2, `panned ${panned.x - zoomed.x}, ${panned.y - zoomed.y}`);

  // The arrows step through the run's images (wrapping round); canvas keys wait meanwhile.
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.locator('[data-testid="viewer-count"]').innerText(), '2 / 2');
  assert.equal(await page.locator('[data-testid="viewer-label"]').innerText(), 'save_b');
  assert.match(await page.locator('[data-testid="viewer-image"]').getAttribute('src'), /viewer_b/);
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.locator('[data-testid="viewer-count"]').innerText(), '1 / 2');
  await page.keyboard.press('ArrowLeft');
  assert.equal(await page.locator('[data-testid="viewer-count"]').innerText(), '2 / 2');

  // Compare: the other image over it, cut at the slider.
  await page.locator('[data-testid="viewer-fit"]').click();
  await page.locator('[data-testid="viewer-compare"]').click();
  const b = page.locator('[data-testid="viewer-image-b"]');
  await b.waitFor();
  assert.match(await b.getAttribute('src'), /\/txt2img/);
  assert.equal(await b.evaluate((el) => el.style.clipPath), 'inset(0px 0px 0px 50%)');
  await page.locator('[data-testid="viewer-slider"]').fill('25');
  assert.equal(await b.evaluate((el) => el.style.clipPath), 'inset(0px 0px 0px 25%)');
  // The two images are drawn in the same box.
  const boxA = await page.locator('[data-testid="viewer-image"]').boundingBox();
  const boxB = await b.boundingBox();
  assert.deepEqual([boxA.x, boxA.y, boxA.width, boxA.height].map(Math.round), [boxB.x, boxB.y, boxB.width, boxB.height].map(Math.round));
  // The pixels left and right of the cut come from different images (two seeds differ).
  const sides = await page.evaluate(async () => {
    const read = async (img) => {
      const c = document.createElement('canvas');
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      return g.getImageData(0, 0, c.width, c.height).data;
    };
    const a = await read(document.querySelector('[data-testid="viewer-image"]'));
    const b = await read(document.querySelector('[data-testid="viewer-image-b"]'));
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff += Math.abs(a[i] - b[i]);
    return diff;
  });
  assert.ok(sides > 0, 'the compared images differ');
  await shot(page, 'viewer-compare');

  await page.keyboard.press('Escape');
  await page.locator(viewer).waitFor({ state: 'detached' });
  // Esc closed the viewer only: the canvas is as it was.
  assert.equal(await page.evaluate(() => window.__weft.getState().nodes.length), 10);
});

test('a History thumbnail opens the viewer on that run', async () => {
  await page.locator('[data-testid="history-toggle"]').click();
  const thumbs = page.locator('[data-testid="history"] .h-run').first().locator('.h-imgs img');
  await thumbs.first().waitFor();
  assert.equal(await thumbs.count(), 2);
  await thumbs.nth(1).click();
  await page.locator(viewer).waitFor();
  assert.equal(await page.locator('[data-testid="viewer-count"]').innerText(), '2 / 2');
  assert.match(await page.locator('[data-testid="viewer-label"]').innerText(), /^save(_b)? · run #\d+$/);
  await page.locator('[data-testid="viewer-close"]').click();
  await page.locator(viewer).waitFor({ state: 'detached' });
  await page.locator('[data-testid="history-toggle"]').click();
});
