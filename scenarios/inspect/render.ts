/**
 * A snapshot as text: blocks of lines, one block per (node, section), so `--what` can
 * choose sections and `--diff` can compare two instants block by block.
 */
import {
  SECTIONS, fmtNs, hex, type FrameInfo, type NodeInfo, type Section, type StaleEntry, type WorldSnapshot,
} from './snapshot.ts';

export interface Block {
  /** Stable across instants: `host processes`, `stale`, `locks`. */
  id: string;
  section: Section;
  title: string;
  lines: string[];
}

export function frameLine(f: FrameInfo): string {
  if (!f.allocated) return `frame ${f.frame}: FREE (on the free list, generation ${f.generation}: the next allocation hands it out again)`;
  const flags = f.flags.length ? ` [${f.flags.join(', ')}]` : '';
  return `frame ${f.frame}: refcount ${f.refcount}, mapcount ${f.mapcount}, generation ${f.generation}${flags}; ` +
    `CPU maps it at ${f.mappedAt.length ? f.mappedAt.join(', ') : 'no address'}`;
}

export function staleLines(s: StaleEntry): string[] {
  const cpu = s.cpu.state === 'none' ? 'nothing (PTE none)'
    : s.cpu.state === 'swap' ? 'a swap entry (page swapped out)'
      : `frame ${s.cpu.frame} ${s.cpu.writable ? 'read-write' : 'read-only'} (${s.cpu.flags || '-'})`;
  const label = s.kind === 'pinned' ? 'DIVERGED (pinned MR: the device keeps the pages it pinned)'
    : s.inWindow ? 'changing (inside an open invalidation)' : 'STALE';
  return [
    `${label}: ${s.nic} key ${hex(s.key)} (${s.strategy}) page ${s.index} at ${hex(s.va)} of mm${s.mm}, ${s.source === 'cache' ? 'in the translation cache only (zapped, not yet synced)' : 'in the device page table'}`,
    `  device maps: frame ${s.device.frame} ${s.device.perm === 'rw' ? 'read-write' : 'read-only'}, generation ${s.device.generation}, installed at ${fmtNs(s.device.installedAt)}`,
    `    ${frameLine(s.deviceFrame)}`,
    `  CPU maps:    ${cpu}`,
    ...(s.cpuFrame ? [`    ${frameLine(s.cpuFrame)}`] : []),
    `  why: ${s.why}`,
  ];
}

function nodeBlocks(n: NodeInfo): Block[] {
  const blocks: Block[] = [];
  const add = (section: Section, title: string, lines: string[]) => blocks.push({ id: `${n.name} ${section}`, section, title: `${n.name}: ${title}`, lines });

  // One block per process and per MR, so that a page (html.ts) stores each only when it changes.
  blocks.push({ id: `${n.name} memory`, section: 'processes', title: `${n.name}: memory`, lines: [`${n.freeFrames} free frames`] });
  n.processes.forEach((p) => {
    const procs: string[] = [];
    procs.push(`pid ${p.pid} ${p.name} (mm${p.mm})${p.exited ? ' exited' : ''}: ${p.vmas.length} VMAs, ${p.present} present pages, ${p.swapped} swap entries; mmap_lock ${p.mmapLock}`);
    for (const v of p.vmas) procs.push(`  vma ${hex(v.start)}-${hex(v.end)} ${v.perms} ${v.file ?? 'anon'} (${(v.end - v.start) / 4096} pages)`);
    for (const r of p.ptes) {
      const frames = r.flags.startsWith('m') ? `migration entry for frame ${r.frame}${r.pages > 1 ? `..${r.frame + r.pages - 1}` : ''}`
        : r.flags === 's' ? `swap slot ${r.frame}${r.pages > 1 ? `..${r.frame + r.pages - 1}` : ''}`
        : r.frame === 0 ? 'zero page' : `frame ${r.frame}${r.pages > 1 ? `..${r.frame + r.pages - 1}` : ''}`;
      procs.push(`  pte ${hex(r.va)}-${hex(r.va + r.pages * 4096)} ${String(r.pages).padStart(4)} page${r.pages === 1 ? ' ' : 's'} -> ${frames} ${r.flags || '-'}`);
    }
    blocks.push({ id: `${n.name} process ${p.pid}`, section: 'processes', title: `${n.name}: process ${p.pid} ${p.name}`, lines: procs });
  });

  const notif: string[] = [];
  for (const m of n.notifiers) {
    notif.push(`mm${m.mm}: sequence S=${m.seq} (${m.seq % 2 ? 'odd: an invalidation overlaps a subscriber' : 'even: idle'}), active invalidations A=${m.active}` +
      (m.classic.length ? `; classic: ${m.classic.join(', ')}` : ''));
    for (const s of m.interval) notif.push(`  interval ${s.name} [${hex(s.start)}, ${hex(s.last)}] invalidate_seq ${s.invalidateSeq}${s.invalidateSeq === m.seq ? ' (= S: invalidating)' : ''} ${s.where}`);
  }
  add('notifiers', 'notifier subscriptions', notif);

  add('invalidations', 'open invalidation ranges', n.invalidations.map((o) =>
    `mm${o.mm} ${o.event} [${hex(o.start)}, ${hex(o.end)}) ${o.blockable ? 'blockable' : 'non-blockable'}, S=${o.curSeq}, since ${fmtNs(o.since)}${o.task ? ` by task ${o.task}` : ''}`));

  add('pins', 'GUP references (pins and gets)', n.pins.map((p) =>
    `frame ${p.frame}: ${p.pins} pin${p.pins === 1 ? '' : 's'}, ${p.gets} get${p.gets === 1 ? '' : 's'}; refcount ${p.refcount}, mapcount ${p.mapcount}${p.maybeDmaPinned ? ', maybe_dma_pinned' : ''}`));

  for (const nic of n.nics) {
    const lines: string[] = [`stats: ${nic.stats.syncs} syncs, ${nic.stats.updateCommands} update and ${nic.stats.zapCommands} zap commands`];
    for (const mr of nic.mrs) {
      lines.push(`mr key ${hex(mr.key)}: ${mr.present}/${mr.pages} pages present; ${mr.counters.faults} faults, ${mr.counters.updatedPages} pages updated, ${mr.counters.zappedPages} zapped, ${mr.counters.accesses} page accesses`);
    }
    lines.push(`translation cache: ${nic.cache.size}/${nic.cache.capacity} entries`);
    for (const c of nic.cache.entries) {
      lines.push(`  key ${hex(c.key)} page ${c.index}${c.pages > 1 ? `..${c.index + c.pages - 1}` : ''} -> frame ${c.frame}${c.pages > 1 ? `..${c.frame + c.pages - 1}` : ''} ${c.perm}`);
    }
    for (const qp of nic.qps) {
      lines.push(`qp ${qp.qpn} ${qp.type} ${qp.state}${qp.type === 'RC' ? ` -> qp ${qp.destQpn}` : ''}: ${qp.outstanding.length} send WQEs outstanding, ${qp.receivesPosted} receives posted` +
        (qp.responderFault ? `, responder stalled on ${qp.responderFault}` : ''));
      for (const w of qp.outstanding) lines.push(`  ${w}`);
    }
    for (const d of nic.dma) lines.push(`dma in flight: ${d}`);
    for (const f of nic.faults) lines.push(`unresolved ${f}`);
    add('nics', `NIC ${nic.name}`, lines);
    for (const mr of nic.mrs) {
      const what = mr.implicit ? 'implicit ODP' : mr.onDemand ? 'ODP' : 'not faultable';
      const bound = mr.mm !== null ? ` over mm${mr.mm} at ${hex(mr.addr ?? 0)}` : '';
      const mrLines = [`mr key ${hex(mr.key)} ${mr.state} ${what}, ${mr.strategy ?? 'no umem'}${bound}: iova ${hex(mr.iova)} +${mr.length}, ${mr.pages} pages; device page table:`];
      for (const e of mr.entries) {
        mrLines.push(`  page ${e.index}${e.pages > 1 ? `..${e.index + e.pages - 1}` : ''}${e.va !== null ? ` (va ${hex(e.va)})` : ''} -> frame ${e.frame}${e.pages > 1 ? `..${e.frame + e.pages - 1}` : ''} ${e.perm}`);
      }
      blocks.push({ id: `${n.name} ${nic.name} mr ${mr.key}`, section: 'nics', title: `${nic.name} MR ${hex(mr.key)}`, lines: mrLines });
    }
  }
  return blocks;
}

/** Every block of a snapshot, in print order (the stale translations first: they are the point). */
export function snapshotBlocks(s: WorldSnapshot): Block[] {
  const blocks: Block[] = [];
  blocks.push({
    id: 'stale', section: 'stale', title: 'device translations that disagree with the CPU page table',
    lines: s.stale.flatMap(staleLines),
  });
  for (const n of s.nodes) blocks.push(...nodeBlocks(n));
  blocks.push({
    id: 'locks', section: 'locks', title: 'locks',
    lines: s.locks.map((l) => `${l.lock}: held by ${l.holders.length ? l.holders.join(', ') : 'nobody'}${l.waiters.length ? `; waiting: ${l.waiters.join(', ')}` : ''}`),
  });
  blocks.push({ id: 'tasks', section: 'tasks', title: 'tasks alive', lines: s.tasks.map((t) => `${t.id} ${t.name} (${t.kind})`) });
  return blocks;
}

export function header(s: WorldSnapshot, name: string): string[] {
  const out = [`== ${name} at ${s.at}: t = ${fmtNs(s.t)} (${s.t} ns)`];
  if (s.violation) out.push(`violation ${s.violation.index} [${s.violation.severity}] ${s.violation.id}: ${s.violation.message}`);
  if (s.record) out.push(`record: ${s.record}`);
  return out;
}

export function renderSnapshot(s: WorldSnapshot, name: string, what: ReadonlySet<Section> = new Set(SECTIONS)): string[] {
  const out = header(s, name);
  for (const b of snapshotBlocks(s)) {
    if (!what.has(b.section)) continue;
    out.push('', `-- ${b.title}${b.lines.length ? '' : ': none'}`);
    for (const l of b.lines) out.push(`  ${l}`);
  }
  return out;
}

/** The snapshot restricted to `what`, for --json. */
export function filterSnapshot(s: WorldSnapshot, what: ReadonlySet<Section>): Partial<WorldSnapshot> {
  const out: Partial<WorldSnapshot> = { t: s.t, at: s.at };
  if (s.record) out.record = s.record;
  if (s.violation) out.violation = s.violation;
  if (what.has('stale')) out.stale = s.stale;
  if (what.has('locks')) out.locks = s.locks;
  if (what.has('tasks')) out.tasks = s.tasks;
  out.nodes = s.nodes.map((n) => {
    const m: Partial<NodeInfo> & { name: string } = { name: n.name };
    if (what.has('processes')) {
      m.freeFrames = n.freeFrames;
      m.processes = n.processes;
    }
    if (what.has('notifiers')) m.notifiers = n.notifiers;
    if (what.has('invalidations')) m.invalidations = n.invalidations;
    if (what.has('pins')) m.pins = n.pins;
    if (what.has('nics')) m.nics = n.nics;
    return m as NodeInfo;
  });
  return out;
}
