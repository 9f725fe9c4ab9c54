import { launch, open } from './lib.mjs';
const { browser, page } = await launch();
await open(page, 'txt2img');
const r = await page.evaluate(async () => {
  const loafs = [];
  new PerformanceObserver((l) => loafs.push(...l.getEntries())).observe({ type: 'long-animation-frame', buffered: false });
  const t = performance.now();
  window.__weftFitted = 0;
  location.hash = '#/big300';
  await new Promise((res) => { const check = () => { if (window.__weft.getState().nodes.length === 300 && window.__weftFitted > t) requestAnimationFrame(() => requestAnimationFrame(() => res(null))); else requestAnimationFrame(check); }; check(); });
  const o = window.__weftOpen;
  await new Promise((r) => setTimeout(r, 100));
  return { total: performance.now() - t, fetchedAt: o.fetched - t, fittedAt: window.__weftFitted - t, loafs: loafs.map((e) => ({ start: Math.round(e.startTime - t), dur: Math.round(e.duration), render: Math.round(e.renderStart ? e.renderStart - e.startTime : 0), style: Math.round(e.styleAndLayoutStart ? e.startTime + e.duration - e.styleAndLayoutStart : 0), scripts: e.scripts.map((s) => `${s.invoker}:${Math.round(s.duration)}`).join(' ') })) };
});
console.log(JSON.stringify(r, null, 1));
await browser.close();
