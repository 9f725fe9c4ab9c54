// ComfyUI's own frontend (PyPI's comfyui-frontend-package) served by weft at /comfy/, no
// proxy: it loads its default graph, queues it on weft and shows the image on the Save Image
// node; a workflow saved from it becomes weft YAML, and an edit of that YAML on disk reaches
// the graph open in the frontend by itself (weft's extension, src/server/comfy/follow_yaml.js).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BASE, WORKFLOWS, launch, shot } from './lib.mjs';

let browser;
let page;
const missing = [];

before(async () => {
  assert.ok(WORKFLOWS && existsSync(WORKFLOWS), 'WEFT_WORKFLOWS must name a copy of workflows/');
  ({ browser, page } = await launch());
  page.on('response', (r) => {
    // A user file not there yet is a 404 in ComfyUI too (the frontend expects it).
    // (Template thumbnails: weft's workflows have none.)
    const expected = r.url().includes('/api/userdata') || /\/templates\/.*\.webp$/.test(r.url());
    if (r.status() >= 400 && r.url().includes('/comfy/') && !expected) {
      missing.push(`${r.status()} ${r.url()}`);
      console.error('refused:', r.status(), r.url());
    }
  });
});

after(async () => {
  rmSync(join(WORKFLOWS, 'from-comfyui.yaml'), { force: true });
  await browser?.close();
});

/** Opens the frontend and waits for its graph (the default one on a first visit). */
async function openFrontend() {
  await page.goto(`${BASE}/comfy/`);
  try {
    await page.waitForFunction(() => window.app?.graph && document.querySelector('canvas#graph-canvas'), null, { timeout: 60_000 });
  } catch (e) {
    await shot(page, 'comfyui-failed-load');
    throw e;
  }
  await page.waitForTimeout(1500);
  // A first visit opens the templates (weft's workflows): closed, as a person would.
  for (let i = 0; i < 3 && (await page.locator('.p-dialog').count()) > 0; i++) {
    await page.keyboard.press('Escape');
    await page.waitForTimeout(300);
  }
}

/** The graph's nodes of a ComfyUI class. */
const nodesOf = (cls) => page.evaluate((c) => window.app.graph._nodes.filter((n) => n.type === c).map((n) => n.id), cls);

/** Sets a widget of every node of a class. */
async function setWidget(cls, name, value) {
  await page.evaluate(
    ([c, n, v]) => {
      for (const node of window.app.graph._nodes.filter((x) => x.type === c)) {
        const w = node.widgets.find((x) => x.name === n);
        w.value = v;
        w.callback?.(v);
      }
    },
    [cls, name, value],
  );
}

/** ComfyUI's classic default graph (SD1.5 txt2img, UI format, as the frontend saves it). */
const classicDefault = JSON.parse(readFileSync(new URL('../../tests/comfy/12_ui_txt2img.json', import.meta.url), 'utf8'));

test('the default graph queues on weft and its image shows on the Save Image node', async () => {
  await openFrontend();
  await shot(page, 'comfyui-loaded');
  // This frontend's own default graph is Z-Image Turbo (CLIPLoader, UNETLoader, ...), node
  // types weft lacks; ComfyUI's classic default is the one weft runs.
  await page.evaluate((g) => window.app.loadGraphData(g), classicDefault);
  await page.waitForTimeout(300);
  assert.ok((await nodesOf('KSampler')).length === 1, 'the default graph has a KSampler');
  // tiny-shapes (the checkpoint --comfy-model '*=tiny-shapes' gives) draws 64x64 images.
  await setWidget('EmptyLatentImage', 'width', 64);
  await setWidget('EmptyLatentImage', 'height', 64);
  await setWidget('KSampler', 'steps', 4);
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const [save] = await nodesOf('SaveImage');
  await page.waitForFunction(
    (id) => {
      const node = window.app.graph.getNodeById(id);
      return node?.imgs?.length > 0 && node.imgs[0].complete && node.imgs[0].naturalWidth > 0;
    },
    save,
    { timeout: 120_000 },
  );
  const size = await page.evaluate((id) => {
    const img = window.app.graph.getNodeById(id).imgs[0];
    return [img.naturalWidth, img.naturalHeight, img.src];
  }, save);
  assert.equal(size[0], 64, `the image is 64 wide: ${size}`);
  assert.ok(size[2].includes('/comfy/api/view?'), `served by weft's /view: ${size[2]}`);
  // The queue panel's source (ComfyUI's jobs API): the job, completed, with its image.
  const jobs = await page.evaluate(async () => (await fetch('api/jobs?status=completed&limit=5')).json());
  const job = jobs.jobs[0];
  assert.equal(job?.status, 'completed', JSON.stringify(jobs));
  assert.equal(job.preview_output?.nodeId, String(save), JSON.stringify(job));
  await page.waitForTimeout(500);
  await shot(page, 'comfyui-queued-image');
  assert.deepEqual(missing, [], `every route the frontend asked for is answered: ${missing.join(', ')}`);
});

test('a workflow saved from the frontend becomes weft YAML, and the open tab follows edits of it on disk', async () => {
  const yaml = join(WORKFLOWS, 'from-comfyui.yaml');
  rmSync(yaml, { force: true });
  await openFrontend();
  await page.evaluate((g) => window.app.loadGraphData(g), classicDefault);
  await setWidget('KSampler', 'steps', 4);
  // Save as a person does: Ctrl+S on the canvas, a name, Enter.
  await page.locator('canvas#graph-canvas').click({ position: { x: 1000, y: 850 } });
  await page.keyboard.press('Control+s');
  try {
    await page.getByText('Enter the filename:').waitFor({ timeout: 10_000 });
  } catch (e) {
    await shot(page, 'comfyui-failed-save');
    throw e;
  }
  // The name field has the focus, its text selected: typing replaces it.
  await page.keyboard.type('from-comfyui');
  await page.keyboard.press('Enter');
  for (let i = 0; i < 100 && !existsSync(yaml); i++) await page.waitForTimeout(100);
  assert.ok(existsSync(yaml), 'workflows/from-comfyui.yaml was written');
  const text = readFileSync(yaml, 'utf8');
  assert.match(text, /type: Sampler/, text);
  assert.match(text, /steps: 4/, text);
  assert.match(text, /layout:/, 'the UI positions are kept');
  await shot(page, 'comfyui-saved');
  // The YAML edited on disk: the open tab follows it (weft's frontend extension hears the
  // watcher on ComfyUI's socket and reloads the graph), keeping the user's viewport.
  const stepsInPage = () =>
    page.evaluate(() => window.app.graph._nodes.find((n) => n.type === 'KSampler')?.widgets.find((w) => w.name === 'steps').value);
  assert.equal(await stepsInPage(), 4);
  // The user's own viewport, different from the one saved in the file.
  const viewport = await page.evaluate(() => {
    const ds = window.app.canvas.ds;
    ds.offset[0] += 123;
    ds.offset[1] -= 45;
    ds.scale = 0.8;
    window.app.canvas.setDirty(true, true);
    return [ds.offset[0], ds.offset[1], ds.scale];
  });
  writeFileSync(yaml, text.replace('steps: 4', 'steps: 9'));
  try {
    await page.waitForFunction(
      () => window.app.graph._nodes.find((n) => n.type === 'KSampler')?.widgets.find((w) => w.name === 'steps').value === 9,
      null,
      { timeout: 120_000 },
    );
  } catch (e) {
    await shot(page, 'comfyui-yaml-not-followed');
    throw new Error(`the steps widget did not follow the YAML (still ${await stepsInPage()}): ${e.message}`);
  }
  const after = await page.evaluate(() => {
    const ds = window.app.canvas.ds;
    return [ds.offset[0], ds.offset[1], ds.scale];
  });
  assert.deepEqual(after, viewport, 'the viewport is kept');
  // The tab shows the file as it is now: nothing unsaved, and a second edit is followed too.
  await page.waitForTimeout(500);
  const modified = await page.evaluate(() => window.app.extensionManager.workflow.activeWorkflow.isModified);
  assert.equal(modified, false, 'the reloaded tab has no unsaved changes');
  writeFileSync(yaml, text.replace('steps: 4', 'steps: 12'));
  await page.waitForFunction(
    () => window.app.graph._nodes.find((n) => n.type === 'KSampler')?.widgets.find((w) => w.name === 'steps').value === 12,
    null,
    { timeout: 120_000 },
  );
  writeFileSync(yaml, text.replace('steps: 4', 'steps: 9'));
  await page.waitForFunction(
    () => window.app.graph._nodes.find((n) => n.type === 'KSampler')?.widgets.find((w) => w.name === 'steps').value === 9,
    null,
    { timeout: 120_000 },
  );
  // The export the tab loaded is the YAML's.
  const reopened = await page.evaluate(async () => (await fetch('api/userdata/workflows%2Ffrom-comfyui.json')).json());
  const ks = reopened.nodes.find((n) => n.type === 'KSampler');
  assert.equal(ks.widgets_values[2], 9, JSON.stringify(ks.widgets_values));
  await shot(page, 'comfyui-yaml-edited');
});
