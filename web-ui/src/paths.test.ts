import { describe, expect, it } from 'vitest';
import { inputsName, withoutServerPaths } from './paths';

describe('server paths shown to the user', () => {
  it('cuts the server folders from a library subgraph doc, leaves type names alone', () => {
    expect(withoutServerPaths('subgraph /tmp/weft-ui-test.x1/workflows/lib/Txt2Img.yaml')).toBe('subgraph lib/Txt2Img.yaml');
    expect(withoutServerPaths('reads /srv/data/inputs/cat.png (int/float)')).toBe('reads cat.png (int/float)');
    expect(withoutServerPaths('an int/float or a seed')).toBe('an int/float or a seed');
  });

  it('names an input image relative to the inputs folder', () => {
    const choices = ['/tmp/t/workflows/inputs/a.png', '/tmp/t/workflows/inputs/sub/b.png'];
    expect(inputsName('/tmp/t/workflows/inputs/upload-1.png', choices)).toBe('upload-1.png');
    expect(inputsName('/tmp/t/workflows/inputs/sub/b.png', choices)).toBe('sub/b.png');
    // No listing to compare with: an absolute path shows its file name, a relative one as it is.
    expect(inputsName('/tmp/t/workflows/inputs/upload-1.png', [])).toBe('upload-1.png');
    expect(inputsName('workflows/inputs/a.png', [])).toBe('workflows/inputs/a.png');
  });
});
