// Value types: colours (ComfyUI's palette where it has one) and which output may feed which input.

const COLOURS: Record<string, string> = {
  model: '#b39ddb',
  text_encoder: '#ffd500',
  vae: '#ff6e6e',
  conditioning: '#ffa931',
  latent: '#ff9cf9',
  image: '#64b5f6',
  mask: '#81c784',
  upscale_model: '#4db6ac',
  safety_model: '#e57373',
  int: '#9ccc65',
  seed: '#9ccc65',
  float: '#aed581',
  string: '#bdbdbd',
  enum: '#bdbdbd',
  bool: '#f48fb1',
};

export function typeColour(t: string): string {
  const known = COLOURS[t];
  if (known) return known;
  // A type added in Rust gets a stable colour of its own.
  let h = 0;
  for (const c of t) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 60% 65%)`;
}

/** Mirrors the engine's `ValueType::accepts(found)`. */
export function accepts(input: string, found: string): boolean {
  if (input === found) return true;
  return (
    (input === 'float' && found === 'int') ||
    (input === 'seed' && found === 'int') ||
    (input === 'int' && found === 'seed') ||
    (input === 'string' && found === 'enum') ||
    (input === 'enum' && found === 'string')
  );
}

/** Every output type an input of type `input` takes (used to dim handles while dragging). */
export function acceptedTypes(input: string, all: Iterable<string>): string[] {
  return [...all].filter((t) => accepts(input, t));
}

interface Sockets {
  inputs: { type: string }[];
  outputs: { type: string }[];
}
const dragCache = new WeakMap<Sockets[], { classes: Record<string, string>; css: string }>();

/**
 * For dimming the sockets a dragged link cannot reach: each input type's classes (`acc-T` for
 * every output type T it accepts) and the CSS rules that use them. Worked out once per catalogue.
 */
export function dragStyles(types: Sockets[]): { classes: Record<string, string>; css: string } {
  const cached = dragCache.get(types);
  if (cached) return cached;
  const all = new Set<string>();
  for (const t of types) {
    for (const i of t.inputs) all.add(i.type);
    for (const o of t.outputs) all.add(o.type);
  }
  const classes: Record<string, string> = {};
  const rules: string[] = [];
  for (const x of all) {
    const ok = [...all].filter((t) => accepts(x, t));
    classes[x] = ok.map((t) => `acc-${t}`).join(' ');
    rules.push(`.drag-in-${x} .h-out${ok.map((t) => `:not(.t-${t})`).join('')}{opacity:.15}`);
    rules.push(`.drag-out-${x} .h-in:not(.acc-${x}){opacity:.15}`);
  }
  const styles = { classes, css: rules.join('\n') };
  dragCache.set(types, styles);
  return styles;
}
