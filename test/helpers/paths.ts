/**
 * Paths inside the repository, the same whether a test runs compiled from dist/test or from test/.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above the tests');
    dir = up;
  }
  return dir;
}

export const repoRoot = findRoot();

export function repoPath(...parts: string[]): string {
  return join(repoRoot, ...parts);
}
