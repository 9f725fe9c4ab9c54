// A node's size and socket positions are worked out from its type before it is drawn
// (web-ui/src/nodesize.ts), so React Flow draws only the nodes on screen when a workflow opens.
// This checks the worked-out figures against the drawn nodes: a CSS change that moves a socket
// or changes a row's height fails here, not as links ending beside their sockets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open } from './lib.mjs';

const file = join(WORKFLOWS, 'sizes.yaml');
let browser;
let page;

before(async () => {
  writeFileSync(
    file,
    `weft: 1
nodes:
  model: {type: LoadCheckpoint, name: tiny-shapes}
  text: {type: ConcatText, a: a red, b: circle, separator: " ", bypass: true}
  positive: {type: PromptEncode, encoder: $model.text_encoder, text: $text.text}
  negative: {type: PromptEncode, encoder: $model.text_encoder, text: ""}
  latent: {type: EmptyLatent, width: 64, height: 64}
  sample: {type: Sampler, model: $model.unet, positive: $positive.conditioning, negative: $negative.conditioning, latent: $latent.latent, seed: 42, steps: 4, cfg: 5.0, sampler: euler, schedule: karras}
  decode: {type: VaeDecode, vae: $model.vae, latent: $sample.latent}
  save: {type: SaveImage, image: $decode.image, prefix: sizes}
layout:
  model: [0, 0]
  text: [0, 300]
  positive: [320, -120]
  negative: [320, 120]
  latent: [320, 330]
  sample: [640, 0]
  decode: [960, 0]
  save: [1280, 0]
appearance:
  sample: {title: "The sampler", color: "#335533"}
`,
  );
  ({ browser, page } = await launch());
});

after(async () => {
  rmSync(file, { force: true });
  await browser?.close();
});

test('worked-out node sizes and sockets match the drawn nodes', async () => {
  await open(page, 'sizes');
  await page.waitForFunction(() => window.__weftValidating === 0);
  await page.waitForTimeout(300);
  const report = await page.evaluate(() => {
    const zoom = new DOMMatrixReadOnly(getComputedStyle(document.querySelector('.react-flow__viewport')).transform).a;
    return window.__weft.getState().nodes.map((n) => {
      const el = document.querySelector(`.react-flow__node[data-id="${n.id}"]`);
      const box = el.getBoundingClientRect();
      const drawn = [...el.querySelectorAll('.react-flow__handle')].map((h) => {
        const r = h.getBoundingClientRect();
        return { id: h.dataset.handleid, type: h.classList.contains('source') ? 'source' : 'target', x: (r.left - box.left) / zoom, y: (r.top - box.top) / zoom };
      });
      return { id: n.id, estimated: n.handles ?? null, measured: n.measured, size: { width: box.width / zoom, height: box.height / zoom }, drawn };
    });
  });
  assert.equal(report.length, 8);
  for (const n of report) {
    // A size that differed would have replaced the estimate (its `handles` dropped).
    assert.ok(n.estimated, `${n.id}: worked-out sockets kept (drawn ${JSON.stringify(n.size)}, worked out ${JSON.stringify(n.measured)})`);
    assert.ok(Math.abs(n.size.width - n.measured.width) < 1 && Math.abs(n.size.height - n.measured.height) < 1, `${n.id}: drawn ${JSON.stringify(n.size)} vs ${JSON.stringify(n.measured)}`);
    assert.equal(n.drawn.length, n.estimated.length, `${n.id}: every socket`);
    for (const d of n.drawn) {
      const e = n.estimated.find((h) => h.id === d.id && h.type === d.type);
      assert.ok(e, `${n.id}.${d.id} worked out`);
      assert.ok(Math.abs(e.x - d.x) < 1 && Math.abs(e.y - d.y) < 1, `${n.id}.${d.id} (${d.type}): drawn at ${d.x}, ${d.y}; worked out ${e.x}, ${e.y}`);
    }
  }
});
