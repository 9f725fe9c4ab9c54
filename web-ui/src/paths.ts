//! Server paths as the user knows them: relative to the inputs folder, or to the workflows folder.

/**
 * A catalogue text with the server's folders cut from the paths in it (a library subgraph's doc
 * names its file): `/srv/x/workflows/lib/Txt2Img.yaml` reads `lib/Txt2Img.yaml`, any other
 * absolute path its file name. Tooltips show where things are to the user, not the server's disk.
 */
export function withoutServerPaths(text: string): string {
  return text.replace(/(?<=^|[\s('"`])(?:[A-Za-z]:)?(?:[\\/][^\s\\/'"`)]+){2,}/g, (path) => {
    const parts = path.split(/[\\/]/).filter(Boolean);
    const lib = parts.lastIndexOf('lib');
    return lib >= 0 && lib === parts.length - 2 ? parts.slice(lib).join('/') : parts[parts.length - 1];
  });
}

/** The file name a LoadImage choice is known by: its path relative to the inputs folder. */
export function inputsName(path: string, choices: string[]): string {
  const dir = commonDir(choices);
  if (dir && path.startsWith(dir)) return path.slice(dir.length);
  return path.includes('/') && /^(\/|[A-Za-z]:)/.test(path) ? path.slice(path.lastIndexOf('/') + 1) : path;
}

/** The folder (with its trailing '/') every path in the list is in, or ''. */
function commonDir(paths: string[]): string {
  if (paths.length === 0) return '';
  let dir = paths[0].slice(0, paths[0].lastIndexOf('/') + 1);
  for (const p of paths) while (dir && !p.startsWith(dir)) dir = dir.slice(0, dir.lastIndexOf('/', dir.length - 2) + 1);
  return dir;
}

