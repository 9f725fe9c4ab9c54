import { describe, expect, it } from 'vitest';
import { SHORTCUTS, runShortcut, type ShortcutContext } from './shortcuts';

/** A key press as the browser gives it. */
const press = (key: string, mods: { ctrl?: boolean; shift?: boolean; alt?: boolean; code?: string } = {}) => {
  let prevented = false;
  const e = {
    key,
    code: mods.code ?? (/^[a-z]$/i.test(key) ? `Key${key.toUpperCase()}` : ''),
    ctrlKey: !!mods.ctrl,
    metaKey: false,
    shiftKey: !!mods.shift,
    altKey: !!mods.alt,
    preventDefault: () => (prevented = true),
  } as unknown as KeyboardEvent;
  return { e, prevented: () => prevented };
};

function recorder() {
  const calls: string[] = [];
  const ctx = new Proxy({} as ShortcutContext, {
    get: (_, name: string) => (arg?: unknown) => calls.push(arg === undefined ? name : `${name}(${arg})`),
  });
  return { ctx, calls };
}

// Every row of the table: the key a person presses and what must happen.
const cases: [string, ReturnType<typeof press>, string][] = [
  ['Ctrl+S', press('s', { ctrl: true }), 'save(false)'],
  ['Ctrl+S', press('S', { ctrl: true, shift: true }), 'save(true)'],
  ['Ctrl+Enter', press('Enter', { ctrl: true }), 'queue'],
  ['Ctrl+Shift+Enter', press('Enter', { ctrl: true, shift: true }), 'queueFront'],
  ['Ctrl+Alt+Enter', press('Enter', { ctrl: true, alt: true }), 'cancel'],
  ['Ctrl+Z', press('z', { ctrl: true }), 'undo'],
  ['Ctrl+Y / Ctrl+Shift+Z', press('y', { ctrl: true }), 'redo'],
  ['Ctrl+Y / Ctrl+Shift+Z', press('Z', { ctrl: true, shift: true }), 'redo'],
  ['Ctrl+C', press('c', { ctrl: true }), 'copy'],
  ['Ctrl+V', press('v', { ctrl: true }), 'paste'],
  ['Ctrl+Shift+V', press('V', { ctrl: true, shift: true }), 'pasteWithInputs'],
  ['Ctrl+A', press('a', { ctrl: true }), 'selectAll'],
  ['Ctrl+B', press('b', { ctrl: true }), 'bypass'],
  ['Ctrl+M', press('m', { ctrl: true }), 'mute'],
  ['Ctrl+G', press('g', { ctrl: true }), 'group'],
  ['Alt+C / H', press('c', { alt: true }), 'collapse'],
  // A Mac's Option+C types 'ç': the key's place decides.
  ['Alt+C / H', press('ç', { alt: true, code: 'KeyC' }), 'collapse'],
  ['Alt+C / H', press('h'), 'collapse'],
  ['Shift+D', press('D', { shift: true }), 'duplicate'],
  ['Delete / Backspace', press('Delete'), 'deleteSelected'],
  ['Delete / Backspace', press('Backspace'), 'deleteSelected'],
  ['Ctrl+X', press('x', { ctrl: true }), 'dissolveSelected'],
  ['Space', press(' '), 'searchOnRelease'],
  ['Tab / double-click', press('Tab'), 'search'],
  ['.', press('.'), 'fit'],
  ['Q', press('q'), 'toggleHistory'],
  ['?', press('?', { shift: true }), 'toggleHelp'],
];

describe('the shortcut table', () => {
  for (const [keys, p, call] of cases) {
    it(`${keys}: ${call}`, () => {
      const { ctx, calls } = recorder();
      expect(runShortcut(p.e, ctx, false)).toBe(true);
      expect(calls).toEqual([call]);
    });
  }

  it('lists every shortcut it runs, each tested above', () => {
    expect(new Set(cases.map((c) => c[0]))).toEqual(new Set(SHORTCUTS.map((s) => s.keys)));
  });

  it('leaves keys to a text field, except save and run', () => {
    for (const [keys, p] of cases) {
      const { ctx, calls } = recorder();
      const anywhere = SHORTCUTS.find((s) => s.keys === keys)!.anywhere ?? false;
      expect(runShortcut(p.e, ctx, true)).toBe(anywhere);
      expect(calls.length).toBe(anywhere ? 1 : 0);
    }
    const { ctx } = recorder();
    expect(runShortcut(press('x').e, ctx, false)).toBe(false);
    // Plain c and d are no shortcut (typing them on the canvas does nothing).
    expect(runShortcut(press('c').e, ctx, false)).toBe(false);
    expect(runShortcut(press('d').e, ctx, false)).toBe(false);
  });

  it('keeps the browser from its own meaning of a key, but not copy and paste', () => {
    const { ctx } = recorder();
    const save = press('s', { ctrl: true });
    runShortcut(save.e, ctx, false);
    expect(save.prevented()).toBe(true);
    const copy = press('c', { ctrl: true });
    runShortcut(copy.e, ctx, false);
    expect(copy.prevented()).toBe(false);
  });
});
