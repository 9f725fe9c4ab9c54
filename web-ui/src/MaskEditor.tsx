// The mask painter for inpainting: paint over a LoadImage node's picture, save it as a new
// upload whose painted pixels have alpha 0 (ComfyUI's convention, mask = 1 - alpha) and point
// the node at it. The original file is never written: uploads are named by their content.
import { useCallback, useEffect, useRef, useState } from 'react';
import { api, withToken } from './api';
import { encodeRgbaPng, maskedRgba, paintFromAlpha, toImagePoint } from './mask';
import { closeMaskEditor, useMaskStore } from './maskstore';
import { useEditor } from './store';

const PAINT: [number, number, number] = [255, 64, 160];

/** Where a LoadImage path is served: uploads and workflows/inputs files by their file name. */
export function uploadUrl(path: string): string {
  return withToken(`/api/uploads/${encodeURIComponent(path.split('/').pop() ?? path)}`);
}

export function MaskEditor() {
  const node = useMaskStore((s) => s.node);
  if (!node) return null;
  return <Painter key={node} node={node} />;
}

function Painter({ node }: { node: string }) {
  const path = useEditor((s) => s.nodes.find((n) => n.id === node)?.data.values.path);
  const image = useRef<HTMLCanvasElement>(null);
  const paint = useRef<HTMLCanvasElement>(null);
  const [size, setSize] = useState<{ width: number; height: number } | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [brush, setBrush] = useState(24);
  const [erase, setErase] = useState(false);
  const [saving, setSaving] = useState(false);
  const last = useRef<{ x: number; y: number } | null>(null);
  /** The picture's own pixels, read once when drawn: what Save writes under the mask. */
  const pixels = useRef<Uint8ClampedArray | null>(null);

  // The picture, and a mask it carries already (its transparent pixels).
  useEffect(() => {
    if (typeof path !== 'string' || !path) {
      setProblem(`node ${node} has no image path to paint on`);
      return;
    }
    const img = new Image();
    img.onload = () => {
      const w = img.naturalWidth;
      const h = img.naturalHeight;
      setSize({ width: w, height: h });
      requestAnimationFrame(() => {
        const ic = image.current!.getContext('2d', { willReadFrequently: true })!;
        ic.drawImage(img, 0, 0);
        pixels.current = ic.getImageData(0, 0, w, h).data;
        const carried = paintFromAlpha(pixels.current, PAINT);
        paint.current!.getContext('2d')!.putImageData(new ImageData(carried, w, h), 0, 0);
      });
    };
    img.onerror = () => setProblem(`cannot load ${path}: the mask painter opens images in the inputs folder (upload one first)`);
    img.src = uploadUrl(path);
  }, [node, path]);

  useEffect(() => {
    const esc = (e: KeyboardEvent) => e.key === 'Escape' && closeMaskEditor();
    window.addEventListener('keydown', esc);
    return () => window.removeEventListener('keydown', esc);
  }, []);

  const stroke = useCallback(
    (e: React.PointerEvent<HTMLCanvasElement>) => {
      const c = paint.current;
      if (!c || !size) return;
      const at = toImagePoint({ x: e.clientX, y: e.clientY }, c.getBoundingClientRect(), size);
      const from = last.current ?? at;
      const g = c.getContext('2d')!;
      g.globalCompositeOperation = erase ? 'destination-out' : 'source-over';
      g.strokeStyle = `rgb(${PAINT.join(',')})`;
      g.lineWidth = brush;
      g.lineCap = 'round';
      g.lineJoin = 'round';
      g.beginPath();
      g.moveTo(from.x, from.y);
      g.lineTo(at.x, at.y);
      g.stroke();
      last.current = at;
    },
    [brush, erase, size],
  );

  const save = async () => {
    if (!size || !pixels.current || !paint.current) return;
    setSaving(true);
    try {
      const { width, height } = size;
      const painted = paint.current.getContext('2d')!.getImageData(0, 0, width, height).data;
      const png = await encodeRgbaPng(width, height, maskedRgba(pixels.current, painted));
      const stem = String(path).split('/').pop()!.replace(/\.[^.]*$/, '');
      const stored = await api.upload(new File([png as BlobPart], `${stem}-mask.png`, { type: 'image/png' }));
      useEditor.getState().setValue(node, 'path', stored);
      useEditor.getState().say(`mask saved as ${stored.split('/').pop()}; ${node}.path points at it (the original is unchanged)`);
      closeMaskEditor();
    } catch (e) {
      useEditor.getState().say(`saving the mask failed: ${(e as Error).message}`, 'error');
    } finally {
      setSaving(false);
    }
  };

  const clear = () => {
    if (!size || !paint.current) return;
    paint.current.getContext('2d')!.clearRect(0, 0, size.width, size.height);
  };

  // The picture fits the window; the canvases keep the image's own pixels.
  // A small picture is shown larger (pixels stay sharp) so a brush can hit its pixels.
  const fitScale = size ? Math.min((window.innerWidth - 120) / size.width, (window.innerHeight - 220) / size.height) : 1;
  const scale = size ? Math.min(fitScale, Math.max(1, 512 / Math.max(size.width, size.height))) : 1;
  const shown = size ? { width: Math.max(1, Math.round(size.width * scale)), height: Math.max(1, Math.round(size.height * scale)) } : undefined;
  return (
    <div className="palette-back" onMouseDown={(e) => e.target === e.currentTarget && closeMaskEditor()}>
      <div className="mask-editor" data-testid="mask-editor">
        <div className="mask-tools">
          <b>Mask · {node}</b>
          <button className={`btn${!erase ? ' on' : ''}`} onClick={() => setErase(false)} data-testid="mask-brush">
            Brush
          </button>
          <button className={`btn${erase ? ' on' : ''}`} onClick={() => setErase(true)} data-testid="mask-eraser">
            Eraser
          </button>
          <label className="mask-size">
            size
            <input type="range" min={1} max={256} value={brush} onChange={(e) => setBrush(Number(e.target.value))} data-testid="mask-size" aria-label="brush size" />
            <span>{brush}px</span>
          </label>
          <button className="btn" onClick={clear} data-testid="mask-clear">
            Clear
          </button>
          <span className="grow" />
          <button className="btn primary" disabled={!size || saving} onClick={() => void save()} data-testid="mask-save">
            {saving ? 'Saving…' : 'Save'}
          </button>
          <button className="btn" onClick={closeMaskEditor}>
            Cancel
          </button>
        </div>
        {problem && <div className="wn-diag">{problem}</div>}
        <p className="muted">Paint the area to regenerate. Save writes a new image (painted pixels transparent: LoadImage's mask) and points the node at it.</p>
        {size && (
          <div className="mask-stage" style={shown}>
            <canvas ref={image} width={size.width} height={size.height} style={shown} />
            <canvas
              ref={paint}
              width={size.width}
              height={size.height}
              style={shown}
              className="mask-paint"
              data-testid="mask-canvas"
              onPointerDown={(e) => {
                e.currentTarget.setPointerCapture(e.pointerId);
                last.current = null;
                stroke(e);
              }}
              onPointerMove={(e) => e.buttons === 1 && stroke(e)}
              onPointerUp={() => (last.current = null)}
            />
          </div>
        )}
      </div>
    </div>
  );
}
