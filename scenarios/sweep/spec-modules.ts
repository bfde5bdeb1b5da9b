import { moduleParamDocs, type ParamDoc } from '../params.ts';
import { displayPath, isModuleRef, loadBatchPolicy, loadStrategy } from '../user-module.ts';
import { SpecError, USER_KEY, type SweepSpec } from './spec.ts';

/**
 * Before a sweep starts: load every user module its grid names (strategy and policy
 * values, relative to the spec file's directory) and check every `strategy.KEY` and
 * `batching.KEY` list against the modules' own schemas, so a bad module or value is one
 * line at once, not a failed point per worker.
 */
export async function checkSpecModules(spec: SweepSpec, baseDir: string): Promise<void> {
  const docs = new Map<string, { doc: ParamDoc; file: string }[]>();
  const add = (prefix: 'strategy' | 'batching', file: string, schema: Parameters<typeof moduleParamDocs>[2]) => {
    for (const doc of moduleParamDocs(prefix, file, schema)) docs.set(doc.key, [...(docs.get(doc.key) ?? []), { doc, file }]);
  };
  for (const ref of spec.grid.strategy.filter(isModuleRef)) {
    const m = await loadStrategy(ref, baseDir);
    add('strategy', m.file, m.def.params);
  }
  for (const ref of spec.grid.policy.filter(isModuleRef)) {
    const m = await loadBatchPolicy(ref, baseDir);
    add('batching', m.file, m.def.params);
  }
  const grid = spec.grid as Record<string, readonly unknown[]>;
  for (const key of Object.keys(grid).filter((k) => USER_KEY.test(k)).sort()) {
    const owners = docs.get(key);
    if (!owners) {
      const known = [...docs.keys()].filter((k) => k.startsWith(key.split('.')[0]!));
      throw new SpecError(`spec grid.${key}: no ${key.startsWith('strategy.') ? 'strategy' : 'batching policy'} module of the grid has this parameter${known.length ? `; theirs: ${known.join(', ')}` : ''}`);
    }
    (grid[key] ?? []).forEach((v, i) => {
      if (v === null) return;
      for (const { doc, file } of owners) {
        const r = doc.schema.safeParse(v);
        if (!r.success) throw new SpecError(`spec grid.${key}[${i}]: ${displayPath(file)} rejects ${JSON.stringify(v)}: ${r.error.issues[0]?.message ?? 'invalid'}`);
      }
    });
  }
}
