// The editor in a real browser against a real `weft serve` (scripts/test-ui.sh starts both).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { BASE, WORKFLOWS, launch, open, node, handle, drag, edges, shot, queueAndWait as queueRunAndWait } from './lib.mjs';

let browser;
let page;
const wf = (name) => join(WORKFLOWS, `${name}.yaml`);

before(async () => {
  assert.ok(WORKFLOWS && existsSync(wf('txt2img')), 'WEFT_WORKFLOWS must name a copy of workflows/');
  ({ browser, page } = await launch());
});
after(async () => {
  await browser?.close();
});

/** Clicks Queue and waits for that run (not the last one) to finish. */
async function queueAndWait(expect = 'succeeded') {
  assert.equal(await queueRunAndWait(page), expect);
}

const state = (id) => page.evaluate((i) => window.__weftRun.getState().nodes[i]?.state ?? null, id);

test('build the txt2img graph from an empty canvas with the palette', async () => {
  writeFileSync(wf('built'), 'weft: 1\nnodes: {}\n');
  await open(page, 'built');
  assert.equal(await page.locator('.react-flow__node').count(), 0);
  const place = [
    ['LoadCheckpoint', 60, 120],
    ['PromptEncode', 400, 90],
    ['PromptEncode', 400, 400],
    ['EmptyLatent', 400, 700],
    ['Sampler', 740, 90],
    ['VaeDecode', 1080, 90],
    ['SaveImage', 1080, 400],
  ];
  for (const [type, x, y] of place) {
    await page.mouse.dblclick(x, y);
    await page.locator('.palette input').fill(type === 'VaeDecode' ? 'decode' : type.toLowerCase());
    await page.keyboard.press('Enter');
    await page.locator('.palette').waitFor({ state: 'detached' });
  }
  assert.equal(await page.locator('.react-flow__node').count(), 7);
  const links = [
    ['load_checkpoint', 'text_encoder', 'prompt_encode', 'encoder'],
    ['load_checkpoint', 'text_encoder', 'prompt_encode_2', 'encoder'],
    ['load_checkpoint', 'unet', 'sampler', 'model'],
    ['prompt_encode', 'conditioning', 'sampler', 'positive'],
    ['prompt_encode_2', 'conditioning', 'sampler', 'negative'],
    ['empty_latent', 'latent', 'sampler', 'latent'],
    ['load_checkpoint', 'vae', 'vae_decode', 'vae'],
    ['sampler', 'latent', 'vae_decode', 'latent'],
    ['vae_decode', 'image', 'save_image', 'image'],
  ];
  for (const [s, o, t, i] of links) await drag(page, handle(s, o, 'source'), handle(t, i, 'target'));
  const got = await edges(page);
  for (const [s, o, t, i] of links) assert.ok(got.includes(`${s}.${o}>${t}.${i}`), `missing ${s}.${o} -> ${t}.${i}: ${got}`);
  await page.locator(`${node('prompt_encode')} textarea`).fill('a yellow square on a black background');
  await page.keyboard.press('Control+s');
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  const yaml = readFileSync(wf('built'), 'utf8');
  assert.match(yaml, /model: \$load_checkpoint\.unet/);
  assert.match(yaml, /text: a yellow square on a black background/);
  await shot(page, '01-built-from-palette');
});

test('a link between incompatible sockets is refused', async () => {
  const before = await edges(page);
  await drag(page, handle('empty_latent', 'latent', 'source'), handle('vae_decode', 'vae', 'target'));
  assert.deepEqual(await edges(page), before);
  // And an image into a conditioning input.
  await drag(page, handle('vae_decode', 'image', 'source'), handle('sampler', 'positive', 'target'));
  assert.deepEqual(await edges(page), before);
});

test('set the prompt, queue: per-node progress and the result image on the save node', async () => {
  await open(page, 'txt2img');
  await page.locator(`${node('positive')} textarea`).fill('a red circle on a white background');
  const seen = page.waitForFunction(
    () => {
      const s = window.__weftRun.getState().nodes.sample;
      if (s?.state === 'running' && s.total) window.__sawStep = Math.max(window.__sawStep ?? 0, s.step ?? 0);
      if (s?.preview && document.querySelector('[data-testid="node-sample"] img.wn-preview')) window.__sawPreview = true;
      return window.__sawStep > 0 && document.querySelector('[data-testid="node-sample"] .bar');
    },
    null,
    { polling: 'raf', timeout: 60_000 },
  );
  await page.locator('[data-testid="queue"]').click();
  await seen;
  await shot(page, '02-running');
  // Step previews (the server asks for one every few steps) are drawn on the sampler while it runs.
  await page
    .waitForFunction(() => {
      const s = window.__weftRun.getState().nodes.sample;
      if (s?.preview && document.querySelector('[data-testid="node-sample"] img.wn-preview')) window.__sawPreview = true;
      return window.__sawPreview || s?.state !== 'running';
    }, null, { polling: 'raf', timeout: 60_000 })
    .catch(() => {});
  if (await page.evaluate(() => window.__sawPreview)) await shot(page, '02b-step-preview');
  console.log('step preview seen on the sampler:', await page.evaluate(() => !!window.__sawPreview));
  await page.waitForSelector(`${node('save')} img.wn-result`, { timeout: 60_000 });
  await page.waitForFunction(() => window.__weftRun.getState().status === 'succeeded', null, { timeout: 60_000 });
  const w = await page.locator(`${node('save')} img.wn-result`).first().evaluate(async (img) => {
    await img.decode();
    return img.naturalWidth;
  });
  assert.ok(w > 0, 'result image decodes');
  for (const id of ['model', 'positive', 'sample', 'decode', 'save']) assert.equal(await state(id), 'done', id);
  assert.match(await page.locator(`${node('sample')} .st-done`).innerText(), /done \d/i);
  await page.locator('[data-testid="history-toggle"]').click();
  await page.waitForSelector('[data-testid="history"] .h-imgs img');
  await shot(page, '03-finished-run');
  await page.locator('[data-testid="history-toggle"]').click();
});

test('change only the seed: checkpoint and prompt nodes come from the cache', async () => {
  await page.locator(`${node('sample')} [data-input="seed"] input`).fill('7');
  await queueAndWait();
  for (const id of ['model', 'positive', 'negative', 'latent']) assert.equal(await state(id), 'cached', id);
  for (const id of ['sample', 'decode', 'save']) assert.equal(await state(id), 'done', id);
  assert.equal(await page.locator(`${node('model')} .st-cached`).count(), 1);
  const why = await page.evaluate(() => window.__weftRun.getState().nodes.sample.why ?? []);
  console.log('sample why:', why);
  await shot(page, '04-cached-after-seed');
  // The README's picture: the whole graph after that run, at a modest size.
  await page.setViewportSize({ width: 1280, height: 760 });
  await page.locator('[data-testid="canvas"]').focus();
  await page.keyboard.press('.');
  await page.waitForTimeout(300);
  await shot(page, 'editor');
  await page.setViewportSize({ width: 1600, height: 1000 });
});

test('an invalid value shows its error on that node and input', async () => {
  await page.locator(`${node('sample')} [data-input="steps"] input`).fill('0');
  const diag = page.locator(`${node('sample')} [data-input="steps"] [data-testid="diagnostic"]`);
  await diag.waitFor({ timeout: 5000 });
  console.log('diagnostic:', await diag.innerText());
  assert.equal(await page.locator(`${node('sample')}[data-invalid]`).count(), 1);
  await shot(page, '05-invalid-steps');
  await page.keyboard.press('Control+z'); // back to a valid value (focus is in the field: text undo)
  await page.locator(`${node('sample')} [data-input="steps"] input`).fill('20');
});

test('edit the YAML file on disk: the canvas follows', async () => {
  await open(page, 'txt2img');
  const text = readFileSync(wf('txt2img'), 'utf8');
  const t0 = Date.now();
  writeFileSync(wf('txt2img'), text.replace(/text: a red circle on a blue background/, 'text: a green triangle on a grey background'));
  await page.waitForFunction(
    () => document.querySelector('[data-testid="node-positive"] textarea')?.value === 'a green triangle on a grey background',
    null,
    { timeout: 5000 },
  );
  const ms = Date.now() - t0;
  console.log(`canvas followed the file in ${ms} ms`);
  assert.ok(ms < 1500, `followed in ${ms} ms`);
  assert.equal(await page.evaluate(() => window.__weft.getState().dirty), false);

  // With unsaved edits: a conflict bar, never a silent overwrite.
  await page.locator(`${node('negative')} textarea`).fill('blurry');
  writeFileSync(wf('txt2img'), text);
  await page.locator('[data-testid="conflict"]').waitFor({ timeout: 5000 });
  await shot(page, '06-conflict-bar');
  await page.getByRole('button', { name: 'Reload from disk' }).click();
  await page.waitForFunction(() => document.querySelector('[data-testid="node-negative"] textarea')?.value === '');

  // A broken file shows its located errors instead of a stale graph.
  writeFileSync(wf('txt2img'), text.replace('nodes:\n', 'nodes:\n  oops: [unclosed\n'));
  await page.locator('[data-testid="broken"]').waitFor({ timeout: 5000 });
  console.log('broken file:', (await page.locator('[data-testid="broken"] ul').innerText()).slice(0, 200));
  await shot(page, '07-broken-file');
  // Saving then must not replace the text on disk (issue 21): refused, and the bar asks.
  await page.locator('[data-testid="save"]').click();
  await page.locator('[data-testid="conflict"]').waitFor({ timeout: 5000 });
  await page.waitForFunction(() => window.__weft.getState().message?.text.includes('does not read as a workflow'));
  assert.ok(readFileSync(wf('txt2img'), 'utf8').includes('oops: [unclosed'), 'the disk edit survives a save');
  await shot(page, '07b-save-over-broken-refused');
  writeFileSync(wf('txt2img'), text);
  await page.locator('[data-testid="broken"]').waitFor({ state: 'detached', timeout: 5000 });
  await page.locator('[data-testid="conflict"]').waitFor({ state: 'detached', timeout: 5000 });
});

test('save in the browser: the file holds the expected YAML and only the changed lines differ', async () => {
  await open(page, 'txt2img');
  const hand = readFileSync(wf('txt2img'), 'utf8');
  // A save with no edit: the server writes its canonical YAML. Say what that alone changes.
  await page.locator('[data-testid="save"]').click();
  await page.waitForFunction(() => window.__weft.getState().message?.text.startsWith('saved'));
  const original = readFileSync(wf('txt2img'), 'utf8');
  const lost = hand.split('\n').filter((l) => !original.split('\n').includes(l));
  console.log(`a save without edits changed ${lost.length} line(s) of the hand-written file: ${JSON.stringify(lost)}`);
  assert.ok(lost.every((l) => l.startsWith('#')), 'only comment lines may differ after a no-op save');
  // Move the decode node and change cfg.
  const box = await page.locator(`${node('decode')} .wn-head`).boundingBox();
  await page.mouse.move(box.x + 40, box.y + 10);
  await page.mouse.down();
  await page.mouse.move(box.x + 80, box.y + 70, { steps: 6 });
  await page.mouse.up();
  await page.locator(`${node('sample')} [data-input="cfg"] input`).fill('6.5');
  await page.locator('[data-testid="save"]').click();
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  const saved = readFileSync(wf('txt2img'), 'utf8');
  assert.match(saved, /cfg: 6\.5/);
  assert.match(saved, /text: a red circle on a blue background/);
  let diff = '';
  try {
    execFileSync('git', ['diff', '--no-index', '--unified=0', '--no-color', '--', '-', wf('txt2img')], { input: original });
  } catch (e) {
    diff = e.stdout.toString();
  }
  const changed = diff.split('\n').filter((l) => /^[-+][^-+]/.test(l) || l === '-' || l === '+');
  console.log('git diff of the save:\n' + changed.join('\n'));
  const norm = changed.map((l) => l.replace(/\s+/g, ' ').trim());
  assert.deepEqual(norm.filter((l) => l.startsWith('-')), ['- cfg: 5.0', '- decode: [960, 0]']);
  const plus = norm.filter((l) => l.startsWith('+'));
  assert.equal(plus.length, 2, plus.join('\n'));
  assert.match(plus[0], /^\+ cfg: 6\.5$/);
  assert.match(plus[1], /^\+ decode: \[\d+, \d+\]$/);
});

test('drop a weft PNG: its workflow is back', async () => {
  const url = await page.evaluate(async () => {
    const runs = await (await fetch('/api/runs?limit=5')).json();
    for (const r of runs.runs) {
      const d = r.outputs ? r : await (await fetch(`/api/runs/${r.id}`)).json();
      if (d.outputs?.length) return d.outputs[0].url;
    }
    return null;
  });
  assert.ok(url, 'a run left a PNG');
  writeFileSync(wf('empty'), 'weft: 1\nnodes: {}\n');
  await open(page, 'empty');
  assert.equal(await page.locator('.react-flow__node').count(), 0);
  const dt = await page.evaluateHandle(async (u) => {
    const bytes = await (await fetch(u)).arrayBuffer();
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'weft-result.png', { type: 'image/png' }));
    return dt;
  }, url);
  await page.dispatchEvent('[data-testid="canvas"]', 'drop', { dataTransfer: dt });
  await page.waitForFunction(() => window.__weft.getState().nodes.length > 0);
  const ids = await page.evaluate(() => window.__weft.getState().nodes.map((n) => n.id).sort());
  assert.deepEqual(ids, ['decode', 'latent', 'model', 'negative', 'positive', 'sample', 'save']);
  const prompt = await page.locator(`${node('positive')} textarea`).inputValue();
  console.log('prompt from the PNG:', prompt);
  assert.ok(prompt.length > 0);
  assert.equal((await edges(page)).length, 9);
  await shot(page, '08-png-dropped');
});

test('editing: delete, undo, redo, copy and paste', async () => {
  await open(page, 'txt2img');
  const count = () => page.evaluate(() => [window.__weft.getState().nodes.length, window.__weft.getState().edges.length]);
  assert.deepEqual(await count(), [7, 9]);
  await page.locator(`${node('latent')} .wn-head`).click();
  await page.keyboard.press('Delete');
  assert.deepEqual(await count(), [6, 8]);
  await page.keyboard.press('Control+z');
  assert.deepEqual(await count(), [7, 9]);
  await page.keyboard.press('Control+y');
  assert.deepEqual(await count(), [6, 8]);
  await page.keyboard.press('Control+Shift+z');
  assert.deepEqual(await count(), [6, 8]);
  await page.keyboard.press('Control+z');
  assert.deepEqual(await count(), [7, 9]);
  // Copy two linked nodes: the copy keeps the link between them, not the ones from outside.
  await page.locator(`${node('sample')} .wn-head`).click();
  await page.locator(`${node('decode')} .wn-head`).click({ modifiers: ['Control'] });
  await page.keyboard.press('Control+c');
  await page.mouse.move(700, 850);
  await page.keyboard.press('Control+v');
  assert.deepEqual(await count(), [9, 10]);
  const pasted = await page.evaluate(() => window.__weft.getState().nodes.filter((n) => n.selected).map((n) => n.id).sort());
  assert.deepEqual(pasted, ['sampler', 'vae_decode']);
  assert.ok((await edges(page)).includes('sampler.latent>vae_decode.latent'));
  await shot(page, '09-pasted');
  await page.keyboard.press('Control+z');
  assert.deepEqual(await count(), [7, 9]);
});

test('run to here runs only what the node needs; cancel stops a run', async () => {
  await open(page, 'txt2img');
  const before = await page.evaluate(() => window.__weftRun.getState().run);
  await page.locator(`${node('decode')} .wn-run`).click();
  await page.waitForFunction((b) => { const s = window.__weftRun.getState(); return s.run !== b && s.status === 'succeeded'; }, before, { timeout: 90_000 });
  assert.ok(['done', 'cached'].includes(await state('decode')));
  assert.equal(await state('save'), 'idle');

  await page.locator(`${node('sample')} [data-input="steps"] input`).fill('2000');
  const b2 = await page.evaluate(() => window.__weftRun.getState().run);
  await page.locator('[data-testid="queue"]').click();
  await page.waitForFunction((b) => { const s = window.__weftRun.getState(); return s.run !== b && (s.nodes.sample?.step ?? 0) >= 1; }, b2, { timeout: 90_000 });
  await page.locator('[data-testid="cancel"]').click();
  await page.waitForFunction(() => window.__weftRun.getState().status === 'cancelled', null, { timeout: 30_000 });
  assert.equal(await state('sample'), 'cancelled');
  await shot(page, '10-cancelled');
});

test('image upload: the LoadImage path widget uploads and previews', async () => {
  await open(page, 'img2img');
  const png = readFileSync(join(WORKFLOWS, 'inputs', 'yellow-star.png'));
  await page.locator(`${node('input')} input[type="file"]`).setInputFiles({ name: 'star.png', mimeType: 'image/png', buffer: png });
  await page.waitForFunction(() => /upload-/.test(String(window.__weft.getState().nodes.find((n) => n.id === 'input').data.values.path)));
  const img = page.locator(`${node('input')} .w-upload img`);
  await img.waitFor();
  assert.ok(await img.evaluate(async (i) => { await i.decode(); return i.naturalWidth > 0; }));
  await shot(page, '11-upload');
});
