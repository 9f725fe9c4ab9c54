// The mask painter's pure parts: the RGBA image it saves (painted pixels get alpha 0, as
// ComfyUI's LoadImage reads mask = 1 - alpha), the mask a previously saved image carries, and
// a PNG encoder that keeps the colour under the painted pixels (a canvas's toBlob would lose it).

/**
 * The image's pixels with alpha = 255 - the mask's coverage (the painted layer's alpha): fully
 * painted pixels get alpha 0, unpainted ones stay opaque. Both arrays are RGBA of one size.
 */
export function maskedRgba(image: Uint8ClampedArray | Uint8Array, paint: Uint8ClampedArray | Uint8Array): Uint8Array {
  if (image.length !== paint.length) throw new Error(`image (${image.length} bytes) and mask (${paint.length} bytes) differ in size`);
  const out = new Uint8Array(image.length);
  for (let p = 0; p < image.length; p += 4) {
    out[p] = image[p];
    out[p + 1] = image[p + 1];
    out[p + 2] = image[p + 2];
    out[p + 3] = 255 - paint[p + 3];
  }
  return out;
}

/**
 * The painted layer an image already carries (a mask saved earlier): coverage 255 - alpha,
 * drawn in `colour` (r, g, b). Opaque images give an empty layer.
 */
export function paintFromAlpha(image: Uint8ClampedArray | Uint8Array, colour: [number, number, number]): Uint8ClampedArray<ArrayBuffer> {
  const out = new Uint8ClampedArray(new ArrayBuffer(image.length));
  for (let p = 0; p < image.length; p += 4) {
    const cover = 255 - image[p + 3];
    if (cover === 0) continue;
    out[p] = colour[0];
    out[p + 1] = colour[1];
    out[p + 2] = colour[2];
    out[p + 3] = cover;
  }
  return out;
}

/** A pointer position over the shown (scaled) canvas, in the image's pixels. */
export function toImagePoint(
  client: { x: number; y: number },
  shown: { left: number; top: number; width: number; height: number },
  image: { width: number; height: number },
): { x: number; y: number } {
  return {
    x: ((client.x - shown.left) / shown.width) * image.width,
    y: ((client.y - shown.top) / shown.height) * image.height,
  };
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(body, 8);
  view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
  return out;
}

async function zlib(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new CompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** An 8-bit RGBA PNG of `rgba` (width x height pixels, rows top to bottom). */
export async function encodeRgbaPng(width: number, height: number, rgba: Uint8Array | Uint8ClampedArray): Promise<Uint8Array> {
  if (!(width > 0 && height > 0) || rgba.length !== width * height * 4)
    throw new Error(`a ${width}x${height} RGBA image has ${width * height * 4} bytes, not ${rgba.length}`);
  const stride = width * 4;
  // Each row starts with its filter type, 0 (none).
  const raw = new Uint8Array((stride + 1) * height);
  for (let y = 0; y < height; y++) raw.set(rgba.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  const header = new Uint8Array(13);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, width);
  hv.setUint32(4, height);
  header.set([8, 6, 0, 0, 0], 8); // 8 bits, RGBA, deflate, adaptive filtering, no interlace
  const parts = [
    new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk('IHDR', header),
    chunk('IDAT', await zlib(raw)),
    chunk('IEND', new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
