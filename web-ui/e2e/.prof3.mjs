import { launch, open } from './lib.mjs';
const { browser, page } = await launch();
await open(page, 'txt2img');
const cdp = await page.context().newCDPSession(page);
await cdp.send('Profiler.enable'); await cdp.send('Profiler.setSamplingInterval', { interval: 100 }); await cdp.send('Profiler.start');
await page.evaluate(async () => { const t = performance.now(); window.__weftFitted = 0; location.hash = '#/big300';
  await new Promise((res) => { const check = () => { if (window.__weft.getState().nodes.length === 300 && window.__weftFitted > t) requestAnimationFrame(() => requestAnimationFrame(() => res(null))); else requestAnimationFrame(check); }; check(); }); });
const { profile } = await cdp.send('Profiler.stop');
const byId = new Map(profile.nodes.map((n) => [n.id, n])); const selfT = new Map();
profile.samples.forEach((id, i) => selfT.set(id, (selfT.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
const parent = new Map(); for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const incl = new Map();
for (const [id, t] of selfT) { const seen = new Set(); let cur = id; while (cur != null) { const n = byId.get(cur); const k = n.callFrame.functionName || '(anon)'; if (!seen.has(k)) { seen.add(k); incl.set(k, (incl.get(k) ?? 0) + t); } cur = parent.get(cur); } }
console.log([...incl].sort((a, b) => b[1] - a[1]).slice(0, 60).map(([k, v]) => `${(v / 1000).toFixed(0)} ${k}`).join('\n'));
await browser.close();
