import { describe, expect, it } from 'vitest';
import { inflateSync } from 'node:zlib';
import { encodeRgbaPng, maskedRgba, paintFromAlpha, toImagePoint } from './mask';

/** The chunks of a PNG, CRCs checked. */
function chunks(png: Uint8Array): { type: string; body: Uint8Array }[] {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const out = [];
  let at = 8;
  while (at < png.length) {
    const len = view.getUint32(at);
    const type = new TextDecoder().decode(png.subarray(at + 4, at + 8));
    const body = png.subarray(at + 8, at + 8 + len);
    out.push({ type, body });
    at += 12 + len;
  }
  return out;
}

describe('mask', () => {
  it('makes painted pixels transparent and keeps their colour; unpainted ones stay opaque', () => {
    const image = new Uint8Array([10, 20, 30, 255, 40, 50, 60, 255, 70, 80, 90, 255]);
    const paint = new Uint8Array([255, 64, 160, 255, 0, 0, 0, 0, 255, 64, 160, 128]);
    expect([...maskedRgba(image, paint)]).toEqual([10, 20, 30, 0, 40, 50, 60, 255, 70, 80, 90, 127]);
    expect(() => maskedRgba(image, new Uint8Array(4))).toThrow(/differ in size/);
  });

  it('reads the mask an image saved earlier carries back as paint', () => {
    const image = new Uint8Array([1, 2, 3, 0, 4, 5, 6, 255]);
    expect([...paintFromAlpha(image, [9, 8, 7])]).toEqual([9, 8, 7, 255, 0, 0, 0, 0]);
  });

  it('maps a pointer on the scaled canvas to image pixels', () => {
    expect(toImagePoint({ x: 150, y: 75 }, { left: 100, top: 50, width: 100, height: 50 }, { width: 64, height: 32 })).toEqual({ x: 32, y: 16 });
  });

  it('encodes an RGBA PNG that decodes to the same pixels', async () => {
    const w = 3;
    const h = 2;
    const rgba = new Uint8Array(w * h * 4).map((_, i) => (i * 37) % 256);
    const png = await encodeRgbaPng(w, h, rgba);
    expect([...png.subarray(0, 8)]).toEqual([137, 80, 78, 71, 13, 10, 26, 10]);
    const parts = chunks(png);
    expect(parts.map((c) => c.type)).toEqual(['IHDR', 'IDAT', 'IEND']);
    const ihdr = new DataView(parts[0].body.buffer, parts[0].body.byteOffset, 13);
    expect([ihdr.getUint32(0), ihdr.getUint32(4), parts[0].body[8], parts[0].body[9]]).toEqual([3, 2, 8, 6]);
    const raw = inflateSync(parts[1].body);
    expect(raw.length).toBe((w * 4 + 1) * h);
    for (let y = 0; y < h; y++) {
      expect(raw[y * (w * 4 + 1)]).toBe(0);
      expect([...raw.subarray(y * (w * 4 + 1) + 1, (y + 1) * (w * 4 + 1))]).toEqual([...rgba.subarray(y * w * 4, (y + 1) * w * 4)]);
    }
    await expect(encodeRgbaPng(2, 2, rgba)).rejects.toThrow(/16 bytes/);
  });
});
