// Convert a selection to a library subgraph: lib/NAME.yaml is written, one node replaces the
// selection wired as before, and the next run takes everything from the cache (same keys).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WORKFLOWS, launch, open, node, queueAndWait, shot, edges } from './lib.mjs';

const file = join(WORKFLOWS, 'convert.yaml');
const lib = join(WORKFLOWS, 'lib', 'SampleDecode.yaml');
let browser;
let page;

before(async () => {
  const base = readFileSync(join(WORKFLOWS, 'txt2img.yaml'), 'utf8');
  assert.match(base, /steps: 20/);
  writeFileSync(file, base.replace(/steps: 20/, 'steps: 4'));
  rmSync(lib, { force: true });
  ({ browser, page } = await launch());
});

after(async () => {
  rmSync(file, { force: true });
  rmSync(lib, { force: true });
  await browser?.close();
});

test('convert the sampler and decoder to a library subgraph: one node, same cache keys', async () => {
  await open(page, 'convert');
  assert.equal(await queueAndWait(page), 'succeeded');

  await page.locator(`${node('sample')} .wn-kind`).click();
  await page.locator(`${node('decode')} .wn-kind`).click({ modifiers: ['Control'] });
  assert.deepEqual(await page.evaluate(() => window.__weft.getState().nodes.filter((n) => n.selected).map((n) => n.id).sort()), ['decode', 'sample']);
  await page.locator(`${node('decode')} .wn-kind`).click({ button: 'right' });
  await page.locator('[data-testid="ctx-convert"]').click();
  const name = page.locator('input[aria-label="workflow name"]');
  await name.fill('SampleDecode');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => window.__weft.getState().nodes.some((n) => n.data.kind === 'SampleDecode'));

  // The library file: the two nodes, links from outside read from its inputs.
  assert.ok(existsSync(lib), 'lib/SampleDecode.yaml written');
  const text = readFileSync(lib, 'utf8');
  for (const want of ['inputs:', 'outputs:', 'from: $decode.image', 'model: $inputs.model', 'latent: $sample.latent', 'type: Sampler', 'type: VaeDecode']) {
    assert.ok(text.includes(want), `lib file lacks '${want}':\n${text}`);
  }
  // The canvas: one node in their place, wired as they were.
  const ids = await page.evaluate(() => window.__weft.getState().nodes.map((n) => n.id).sort());
  assert.deepEqual(ids, ['latent', 'model', 'negative', 'positive', 'sample_decode', 'save']);
  const links = await edges(page);
  for (const want of ['model.unet>sample_decode.model', 'positive.conditioning>sample_decode.positive', 'negative.conditioning>sample_decode.negative', 'latent.latent>sample_decode.latent', 'model.vae>sample_decode.vae', 'sample_decode.image>save.image']) {
    assert.ok(links.includes(want), `missing link ${want}: ${links}`);
  }
  await page.locator(node('sample_decode')).waitFor();
  await shot(page, 'convert-subgraph');

  // Nothing re-runs: every node of the run (the subgraph's inner ones included) is cached.
  assert.equal(await queueAndWait(page), 'succeeded');
  const run = await page.evaluate(() => window.__weftRun.getState().run);
  const detail = await page.evaluate(async (r) => (await fetch(`/api/runs/${r}`)).json(), run);
  const states = Object.entries(detail.nodes).map(([id, s]) => `${id}:${s.state}`);
  assert.ok(states.length >= 7, `${states}`);
  assert.ok(states.every((s) => s.endsWith(':cached')), `re-ran: ${states.filter((s) => !s.endsWith(':cached'))}`);
  assert.equal(await page.evaluate(() => window.__weftRun.getState().nodes.sample_decode?.state), 'cached');

  // Saved, the workflow uses the new type; Ctrl+Z before that brings the two nodes back.
  await page.locator('[data-testid="save"]').click();
  await page.waitForFunction(() => !window.__weft.getState().dirty);
  assert.match(readFileSync(file, 'utf8'), /type: SampleDecode/);
  await page.locator('[data-testid="canvas"]').click({ position: { x: 5, y: 300 } });
  await page.keyboard.press('Control+z');
  await page.waitForFunction(() => window.__weft.getState().nodes.some((n) => n.id === 'sample'));
});

test('a name a node type has already is refused, nothing written', async () => {
  await open(page, 'convert');
  await page.locator(`${node('latent')} .wn-kind`).click({ button: 'right' });
  await page.locator('[data-testid="ctx-convert"]').click();
  await page.locator('input[aria-label="workflow name"]').fill('Sampler');
  await page.keyboard.press('Enter');
  await page.locator('[data-testid="toast"]', { hasText: 'a node type named Sampler exists' }).waitFor();
  assert.ok(!existsSync(join(WORKFLOWS, 'lib', 'Sampler.yaml')));
});

test('double-click a subgraph node opens its library file; saved with its interface; breadcrumb back', async () => {
  const libFile = join(WORKFLOWS, 'lib', 'Txt2Img.yaml');
  const original = readFileSync(libFile, 'utf8');
  try {
    await open(page, 'txt2img-then-img2img');
    // An exposed enum input is the same dropdown as the input it feeds inside (the Sampler's).
    const sampler = page.locator(`${node('draw')} [data-input="sampler"] select`);
    const offered = await sampler.locator('option').allInnerTexts();
    for (const want of ['euler', 'dpmpp_2m']) assert.ok(offered.includes(want), `${want} not in ${offered}`);
    await page.locator(`${node('draw')} .wn-kind`).dblclick();
    await page.waitForFunction(() => window.__weft.getState().name === 'lib/Txt2Img');
    await page.locator('[data-testid="breadcrumb"]').waitFor();
    assert.match(await page.locator('[data-testid="breadcrumb"]').innerText(), /txt2img-then-img2img\s*›\s*lib\/Txt2Img/);
    const ids = await page.evaluate(() => window.__weft.getState().nodes.map((n) => n.id).sort());
    assert.deepEqual(ids, ['decode', 'latent', 'negative', 'positive', 'sample']);
    // Its `$inputs` links are its interface, not errors: the server checks the file against its
    // own `inputs:` and `outputs:` (the page hides nothing).
    await page.waitForFunction(() => window.__weftValidating === 0);
    assert.equal(await page.locator('[data-testid="diagnostic"]').count(), 0);
    assert.equal(await page.locator('[data-testid="loose-diagnostics"]').count(), 0);
    assert.match(await page.locator(`${node('latent')} [data-input="width"]`).innerText(), /inputs\.width/);
    await shot(page, 'subgraph-opened');

    // Queued from inside it, it is refused, saying why and what to queue instead.
    const runBefore = await page.evaluate(() => window.__weftRun.getState().run);
    await page.locator('[data-testid="queue"]').click();
    const refusal = page.locator('[data-testid="toast"]', { hasText: 'it is a subgraph' });
    await refusal.waitFor();
    assert.match(await refusal.innerText(), /type: Txt2Img/);
    assert.equal(await page.evaluate(() => window.__weftRun.getState().run), runBefore, 'nothing was queued');

    // The file select lists the library's files apart, by the names that open them.
    const listed = await page.locator('[data-testid="file-library"] option').allInnerTexts();
    for (const want of ['lib/Img2Img.yaml', 'lib/Txt2Img.yaml']) assert.ok(listed.includes(want), `${want} not in ${listed}`);
    assert.equal(await page.locator('[data-testid="file-select"]').inputValue(), 'lib/Txt2Img');

    // Edited on disk while open (and clean here), the canvas reloads it.
    assert.match(original, /    height: \$inputs\.height\n/);
    writeFileSync(libFile, original.replace(/(    height: \$inputs\.height\n)/, '$1    batch: 3\n'));
    await page.waitForFunction(
      (sel) => document.querySelector(sel)?.value === '3',
      `${node('latent')} [data-input="batch"] input`,
      { timeout: 60_000 },
    );
    assert.equal(await page.evaluate(() => window.__weft.getState().dirty), false);

    // An edit, saved: the file keeps its inputs: and outputs: sections and its $inputs links.
    await page.locator(`${node('latent')} [data-input="batch"] input`).fill('2');
    // The edited canvas is checked against the interface as well: still nothing to say.
    await page.waitForFunction(() => window.__weft.getState().dirty);
    await page.waitForFunction(() => window.__weftValidating === 0);
    assert.equal(await page.locator('[data-testid="diagnostic"]').count(), 0);
    assert.equal(await page.locator('[data-testid="loose-diagnostics"]').count(), 0);
    await page.locator('[data-testid="save"]').click();
    await page.waitForFunction(() => !window.__weft.getState().dirty);
    const saved = readFileSync(libFile, 'utf8');
    for (const want of ['inputs:', 'outputs:', 'from: $decode.image', 'width: $inputs.width', 'batch: 2']) {
      assert.ok(saved.includes(want), `saved lib file lacks '${want}':\n${saved}`);
    }

    // The breadcrumb leads back.
    await page.locator('[data-testid="crumb-0"]').click();
    await page.waitForFunction(() => window.__weft.getState().name === 'txt2img-then-img2img');
    await page.locator('[data-testid="breadcrumb"]').waitFor({ state: 'detached' });
  } finally {
    writeFileSync(libFile, original);
  }
});
