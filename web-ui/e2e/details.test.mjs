// Small things people notice: the toolbar stays one row at 1280 px, the palette finds nodes by
// ComfyUI's names and plain words, LoadImage names an upload relative to the inputs folder, and
// no tooltip shows a path on the server's disk.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, shot } from './lib.mjs';

let browser;
let page;

before(async () => {
  ({ browser, page } = await launch());
});

after(async () => {
  await browser?.close();
});

test('the toolbar never wraps at 1280 px, even with a long run status', async () => {
  await page.setViewportSize({ width: 1280, height: 800 });
  await open(page, 'txt2img-then-img2img');
  await page.evaluate(() =>
    window.__weftRun.setState({
      status: 'succeeded',
      summary: 'succeeded in 123.45 s · 18 ran, 7 cached · and a status long enough to push anything off the row',
      queue: { running: null, queued: [1, 2, 3] },
    }),
  );
  await page.waitForTimeout(50);
  const boxes = await page.$$eval('.toolbar > *', (els) =>
    els.map((e) => {
      const r = e.getBoundingClientRect();
      // Lines of text in it: the distinct tops of its text's boxes.
      const range = document.createRange();
      range.selectNodeContents(e);
      const lines = new Set([...range.getClientRects()].filter((q) => q.width > 0).map((q) => Math.round(q.top))).size;
      return { what: e.textContent.trim().slice(0, 20) || e.className, top: r.top, bottom: r.bottom, right: r.right, width: r.width, lines };
    }),
  );
  const bar = await page.locator('.toolbar').boundingBox();
  for (const b of boxes) {
    if (b.width === 0) continue;
    assert.ok(b.right <= 1280 + 0.5, `${b.what} ends at ${b.right} px, past the window`);
    assert.ok(b.top >= bar.y - 0.5 && b.bottom <= bar.y + bar.height + 0.5, `${b.what} is outside the toolbar's one row`);
    assert.ok(b.lines <= 1, `${b.what} wraps onto ${b.lines} lines`);
  }
  assert.ok(bar.height < 44, `toolbar is ${bar.height} px high (one row)`);
  // The History button and connection dot are still there, at the right end.
  assert.ok((await page.locator('[data-testid="history-toggle"]').boundingBox()).x > 1000);
  await shot(page, 'toolbar-1280');
  await page.setViewportSize({ width: 1600, height: 1000 });
});

test('the palette finds nodes by ComfyUI names and words: upscale, KSampler, CLIPTextEncode', async () => {
  await open(page, 'txt2img');
  const search = async (q) => {
    await page.locator('[data-testid="add-node"]').click();
    await page.locator('.palette input').fill(q);
    const hits = await page.$$eval('.palette li[data-testid^="palette-"]', (els) => els.map((e) => e.dataset.testid.slice('palette-'.length)));
    return hits;
  };
  const up = await search('upscale');
  assert.ok(up.slice(0, 3).includes('ImageScale'), `upscale: ${up}`);
  assert.ok(up.slice(0, 3).includes('UpscaleImage'), `upscale: ${up}`);
  await shot(page, 'palette-upscale');
  await page.keyboard.press('Escape');
  assert.equal((await search('KSampler'))[0], 'Sampler');
  assert.equal(await page.locator('[data-testid="palette-Sampler"] [data-testid="palette-aka"]').innerText(), '= KSampler');
  await page.keyboard.press('Escape');
  assert.equal((await search('CLIPTextEncode'))[0], 'PromptEncode');
  // Picking by alias adds the weft node.
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => window.__weft.getState().nodes.some((n) => n.data.kind === 'PromptEncode' && n.id !== 'positive' && n.id !== 'negative'));
});

test('LoadImage names an upload relative to the inputs folder; no server path in any tooltip', async () => {
  await open(page, 'img2img');
  const star = readFileSync(join(WORKFLOWS, 'inputs', 'yellow-star.png'));
  // A different image than any in the folder: the upload is a new file.
  const bytes = Buffer.from(star);
  const upload = page.locator(`${node('input')} input[type="file"]`);
  await upload.setInputFiles({ name: 'my star.png', mimeType: 'image/png', buffer: bytes });
  await page.waitForFunction(() => /upload-[0-9a-f]+\.png$/.test(String(window.__weft.getState().nodes.find((n) => n.id === 'input').data.values.path)));
  const select = page.locator(`${node('input')} select[aria-label="path"]`);
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-testid="node-input"] select[aria-label="path"]');
    return s && /^upload-[0-9a-f]+\.png$/.test(s.selectedOptions[0]?.textContent ?? '');
  });
  const shownOptions = await select.evaluate((s) => [...s.options].map((o) => o.textContent));
  for (const o of shownOptions) assert.ok(!o.includes(WORKFLOWS), `option shows a server path: ${o}`);
  assert.ok(shownOptions.includes('yellow-star.png'), `options: ${shownOptions}`);
  // The value written is still the path the server resolves.
  assert.ok((await select.inputValue()).endsWith('.png'));
  await shot(page, 'loadimage-upload-name');

  // A library subgraph's type names its file relative to the workflows folder.
  await open(page, 'txt2img-then-img2img');
  const titles = await page.$$eval('[title]', (els) => els.map((e) => e.getAttribute('title')));
  for (const t of titles) assert.ok(!t.includes(WORKFLOWS) && !/\/tmp\//.test(t), `tooltip shows a server path: ${t}`);
  assert.ok(titles.some((t) => t.includes('subgraph lib/Txt2Img.yaml')), 'the subgraph tooltip names lib/Txt2Img.yaml');
});
