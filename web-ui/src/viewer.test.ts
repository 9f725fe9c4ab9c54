import { beforeEach, describe, expect, it } from 'vitest';
import { closeViewer, fitView, openViewer, startCompare, step, useViewer, zoomAt } from './viewer';

const three = ['a', 'b', 'c'].map((n) => ({ url: `/api/outputs/1/${n}.png`, label: n }));

describe('image viewer state', () => {
  beforeEach(() => closeViewer());

  it('steps through the images, wrapping round', () => {
    openViewer(three, 2);
    step(1);
    expect(useViewer.getState().index).toBe(0);
    step(-1);
    expect(useViewer.getState().index).toBe(2);
  });

  it('compares with the next image, never with itself', () => {
    openViewer(three, 0);
    startCompare();
    expect(useViewer.getState().compare).toBe(1);
    step(1); // onto the compared image: the two swap
    expect(useViewer.getState()).toMatchObject({ index: 1, compare: 0 });
    startCompare(1);
    expect(useViewer.getState().compare).toBe(2);
  });

  it('fits an image centred and zooms about the pointer', () => {
    const v = fitView({ w: 64, h: 32 }, { w: 640, h: 640 });
    expect(v).toEqual({ zoom: 10, x: 0, y: 160 });
    // The image point under the pointer stays under it.
    const px = 100;
    const py = 200;
    const before = { x: (px - v.x) / v.zoom, y: (py - v.y) / v.zoom };
    const z = zoomAt(v, 2, px, py);
    expect(z.zoom).toBe(20);
    expect((px - z.x) / z.zoom).toBeCloseTo(before.x);
    expect((py - z.y) / z.zoom).toBeCloseTo(before.y);
  });
});
