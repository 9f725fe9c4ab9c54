// Reads the workflow a weft PNG carries: an iTXt (or tEXt/zTXt) chunk with keyword `weft-workflow`.

export const WORKFLOW_KEY = 'weft-workflow';
const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The text under `weft-workflow`, or null when the bytes are not a PNG or carry none. */
export async function pngWorkflowText(bytes: Uint8Array): Promise<string | null> {
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = new TextDecoder('latin1');
  const utf8 = new TextDecoder('utf-8');
  let at = 8;
  while (at + 8 <= bytes.length) {
    const len = view.getUint32(at);
    const type = latin1.decode(bytes.subarray(at + 4, at + 8));
    const body = bytes.subarray(at + 8, Math.min(at + 8 + len, bytes.length));
    at += 12 + len;
    if (type === 'IEND') break;
    if (type !== 'iTXt' && type !== 'tEXt' && type !== 'zTXt') continue;
    const nul = body.indexOf(0);
    if (nul < 0 || latin1.decode(body.subarray(0, nul)) !== WORKFLOW_KEY) continue;
    if (type === 'tEXt') return latin1.decode(body.subarray(nul + 1));
    if (type === 'zTXt') return latin1.decode(await inflate(body.subarray(nul + 2)));
    // iTXt: keyword\0 compressed(1) method(1) language\0 translated\0 text
    const compressed = body[nul + 1] === 1;
    let p = nul + 3;
    p = body.indexOf(0, p) + 1; // language tag
    p = body.indexOf(0, p) + 1; // translated keyword
    if (p <= 0) return null;
    const text = body.subarray(p);
    return utf8.decode(compressed ? await inflate(text) : text);
  }
  return null;
}
