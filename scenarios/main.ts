import { runDemo } from './demo.ts';

// `npm start`: until the scenario catalogue exists, the narrated foundation demo.
const { lines, ok } = runDemo(1);
console.log('notifier-lab demo: a process, the reference mirror (lib/test_hmm dmirror), and every invalidation between them\n');
for (const l of lines) console.log(l);
process.exitCode = ok ? 0 : 1;
