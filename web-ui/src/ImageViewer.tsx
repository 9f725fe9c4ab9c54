//! The in-page image viewer: a run's images at full size, zoom (wheel, buttons) and pan (drag),
//! arrows step through them, Compare shows two aligned with a slider between them; Esc closes.
import { useCallback, useEffect, useRef, useState } from 'react';
import { withToken, type RunOutput } from './api';
import { useEditor } from './store';
import { useRunStore } from './runstore';
import {
  actualSize,
  closeViewer,
  fitView,
  startCompare,
  step,
  stopCompare,
  useViewer,
  zoomAt,
  openViewer,
  type View,
  type ViewedImage,
} from './viewer';

/** The images the canvas shows from its last run, in the canvas's node order, opened at `url`. */
export function openCanvasImages(url: string) {
  const runs = useRunStore.getState().nodes;
  const list: ViewedImage[] = [];
  for (const n of useEditor.getState().nodes) {
    const title = n.data.look?.title ?? n.id;
    for (const u of runs[n.id]?.images ?? []) list.push({ url: u, label: title });
  }
  const at = list.findIndex((i) => i.url === url);
  openViewer(at >= 0 ? list : [{ url, label: '' }, ...list], Math.max(0, at));
}

/** A past run's images (the History panel), opened at `url`. */
export function openRunImages(run: number, outputs: RunOutput[], url: string) {
  const list = outputs.map((o) => ({ url: o.url, label: `${o.node} · run #${run}` }));
  openViewer(list, Math.max(0, list.findIndex((i) => i.url === url)));
}

export function ImageViewer() {
  const images = useViewer((s) => s.images);
  const index = useViewer((s) => s.index);
  const compare = useViewer((s) => s.compare);
  const stage = useRef<HTMLDivElement>(null);
  const [size, setSize] = useState<{ w: number; h: number } | null>(null);
  const [view, setView] = useState<View | null>(null);
  const [split, setSplit] = useState(50);
  const [broken, setBroken] = useState<string | null>(null);
  const drag = useRef<{ x: number; y: number; from: View } | null>(null);
  const open = images.length > 0;
  const shown = images[index];
  const other = compare === null ? undefined : images[compare];

  const stageSize = () => {
    const b = stage.current?.getBoundingClientRect();
    return { w: b?.width ?? 800, h: b?.height ?? 600 };
  };
  // Fitted with a margin, so the image's edges show against the background.
  const fitted = (image: { w: number; h: number }) => {
    const s = stageSize();
    const v = fitView(image, { w: s.w - 48, h: s.h - 48 });
    return { ...v, x: v.x + 24, y: v.y + 24 };
  };
  const fit = useCallback(() => size && setView(fitted(size)), [size]);
  const oneToOne = useCallback(() => size && setView(actualSize(size, stageSize())), [size]);
  const zoomBy = useCallback(
    (factor: number) => {
      if (!view) return;
      const s = stageSize();
      setView(zoomAt(view, factor, s.w / 2, s.h / 2));
    },
    [view],
  );

  // A new set of images opens fitted; stepping to an image of another size fits it again, one
  // of the same size keeps the zoom and place (so two seeds are compared at the same spot).
  useEffect(() => {
    if (!open) {
      setSize(null);
      setView(null);
      setSplit(50);
    }
  }, [open]);

  useEffect(() => {
    if (!open) return;
    const onKey = (e: KeyboardEvent) => {
      const used = (() => {
        if (e.key === 'Escape') closeViewer();
        else if (e.key === 'ArrowRight') step(1);
        else if (e.key === 'ArrowLeft') step(-1);
        else if (e.key === '0' || e.key === 'f') fit();
        else if (e.key === '1') oneToOne();
        else if (e.key === '+' || e.key === '=') zoomBy(1.25);
        else if (e.key === '-') zoomBy(0.8);
        else if (e.key === 'c') {
          if (useViewer.getState().compare === null) startCompare();
          else stopCompare();
        } else return false;
        return true;
      })();
      // The viewer has the keys while it is open: the canvas's shortcuts wait.
      if (used) e.preventDefault();
      e.stopPropagation();
    };
    window.addEventListener('keydown', onKey, true);
    return () => window.removeEventListener('keydown', onKey, true);
  }, [open, fit, oneToOne, zoomBy]);

  if (!open || !shown) return null;

  const onLoad = (img: HTMLImageElement) => {
    const next = { w: img.naturalWidth, h: img.naturalHeight };
    if (!size || size.w !== next.w || size.h !== next.h || !view) {
      setSize(next);
      setView(fitted(next));
    }
  };
  const layer = view && size ? { width: size.w, height: size.h, transform: `translate(${view.x}px, ${view.y}px) scale(${view.zoom})` } : { visibility: 'hidden' as const };
  const pixelated = view && view.zoom >= 2 ? ' pixelated' : '';

  return (
    <div className="viewer" data-testid="viewer" role="dialog" aria-label="image viewer">
      <div className="viewer-bar">
        <button className="btn small" onClick={() => step(-1)} disabled={images.length < 2} title="previous image (←)" data-testid="viewer-prev">
          ‹
        </button>
        <span data-testid="viewer-count">
          {index + 1} / {images.length}
        </span>
        <button className="btn small" onClick={() => step(1)} disabled={images.length < 2} title="next image (→)" data-testid="viewer-next">
          ›
        </button>
        <span className="viewer-label" data-testid="viewer-label">
          {shown.label}
        </span>
        <span className="grow" />
        <button className="btn small" onClick={() => zoomBy(0.8)} title="zoom out (-, or the wheel)">
          −
        </button>
        <span className="viewer-zoom" data-testid="viewer-zoom">
          {view ? `${Math.round(view.zoom * 100)}%` : ''}
        </span>
        <button className="btn small" onClick={() => zoomBy(1.25)} title="zoom in (+, or the wheel)">
          +
        </button>
        <button className="btn small" onClick={fit} title="fit the image to the window (0)" data-testid="viewer-fit">
          Fit
        </button>
        <button className="btn small" onClick={oneToOne} title="one image pixel to one screen pixel (1)" data-testid="viewer-1to1">
          1:1
        </button>
        <span className="sep" />
        <button
          className={`btn small${compare !== null ? ' on' : ''}`}
          disabled={images.length < 2}
          onClick={() => (compare === null ? startCompare() : stopCompare())}
          title="compare with another image of the run, a slider between them (C)"
          data-testid="viewer-compare"
        >
          Compare
        </button>
        {compare !== null && (
          <select
            value={compare}
            onChange={(e) => startCompare(Number(e.target.value))}
            aria-label="compare with"
            data-testid="viewer-compare-with"
          >
            {images.map((im, i) =>
              i === index ? null : (
                <option key={i} value={i}>
                  {i + 1}: {im.label}
                </option>
              ),
            )}
          </select>
        )}
        <a className="btn small" href={withToken(shown.url)} target="_blank" rel="noreferrer" title="open the file in a new tab">
          ↗
        </a>
        <button className="btn small" onClick={closeViewer} title="close (Esc)" data-testid="viewer-close">
          ×
        </button>
      </div>
      <div
        ref={stage}
        className="viewer-stage"
        data-testid="viewer-stage"
        onWheel={(e) => {
          if (!view) return;
          const b = stage.current!.getBoundingClientRect();
          setView(zoomAt(view, Math.exp(-e.deltaY * 0.0015), e.clientX - b.left, e.clientY - b.top));
        }}
        onPointerDown={(e) => {
          if (!view || (e.target as HTMLElement).closest('.viewer-split')) return;
          drag.current = { x: e.clientX, y: e.clientY, from: view };
          (e.currentTarget as HTMLElement).setPointerCapture(e.pointerId);
        }}
        onPointerMove={(e) => {
          const d = drag.current;
          if (d) setView({ ...d.from, x: d.from.x + e.clientX - d.x, y: d.from.y + e.clientY - d.y });
        }}
        onPointerUp={() => (drag.current = null)}
        onPointerCancel={() => (drag.current = null)}
        onDoubleClick={() => (view && size && Math.abs(view.zoom - fitted(size).zoom) < 1e-6 ? oneToOne() : fit())}
      >
        <div className={`viewer-layer${pixelated}`} style={layer} data-testid="viewer-layer">
          <img
            src={withToken(shown.url)}
            alt={shown.label}
            draggable={false}
            onLoad={(e) => {
              setBroken(null);
              onLoad(e.currentTarget);
            }}
            onError={() => setBroken(shown.url)}
            data-testid="viewer-image"
          />
          {other && (
            <img
              className="viewer-b"
              src={withToken(other.url)}
              alt={other.label}
              draggable={false}
              style={{ clipPath: `inset(0 0 0 ${split}%)` }}
              data-testid="viewer-image-b"
            />
          )}
          {other && view && <div className="viewer-divider" style={{ left: `${split}%`, borderLeftWidth: `${2 / view.zoom}px` }} />}
        </div>
        {broken === shown.url && (
          <div className="viewer-missing" data-testid="viewer-missing">
            {shown.label}: the server has no such image any more (its run's outputs were deleted?)
          </div>
        )}
        {other && (
          <div className="viewer-split">
            <span className="muted">{index + 1}: {shown.label}</span>
            <input
              type="range"
              min={0}
              max={100}
              step={0.5}
              value={split}
              onChange={(e) => setSplit(Number(e.target.value))}
              aria-label="compare slider"
              data-testid="viewer-slider"
            />
            <span className="muted">{(compare ?? 0) + 1}: {other.label}</span>
          </div>
        )}
      </div>
    </div>
  );
}
