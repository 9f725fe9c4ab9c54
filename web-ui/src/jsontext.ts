// Request bodies as JSON text, with the canvas's whole floats written as floats (`cfg: 5.0` stays
// a float in the file). Apart from graph.ts so the API client does not import the graph code.

/** A whole number in a float input: sent as `5.0` so the file keeps `cfg: 5.0` (JSON.stringify would write 5). */
export class WholeFloat {
  constructor(public value: number) {}
  toJSON() {
    return `\u0001float:${this.value}\u0001`;
  }
}

/** JSON text of a document, with whole floats written as floats. */
export function toJsonText(body: unknown): string {
  return JSON.stringify(body).replace(/"\\u0001float:(-?\d+)\\u0001"/g, '$1.0');
}
