// Figures for a 300- and a 1,000-node workflow: time to open, frames per second while panning
// (goals: 300 nodes open in < 400 ms and pan at >= 55 fps, 1,000 in < 1.5 s and >= 30 fps).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BASE, WORKFLOWS, launch, open, shot } from './lib.mjs';

let browser;
let page;

/** 300 nodes: one checkpoint, one negative prompt, then chains prompt -> latent -> sampler -> decode. */
export function bigWorkflow(count = 300) {
  const lines = ['weft: 1', 'nodes:', '  model:', '    type: LoadCheckpoint', '    name: tiny-shapes'];
  const layout = ['layout:', '  model: [0, 0]', '  negative: [0, 400]'];
  lines.push('  negative:', '    type: PromptEncode', '    encoder: $model.text_encoder', '    text: ""');
  let n = 2;
  for (let g = 0; n < count; g++) {
    const x = 360 + (g % 10) * 1300;
    const y = Math.floor(g / 10) * 520;
    const add = (id, body, dx) => {
      if (n >= count) return;
      lines.push(`  ${id}:`, ...body.map((l) => `    ${l}`));
      layout.push(`  ${id}: [${x + dx}, ${y}]`);
      n++;
    };
    add(`p${g}`, ['type: PromptEncode', 'encoder: $model.text_encoder', `text: shape number ${g}`], 0);
    add(`l${g}`, ['type: EmptyLatent', 'width: 64', 'height: 64'], 0 + 0);
    add(`s${g}`, ['type: Sampler', 'model: $model.unet', `positive: $p${g}.conditioning`, 'negative: $negative.conditioning', `latent: $l${g}.latent`, `seed: ${g}`, 'steps: 4'], 320);
    add(`d${g}`, ['type: VaeDecode', 'vae: $model.vae', `latent: $s${g}.latent`], 640);
  }
  // Latents sit under their prompts.
  const fixed = layout.map((l) => {
    const m = /^ {2}l(\d+): \[(-?\d+), (-?\d+)\]$/.exec(l);
    return m ? `  l${m[1]}: [${m[2]}, ${Number(m[3]) + 200}]` : l;
  });
  return [...lines, ...fixed, ''].join('\n');
}

before(async () => {
  for (const count of [300, 1000]) writeFileSync(join(WORKFLOWS, `big${count}.yaml`), bigWorkflow(count));
  ({ browser, page } = await launch());
});
after(async () => {
  await browser?.close();
});

async function fps(page, ms, move) {
  await page.evaluate(() => {
    window.__frames = 0;
    window.__counting = true;
    const tick = () => {
      if (!window.__counting) return;
      window.__frames++;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  const t0 = Date.now();
  await move();
  const elapsed = Date.now() - t0;
  const frames = await page.evaluate(() => {
    window.__counting = false;
    return window.__frames;
  });
  return { fps: (frames * 1000) / elapsed, frames, elapsed, ms };
}

async function pan(page, ms) {
  const cx = 800;
  const cy = 520;
  await page.mouse.move(cx, cy);
  await page.mouse.down();
  const t0 = Date.now();
  let i = 0;
  while (Date.now() - t0 < ms) {
    const a = (i++ / 40) * Math.PI * 2;
    await page.mouse.move(cx + Math.cos(a) * 300, cy + Math.sin(a) * 200);
  }
  await page.mouse.up();
}

async function measure(count) {
  const name = `big${count}`;
  // Cold: a fresh page load of the editor with the big file.
  const t0 = Date.now();
  await page.goto(`${BASE}/#/${name}`);
  await page.waitForFunction((c) => window.__weft?.getState().nodes.length === c && window.__weftFitted > 0, count, { timeout: 60_000 });
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const cold = Date.now() - t0;

  // Warm: from another workflow, open it (what a person does from the file menu).
  await open(page, 'txt2img');
  const warm = await page.evaluate(async ({ name, count }) => {
    const t = performance.now();
    window.__weftFitted = 0;
    location.hash = `#/${name}`;
    // Until the view is fitted and the frame after it is painted.
    await new Promise((res) => {
      const check = () => {
        const n = window.__weft.getState().nodes.length;
        const dom = document.querySelectorAll('.react-flow__node').length;
        if (n === count && dom > 0 && window.__weftFitted > t) requestAnimationFrame(() => requestAnimationFrame(() => res(null)));
        else requestAnimationFrame(check);
      };
      check();
    });
    const end = performance.now();
    const o = window.__weftOpen;
    // Then until every node is drawn and measured (the ones off screen come a batch per frame).
    await new Promise((res) => {
      const check = () => {
        const st = window.__weft.getState().nodes;
        if (st.every((n) => !n.hidden && n.measured?.width)) res(null);
        else requestAnimationFrame(check);
      };
      check();
    });
    return { total: end - t, server: o.fetched - o.t0, draw: end - o.fetched, all: performance.now() - t };
  }, { name, count });
  await page.waitForTimeout(Number(process.env.WEFT_PERF_SETTLE ?? 500));
  const visibleOpened = await page.locator('.react-flow__node').count();
  const viewOpened = await page.evaluate(() => document.querySelector('.react-flow__viewport')?.style.transform);
  const pOpened = await fps(page, 3000, () => pan(page, 3000));
  await shot(page, `12-${name}-opened`);
  // Fitted: all 300 nodes on screen, the worst case for drawing.
  await page.locator('[data-testid="canvas"]').focus();
  await page.keyboard.press('.');
  await page.waitForTimeout(500);
  const visibleAll = await page.locator('.react-flow__node').count();
  const fitted = await page.evaluate(() => document.querySelector('.react-flow__viewport')?.style.transform);
  const pAll = await fps(page, 3000, () => pan(page, 3000));
  await shot(page, `13-${name}-all`);

  // Zoomed in to about 1:1 where people work: only the visible nodes are in the page.
  await page.mouse.move(800, 500);
  for (let i = 0; i < 12; i++) await page.mouse.wheel(0, -300);
  await page.waitForTimeout(500);
  const zoomed = await page.evaluate(() => document.querySelector('.react-flow__viewport')?.style.transform);
  const visibleZoomed = await page.locator('.react-flow__node').count();
  const pZoomed = await fps(page, 3000, () => pan(page, 3000));
  await shot(page, `14-${name}-zoomed`);

  const idle = await fps(page, 1000, () => page.waitForTimeout(1000));
  const figures = {
    open_cold_page_load_ms: cold,
    open_in_app_total_ms: Math.round(warm.total),
    open_in_app_server_answer_ms: Math.round(warm.server),
    open_in_app_draw_ms: Math.round(warm.draw),
    all_drawn_and_measured_ms: Math.round(warm.all),
    nodes_in_page_as_opened: visibleOpened,
    viewport_as_opened: viewOpened,
    pan_fps_as_opened: Number(pOpened.fps.toFixed(1)),
    pan_fps_all_on_screen: Number(pAll.fps.toFixed(1)),
    nodes_in_page_all_on_screen: visibleAll,
    viewport_all: fitted,
    pan_fps_zoomed_in: Number(pZoomed.fps.toFixed(1)),
    nodes_in_page_zoomed_in: visibleZoomed,
    viewport_zoomed: zoomed,
    idle_fps: Number(idle.fps.toFixed(1)),
  };
  const load = await import('node:os').then((os) => os.loadavg().map((x) => x.toFixed(2)).join(' '));
  console.log(`FIGURES ${count} nodes (load average ${load}, ${(await import('node:os')).cpus().length} CPUs) ` + JSON.stringify(figures));
  // The figure is printed above; the assertion only guards against a regression, with room for a
  // machine busy with other work (the target is under a second, see the figures).
  return warm;
}

test('a 300-node workflow opens and pans smoothly', async () => {
  const warm = await measure(300);
  assert.ok(warm.total < 2500, `opened in ${warm.total} ms`);
});

test('a 1,000-node workflow opens and pans', async () => {
  const warm = await measure(1000);
  assert.ok(warm.total < 8000, `opened in ${warm.total} ms`);
});
