import { launch, open } from './lib.mjs';
const { browser, page } = await launch();
await open(page, 'txt2img');
const cdp = await page.context().newCDPSession(page);
await cdp.send('Profiler.enable');
await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
await cdp.send('Profiler.start');
const r = await page.evaluate(async () => {
  const t = performance.now();
  location.hash = '#/big300';
  await new Promise((res) => { const check = () => { if (window.__weft.getState().nodes.length === 300 && document.querySelectorAll('.react-flow__node').length > 0) requestAnimationFrame(() => res(null)); else requestAnimationFrame(check); }; check(); });
  const o = window.__weftOpen; return { total: performance.now() - t, server: o.fetched - o.t0 };
});
await page.waitForTimeout(1500);
const { profile } = await cdp.send('Profiler.stop');
console.log(r);
const self = new Map(); const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const dt = profile.timeDeltas; const counts = new Map();
profile.samples.forEach((id, i) => counts.set(id, (counts.get(id) ?? 0) + (dt[i] ?? 0)));
for (const [id, us] of counts) { const n = byId.get(id); const k = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}`; self.set(k, (self.get(k) ?? 0) + us); }
console.log([...self].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([k, v]) => `${(v / 1000).toFixed(0)}ms ${k}`).join('\n'));
await browser.close();
