// A user's registration-cache policy (defineCachePolicy): memory hooks installed, but it
// ignores every invalidation, so it trusts stale regions. For the CLI test.
import { defineCachePolicy } from '../../../driver/index.ts';

export const deaf = defineCachePolicy({
  name: 'deaf-hooks',
  source: 'memory-hooks',
  policy: () => ({ name: 'deaf-hooks', source: 'memory-hooks', onInvalidate: () => false }),
});
