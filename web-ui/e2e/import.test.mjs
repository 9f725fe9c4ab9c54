// ComfyUI files dropped on the canvas (and picked with Import ComfyUI…): the server's importer
// converts them, the editor opens the graph as a new unsaved workflow. scripts/test-ui.sh runs it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { deflateSync, crc32 } from 'node:zlib';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, queueAndWait, shot } from './lib.mjs';

const COMFY = new URL('../../tests/comfy/', import.meta.url).pathname;
const fixture = (name) => readFileSync(join(COMFY, name), 'utf8');
const wf = (name) => join(WORKFLOWS, `${name}.yaml`);

let browser;
let page;

before(async () => {
  assert.ok(WORKFLOWS && existsSync(wf('txt2img')), 'WEFT_WORKFLOWS must name a copy of workflows/');
  ({ browser, page } = await launch());
});
after(async () => {
  await browser?.close();
});

/** A 2x2 grey PNG with these tEXt chunks, as ComfyUI writes `prompt` and `workflow`. */
function png(texts) {
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(2, 0);
  ihdr.writeUInt32BE(2, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  const rows = Buffer.from([0, 128, 128, 0, 128, 128]); // filter byte + 2 pixels, twice
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk('IHDR', ihdr),
    ...Object.entries(texts).map(([k, v]) => chunk('tEXt', Buffer.from(`${k}\0${v}`, 'latin1'))),
    chunk('IDAT', deflateSync(rows)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Drops a file on the canvas with a synthetic DataTransfer, as a drag from the desktop would. */
async function drop(name, type, bytes) {
  const dt = await page.evaluateHandle(
    ({ name, type, data }) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(data)], name, { type }));
      return dt;
    },
    { name, type, data: [...bytes] },
  );
  await page.dispatchEvent('[data-testid="canvas"]', 'drop', { dataTransfer: dt });
}

const kinds = () =>
  page.evaluate(() => Object.fromEntries(window.__weft.getState().nodes.map((n) => [n.id, n.data.kind])));

async function toast(re) {
  await page.waitForFunction((src) => new RegExp(src).test(document.querySelector('[data-testid="toast"]')?.textContent ?? ''), re.source, {
    timeout: 10_000,
  });
  return page.locator('[data-testid="toast"]').innerText();
}

/** No two node boxes on screen overlap (the graph is laid out, not stacked); reroute dots are
 * no node boxes (they sit on links, which may pass under a node). */
async function assertNoOverlap() {
  const boxes = await page.locator('.react-flow__node-weft').evaluateAll((els) =>
    els.map((e) => {
      const r = e.getBoundingClientRect();
      return { id: e.dataset.id, x: r.x, y: r.y, w: r.width, h: r.height };
    }),
  );
  assert.ok(boxes.length > 1, `node boxes on screen: ${boxes.length}`);
  for (const a of boxes)
    for (const b of boxes)
      if (a.id < b.id) {
        const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
        assert.ok(!overlap, `${a.id} overlaps ${b.id}: ${JSON.stringify([a, b])}`);
      }
}

const API_KINDS = {
  checkpoint_4: 'LoadCheckpoint',
  latent_5: 'EmptyLatent',
  positive_6: 'PromptEncode',
  negative_7: 'PromptEncode',
  ksampler_3: 'Sampler',
  decode_8: 'VaeDecode',
  save_9: 'SaveImage',
};

test('drop a ComfyUI API JSON: the graph appears laid out, unsaved; Save names it; it runs', async () => {
  writeFileSync(wf('import-start'), 'weft: 1\nnodes: {}\n');
  await open(page, 'import-start');
  await drop('01_txt2img_default.json', 'application/json', Buffer.from(fixture('01_txt2img_default.json')));
  await page.waitForFunction(() => window.__weft.getState().nodes.length === 7);
  assert.deepEqual(await kinds(), API_KINDS);
  assert.equal(await page.locator('.react-flow__node').count(), 7);
  assert.equal(await page.locator(`${node('ksampler_3')} .wn-kind`).innerText(), 'Sampler');
  assert.equal(await page.locator(`${node('positive_6')} textarea`).inputValue(), 'a red circle on a blue background');
  assert.equal((await page.evaluate(() => window.__weft.getState().edges)).length, 9);
  const st = await page.evaluate(() => {
    const s = window.__weft.getState();
    return { name: s.name, dirty: s.dirty, suggest: s.suggest };
  });
  assert.deepEqual(st, { name: null, dirty: true, suggest: '01_txt2img_default' });
  console.log('toast:', await toast(/imported 7 nodes/));
  await page.waitForFunction(() => window.__weftValidating === 0);
  await assertNoOverlap();
  await shot(page, '12-comfy-api-json-dropped');

  // The checkpoint ComfyUI names is not here: pick tiny-shapes, then Save asks for the name.
  await page.locator(`${node('checkpoint_4')} [data-input="name"] select`).selectOption('tiny-shapes');
  await page.locator('[data-testid="save"]').click();
  const input = page.locator('.dialog input');
  assert.equal(await input.inputValue(), '01_txt2img_default');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => window.__weft.getState().name === '01_txt2img_default' && !window.__weft.getState().dirty);
  const yaml = readFileSync(wf('01_txt2img_default'), 'utf8');
  assert.match(yaml, /type: Sampler/);
  assert.match(yaml, /name: tiny-shapes/);
  assert.match(yaml, /layout:/);

  // And it runs (tiny-shapes, 6 steps at 64x64).
  assert.equal(await queueAndWait(page), 'succeeded');
  await page.waitForSelector(`${node('save_9')} img.wn-result`, { timeout: 30_000 });
  await shot(page, '13-comfy-import-ran');
});

test('drop a ComfyUI PNG: its UI workflow with ComfyUI positions; the name suggested is free', async () => {
  // The editor holds the saved import (clean), so no discard question.
  const bytes = png({ prompt: fixture('12_ui_txt2img.api.json'), workflow: fixture('12_ui_txt2img.json') });
  await drop('01_txt2img_default.png', 'image/png', bytes);
  await page.waitForFunction(() => window.__weft.getState().name === null && window.__weft.getState().nodes.length === 8);
  // The UI workflow's muted preview comes along muted (ComfyUI's mode 2), as weft's SaveImage.
  assert.deepEqual(await kinds(), { ...API_KINDS, preview_13: 'SaveImage' });
  assert.equal(await page.evaluate(() => window.__weft.getState().nodes.find((n) => n.id === 'preview_13').data.mode), 'mute');
  const pos = await page.evaluate(() => window.__weft.getState().nodes.find((n) => n.id === 'ksampler_3').position);
  // ComfyUI has it at (863, 186); x spread so weft's wider nodes do not overlap.
  assert.equal(pos.y, 186);
  assert.ok(pos.x > 863 && pos.x < 863 * 2.5, JSON.stringify(pos));
  // 01_txt2img_default exists now: the suggestion does not replace it.
  assert.equal(await page.evaluate(() => window.__weft.getState().suggest), '01_txt2img_default-2');
  console.log('toast:', await toast(/UI format/));
  await page.waitForFunction(() => window.__weftValidating === 0);
  await assertNoOverlap();
  await shot(page, '14-comfy-png-dropped');

  // A PNG carrying only the API prompt imports too.
  await page.evaluate(() => window.__weft.setState({ dirty: false }));
  await drop('prompt-only.png', 'image/png', png({ prompt: fixture('04_img2img.json') }));
  await page.waitForFunction(() => window.__weft.getState().nodes.some((n) => n.data.kind === 'VaeEncode'));
  console.log('img2img from a prompt-only PNG:', Object.values(await kinds()).join(', '));
});

test('a plain PNG, garbage and unknown node types say why, and the canvas stays', async () => {
  await page.evaluate(() => window.__weft.setState({ dirty: false }));
  const before = await kinds();
  await drop('photo.png', 'image/png', png({ Software: 'a paint program' }));
  const plain = await toast(/plain image/);
  console.log('plain PNG:', plain);
  assert.match(plain, /no ComfyUI workflow in this PNG/);
  assert.deepEqual(await kinds(), before);

  await drop('notes.json', 'application/json', Buffer.from('{"hello": '));
  console.log('garbage:', await toast(/cannot import notes\.json: not a ComfyUI workflow/));

  await drop('lora.json', 'application/json', Buffer.from(fixture('errors/unknown_types.json')));
  const unknown = await toast(/does not import/);
  console.log('unknown types:', unknown.split('\n').slice(0, 2).join(' | '));
  assert.match(unknown, /HypernetworkLoader \(nodes 10, 12\), CLIPSetLastLayer \(node 11\)/);
  await shot(page, '15-comfy-unknown-types');
  assert.deepEqual(await kinds(), before);
});

test('Import ComfyUI… in the toolbar picks a file', async () => {
  // The last run's summary belongs to the workflow before: the import clears it.
  await page.evaluate(() => {
    window.__weft.setState({ dirty: false });
    window.__weftRun.setState({ status: 'done', summary: 'done in 1.0 s · 3 ran, 0 cached' });
  });
  assert.match(await page.locator('[data-testid="run-status"]').innerText(), /3 ran/);
  await page.locator('[data-testid="import-comfy-file"]').setInputFiles({
    name: 'hires.json',
    mimeType: 'application/json',
    buffer: Buffer.from(fixture('05_hires_fix.json')),
  });
  await page.waitForFunction(() => window.__weft.getState().suggest === 'hires');
  const got = Object.values(await kinds());
  console.log('hires fix:', got.join(', '));
  assert.ok(got.filter((k) => k === 'Sampler').length >= 2, got.join(', '));
  assert.equal(await page.locator('[data-testid="run-status"]').innerText(), '');
});
