//! The image viewer's state: which images (a run's outputs) are open, which one is shown, and the
//! pure geometry of zooming around a point, kept apart so it is unit-tested without a browser.
import { create } from 'zustand';

export interface ViewedImage {
  url: string;
  /** What the user knows the image by: the node that saved it (and the run). */
  label: string;
}

interface ViewerState {
  images: ViewedImage[];
  index: number;
  /** The image compared with the shown one (side by side with a slider), or null. */
  compare: number | null;
}

export const useViewer = create<ViewerState>()(() => ({ images: [], index: 0, compare: null }));

export function openViewer(images: ViewedImage[], index: number) {
  if (images.length === 0) return;
  useViewer.setState({ images, index: Math.max(0, Math.min(index, images.length - 1)), compare: null });
}

export function closeViewer() {
  useViewer.setState({ images: [], index: 0, compare: null });
}

export const viewerOpen = () => useViewer.getState().images.length > 0;

/** The next (or previous, `by` = -1) image, wrapping round; the compared image never equals it. */
export function step(by: number) {
  const { images, index, compare } = useViewer.getState();
  if (images.length === 0) return;
  const next = (index + by + images.length) % images.length;
  useViewer.setState({ index: next, compare: compare === next ? index : compare });
}

/** Starts comparing the shown image with another (the next one unless said). */
export function startCompare(other?: number) {
  const { images, index } = useViewer.getState();
  if (images.length < 2) return;
  const pick = other ?? (index + 1) % images.length;
  useViewer.setState({ compare: pick === index ? (index + 1) % images.length : pick });
}

export function stopCompare() {
  useViewer.setState({ compare: null });
}

export interface View {
  zoom: number;
  /** Where the image's top-left corner is, in stage pixels. */
  x: number;
  y: number;
}

export const MIN_ZOOM = 0.05;
export const MAX_ZOOM = 64;

/** The view that shows the whole image centred in the stage, as large as fits (at most 16×). */
export function fitView(image: { w: number; h: number }, stage: { w: number; h: number }): View {
  const zoom = Math.min(16, Math.max(MIN_ZOOM, Math.min(stage.w / image.w, stage.h / image.h)));
  return { zoom, x: (stage.w - image.w * zoom) / 2, y: (stage.h - image.h * zoom) / 2 };
}

/** The image at its own pixel size (1:1), centred. */
export function actualSize(image: { w: number; h: number }, stage: { w: number; h: number }): View {
  return { zoom: 1, x: (stage.w - image.w) / 2, y: (stage.h - image.h) / 2 };
}

/** Zooms by `factor` keeping the image point under (px, py) where it is (the wheel's zoom). */
export function zoomAt(v: View, factor: number, px: number, py: number): View {
  const zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, v.zoom * factor));
  const k = zoom / v.zoom;
  return { zoom, x: px - (px - v.x) * k, y: py - (py - v.y) * k };
}
