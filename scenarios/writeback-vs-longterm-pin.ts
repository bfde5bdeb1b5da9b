import { z } from 'zod';
import {
  EFAULT, MAP_SHARED, PAGE_SIZE, PROFILES, PG_DIRTY, PG_PRIVATE, errnoName, pteFrame, startFlusher, vpn, type Co,
} from '../kernel-model/index.ts';
import {
  IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_WRITE, IBV_SEND_SIGNALED, IBV_WR_RDMA_WRITE,
  MLX5_ODP_CAPS, NO_ODP_CAPS, wcStatusName,
} from '../device/index.ts';
import { odpStrategy, pinnedStrategy, type IbvMr } from '../driver/index.ts';
import { ALL_ACCESS, P, RW, completions, connectRc, equalBytes, mapAnon, must, openApp, pattern, regOk, store } from './app.ts';
import type { ParamDoc } from './params.ts';
import type { ScenarioDefinition } from './scenario.ts';
import type { VariantExpectation } from '../kernel-model/index.ts';

/** Bytes each peer write puts into a page (a record at a fresh offset each round). */
const RECORD = 64;

const PARAMS: readonly ParamDoc[] = [
  { key: 'writeback.periodNs', description: 'the flusher wakes this often (dirty_writeback_interval; Linux default 5 s); the story needs one round before the peer stops', default: 5_000_000_000, schema: z.coerce.number().int().positive() },
  { key: 'writeback.dirtyExpireNs', description: 'the flusher writes an inode once it has been dirty this long (dirty_expire_interval; Linux default 30 s)', default: 30_000_000_000, schema: z.coerce.number().int().min(0) },
  { key: 'peer.rounds', description: 'rounds of RDMA WRITEs from the peer, one per second, one record into each page; the story needs some after the first writeback', default: 36, schema: z.coerce.number().int().min(1).max(100) },
];

/**
 * Seeds 000 and 003 (John Hubbard, Christopher Lameter, Dan Williams, June 2018) and the
 * question Dave Chinner asks in seed 002 (2019): "what prevents background writeback from
 * cleaning the dirty page ~30s into a long term pin?" Nothing did. RDMA had lived with it
 * since 2005.
 *
 * The story: an application maps a two-page file MAP_SHARED (a log: one page it will
 * retire, one it keeps registered for as long as it runs) and registers one MR per page
 * for a peer's RDMA WRITEs. The peer writes a record into each page once a second. The
 * flusher wakes every 5 s (dirty_writeback_interval) and writes back the file once it has
 * been dirty 30 s (dirty_expire_interval, mm/page-writeback.c; Chinner's "~30s"): with the
 * filesystem releasing the buffers of what it just cleaned (`dropBuffers`), it cleans both
 * pages through folio_mkclean (kernel rule 76, hazard H7) 30 s into the pin. The PROTECTION_PAGE invalidation write-protects the CPU's PTEs; a pinned
 * MR has no notifier, so the NIC keeps writing into a page the kernel now believes equals
 * the disk:
 * - every record after the clean lands in a clean page (`dma-write-clean-page`), and no
 *   later writeback or fsync writes it, because writeback visits only dirty pages;
 * - deregistering the first MR releases its pages with set_page_dirty_lock
 *   (unpin_user_pages_dirty_lock after 5.6): the filesystem is asked to dirty a page it
 *   has no buffers for (`dirty-without-buffers`; in 2018, ext4's BUG_ON in writepages);
 * - the second MR is still registered when the application fsyncs and the run ends: the
 *   page is clean and the disk lacks the peer's last records (`lost-write`), though fsync
 *   returned 0. (Two MRs because the release that dirties a page also rescues its bytes:
 *   in this model the next writeback writes the page out; in 2018 ext4 crashed first.
 *   What a long-lived MR loses is what it holds when nobody releases it.)
 *
 * linux-6.x refuses the pin: ib_umem_get asks for FOLL_WRITE | FOLL_LONGTERM on a
 * dirty-tracked file mapping and GUP answers -EFAULT (rule 58, since 6.5), so the
 * application learns at registration, not from the disk. The same workload on an ODP MR
 * (`--driver odp`, an mlx5-class NIC) follows the notifier: folio_mkclean's
 * PROTECTION_PAGE zaps the device's write access, the next RDMA WRITE faults (an RNR
 * NAK to the peer while the driver works), and the driver's write fault goes through
 * page_mkwrite, which reattaches the buffers and dirties the page: nothing is lost.
 *
 * Default: linux-4.18 with the pinned driver, the kernel the seed threads argue about,
 * because the failure is the story and a driver author should see all three violations
 * with their trails (writeback, DMA, set_page_dirty) before the fix. `--profile linux-6.x`
 * shows the refusal, `--profile linux-6.x --driver odp` the cure. The model's ODP driver
 * follows the profile: on linux-4.18 it is the 3.19-to-5.4 protocol (one classic notifier
 * per ucontext walking its own interval tree of umems, the notifiers_seq/notifiers_count
 * retry check, pages faulted with get_user_pages_remote; driver/umem-odp-ucontext.ts), on
 * linux-5.8 interval notifiers faulting through GUP, from 5.10 hmm_range_fault.
 */
/**
 * The rows of `lab compare writeback-vs-longterm-pin --profile linux-4.18` (issue 13 item
 * 3): what each proposal's thread predicted, and where the model says otherwise, why.
 *
 * - `wait-for-dma-idle` (seed 003): the thread predicted the buffer release stuck behind the
 *   long-term pin, and it is: the flusher cleans page 0 at 30 s and waits, holding the page
 *   lock, for the reference MR 0 holds. Two things follow that the thread did not say: the
 *   device still writes the page the flusher cleaned (`dma-write-clean-page`), and no write
 *   is lost, because the release of MR 0 dirties the page while its buffers are still there
 *   (so fsync writes it) and the flusher reaches page 1 only after the last record. It then
 *   waits on page 1 for as long as MR 1 lives: the run ends with the flusher stuck.
 * - `gup-dirty-forever` (seed 002): page 1's bytes are not on disk after fsync returns 0,
 *   as predicted, but the sanitizer reports no `lost-write`: the page is still dirty in the
 *   page cache, and its bytes reach the disk once the pin goes. What the row measures is
 *   the writebacks skipped; the story's figure `records lost on disk` counts page 1's
 *   records missing after fsync.
 */
const WRITEBACK_ROWS: Readonly<Record<string, VariantExpectation>> = {
  none: {
    violations: ['dirty-without-buffers', 'dma-write-clean-page', 'lost-write'], outcome: ['crash', 'data lost', 'incoherence'],
    reading: 'seed 000: "RDMA has been living with this problem since 2005": the 2018 crash at release (set_page_dirty without buffers) and records lost on disk',
  },
  'hubbard-flag': {
    violations: ['dma-write-clean-page', 'lost-write'], outcome: ['data lost', 'incoherence'],
    costs: { keptFlagged: '>0', flaggedAfterRelease: '>0', cleanedWhilePinned: '>0' },
    reading: 'seed 000, Hubbard: "don\'t unmap or drop filesystem buffers": no crash, buffers kept, but the page is still cleaned under the NIC and page 1 loses its records; page 0 stays flagged after its MR went (Lameter: "How do you decide when to clear the flag?")',
  },
  'wait-for-dma-idle': {
    violations: ['dma-write-clean-page'], outcome: ['stuck', 'incoherence'],
    costs: { stuck: '>0', waits: '>0' },
    reading: 'seed 003, Williams: "wait for the page reference count to drop to one": the buffer release waits; behind a long-term pin it never returns (the flusher stuck on page 1, naming the MR\'s GUP reference)',
  },
  'gup-dirty-forever': {
    violations: [], outcome: ['ok'],
    costs: { writebackSkipped: '>0', cleanedWhilePinned: '0' },
    reading: 'seed 002, Glisse: "keep the page always dirty and never allow page write back to restore the page in a clean state": no crash, no clean page written, but fsync returns 0 with page 1 not on disk while pinned',
  },
  'dirty-at-gup': {
    violations: ['dma-write-clean-page', 'lost-write'], outcome: ['data lost', 'incoherence'],
    costs: { releasesNotDirtied: '>0', cleanedWhilePinned: '>0' },
    reading: 'seed 002, Chinner: "what prevents background writeback from cleaning the dirty page ~30s into a long term pin?": nothing: cleaned about 30 s in (35 s: dirty_expire_interval and the next flusher pass), then written by the NIC while clean; no crash at release, records lost',
  },
};

export const writebackVsLongtermPin: ScenarioDefinition = {
  name: 'writeback-vs-longterm-pin',
  summary: 'seeds 000/002/003: writeback cleans a long-term pinned file page while the NIC writes it (4.18); 6.x refuses the pin, ODP refaults',
  seeds: ['000', '002', '003'],
  defaultProfile: 'linux-4.18',
  drivers: ['pinned', 'odp'],
  defaultDriver: 'pinned',
  params: PARAMS,
  untilNs: 120_000_000_000,
  expect(profile, driver) {
    if (driver !== 'pinned') return [];
    // Writable long-term pins of dirty-tracked file mappings are refused from 6.5 on.
    if (PROFILES[profile].refuseLongtermFileWrite) return [];
    return ['dma-write-clean-page', 'dirty-without-buffers', 'lost-write'];
  },
  expectVariant(profile, driver, variant) {
    if (driver !== 'pinned' || PROFILES[profile].refuseLongtermFileWrite) {
      // No pin (ODP, or refused at registration): the proposals about pinned pages change nothing.
      return variant && variant.variants.every((v) => Object.hasOwn(WRITEBACK_ROWS, v.name)) ? { violations: [], outcome: ['ok'], reading: 'nothing is pinned: the proposals about pinned pages have nothing to act on' } : null;
    }
    return WRITEBACK_ROWS[variant ? variant.name : 'none'] ?? null;
  },
  setup(ctx) {
    const odp = ctx.driver === 'odp';
    const host = ctx.node('host', {
      device: odp ? { nonOdp: pinnedStrategy(), odp: odpStrategy() } : { nonOdp: pinnedStrategy() },
      caps: { odp: odp ? MLX5_ODP_CAPS : NO_ODP_CAPS },
    });
    const peerNode = ctx.node('peer', { device: { nonOdp: pinnedStrategy() } });
    const k = host.kernel;
    const app = openApp(host, k.createProcess('logger'));
    const peer = openApp(peerNode, peerNode.kernel.createProcess('writer'));
    const file = k.createFile('log', 2 * PAGE_SIZE);
    const periodNs = Number(ctx.params['writeback.periodNs']);
    const rounds = Number(ctx.params['peer.rounds']);
    const expireNs = Number(ctx.params['writeback.dirtyExpireNs']);
    const flusher = startFlusher(k, { periodNs, dropBuffers: true, dirtyExpireNs: expireNs });
    const sec = (ns: number) => `${(ns / 1e9).toFixed(ns % 1e9 ? 3 : 0)} s`;
    const seenClean = [false, false];
    let fsyncing = false;
    const registered = [false, false];
    // Narrate each writeback of the log as it happens (the flusher or fsync), and what a
    // kernel variant under study (kernel-model/variant.ts) does differently, once each.
    const proposal = ctx.profile.variant?.switches;
    const told = new Set<string>();
    const once = (key: string, text: string) => {
      if (!told.has(key)) ctx.say(text);
      told.add(key);
    };
    k.sim.trace$.subscribe((r) => {
      if (r.type === 'proposal' && r.node === k.node) {
        if (r.what === 'writeback-skipped') once('skip', `${fsyncing ? 'fsync' : 'the flusher'} skips a page with GUP references (gup-dirty-forever): it stays dirty, nothing is write-protected, nothing reaches the disk`);
        else if (r.what === 'dma-idle-wait') once(`wait${r.frame}`, `the filesystem's buffer release (${r.caller}) waits for the page to be DMA-idle (wait-for-dma-idle): the MR's GUP reference holds it`);
        else if (r.what === 'dma-idle-done') ctx.say(`the buffer release's wait ends: the page is DMA-idle (wait-for-dma-idle)`);
        else if (r.what === 'release-not-dirtied') once('rel', 'the release dirties nothing (dirty-at-gup: the page was dirtied when GUP took it)');
        return;
      }
      if (r.type !== 'writeback' || r.file !== file.id) return;
      const live = registered[r.index] === true;
      const buffers = fsyncing && k.sim.current?.name !== 'flush-8:0' ? ''
        : proposal?.dmaPinnedFlag && live ? ', the filesystem keeps the buffers of the flagged page (hubbard-flag)'
          : proposal?.waitForDmaIdle ? '' : ', the filesystem drops the buffers';
      // Who cleans: the flusher's kthread, or the logger's fsync (a flusher stuck in a wait may resume during the fsync).
      const byFsync = fsyncing && k.sim.current?.name !== 'flush-8:0';
      ctx.say(`${byFsync ? 'fsync' : 'the flusher'} cleans page ${r.index} of log: folio_mkclean sends PROTECTION_PAGE and write-protects the CPU PTE, ` +
        `the bytes go to disk${buffers}` +
        (!live ? '' : odp ? '; the ODP MR loses its write access' : '; the pinned MR has no notifier: the NIC keeps its read-write translation'));
    });

    return function* (): Co<void> {
      const base = must(yield* app.p.mmap(0, 2 * P, RW, MAP_SHARED, file, 0), 'mmap(log)');
      yield* store(app, base, pattern(100, RECORD));
      yield* store(app, base + P, pattern(101, RECORD));
      ctx.say(`the logger maps 'log' (2 pages) MAP_SHARED and writes a header into each: page_mkwrite attached buffers, both pages dirty`);

      const access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | (odp ? IBV_ACCESS_ON_DEMAND : 0);
      const mrs: IbvMr[] = [];
      for (let i = 0; i < 2; i++) {
        const r = yield* app.ctx.regMr(app.pd, base + i * P, P, access);
        if (typeof r === 'number') {
          const why = r === -EFAULT && !odp
            ? 'GUP refuses a writable FOLL_LONGTERM pin of a dirty-tracked file mapping (kernel rule 58, since 6.5): the application learns at registration, before any data is at risk. ' +
              'What remains: an ODP MR (--driver odp), or receiving into anonymous memory and writing the file itself'
            : odp ? `ODP came in Linux 3.19, after ${ctx.profile.name}` : 'registration failed';
          ctx.say(`ibv_reg_mr(page ${i} of log, LOCAL_WRITE | REMOTE_WRITE${odp ? ' | ON_DEMAND' : ''}) = ${errnoName(r)}: ${why}`);
          ctx.figure('registration', errnoName(r));
          ctx.figure('bytes in records lost on disk', 0);
          yield* app.ctx.close();
          yield* peer.ctx.close();
          return;
        }
        mrs.push(r);
        registered[i] = true;
      }
      ctx.figure('registration', 'ok');
      if (odp) {
        const p = k.profile;
        const follow = p.odpNotifier === 'ucontext'
          ? 'the ucontext\'s classic notifier and its interval tree of umems (3.19 to 5.4), faulting with get_user_pages_remote'
          : `the interval notifier and ${p.odpFault === 'hmm' ? 'hmm_range_fault' : 'get_user_pages_remote (hmm_range_fault from 5.10)'}`;
        ctx.say(`two ODP MRs, one per page: nothing pinned; the NIC faults pages in through ${follow}`);
      }
      else {
        const how = k.profile.follPin ? 'pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)'
          : k.profile.name === 'linux-3.0' ? 'get_user_pages(FOLL_WRITE)' : 'get_user_pages_longterm(FOLL_WRITE)';
        const refused = k.profile.name === 'linux-3.0' ? 'nothing refuses it' : 'only FS-DAX is refused';
        ctx.say(`two pinned MRs, one per page, through ib_umem_get: ${how}; in ${ctx.profile.name} ${refused}`);
      }
      ctx.say(`the flusher wakes every ${sec(periodNs)} and writes back a file once it has been dirty ${sec(expireNs)} (dirty_expire_interval); the peer writes one ${RECORD}-byte record into each page every second`);

      // The peer: an RC connection, a source buffer, one RDMA WRITE per page per second.
      const [qp] = connectRc(peer, app);
      const src = yield* mapAnon(peer, 1);
      const srcMr = yield* regOk(peer, src, P, ALL_ACCESS);
      let failed = 0;
      let cleanWrites = 0;
      for (let round = 1; round <= rounds; round++) {
        // Each round's records arrive at the second, or (seeds other than 1) up to 0.4 s after it.
        yield* k.sim.sleep(1_000_000_000 - (k.sim.now() % 1_000_000_000) + ctx.vary(`record arrival ${round}`, 0, 0, 400_000_000));
        for (let page = 0; page < 2; page++) {
          const rec = pattern(round * 2 + page, RECORD);
          yield* store(peer, src, rec);
          const frame = pteFrame(app.p.mm.pageTable.get(vpn(base + page * P)));
          const wasClean = frame > 0 && !k.phys.has(frame, PG_DIRTY);
          const mr = mrs[page] as IbvMr;
          must(yield* peer.ctx.postSend(qp, {
            wrId: round * 2 + page, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
            sgList: [{ addr: src, length: RECORD, lkey: srcMr.lkey }],
            rdma: { remoteAddr: base + page * P + round * RECORD, rkey: mr.rkey },
          }), 'post RDMA WRITE');
          const [wc] = yield* completions(peer, 1);
          if (!wc || wc.status !== 0) failed++;
          const status = wc ? wcStatusName(wc.status) : 'no completion';
          if (wasClean && !odp) cleanWrites++;
          if (round === 1) ctx.say(`peer RDMA WRITE of record 1 into page ${page}: ${status}`);
          else if (wasClean && !seenClean[page]) {
            seenClean[page] = true;
            ctx.say(`peer RDMA WRITE of record ${round} into page ${page}: ${status}. ` + (odp
              ? 'The page was clean: the NIC faulted on the zapped entry (an RNR NAK to the peer meanwhile), the driver\'s write fault went through page_mkwrite, which reattached the buffers and dirtied the page'
              : 'The page is clean: the kernel believes it equals the disk, so no writeback will ever write these bytes'));
          }
        }
      }
      ctx.say(`${rounds} rounds done; the flusher ran ${flusher.rounds} times and wrote ${flusher.pagesWritten} pages` +
        (odp ? '' : ` (after its first round it found nothing dirty: ${cleanWrites} records since went into clean pages)`));
      if (odp) {
        const c = mrs.map((m) => m.umem.counters);
        ctx.say(`so far the ODP MRs took ${c.reduce((s, x) => s + x.invalidations, 0)} invalidations and ${c.reduce((s, x) => s + x.faultsHandled, 0)} NIC faults: one refault per clean`);
      }

      // Retire page 0's MR: its pages are released dirty.
      const f0 = pteFrame(app.p.mm.pageTable.get(vpn(base)));
      const buffers0 = k.phys.has(f0, PG_PRIVATE);
      const dirty0 = k.phys.has(f0, PG_DIRTY);
      must(yield* app.ctx.deregMr(mrs[0] as IbvMr), 'dereg_mr');
      registered[0] = false;
      const atGup = proposal?.dirtyAtGup === true;
      const release = odp ? 'the ODP MR just drops its mirror' : atGup ? 'the release only drops its reference (dirty-at-gup)'
        : k.profile.follPin ? 'unpin_user_pages_dirty_lock dirties it' : 'set_page_dirty_lock, then put_page';
      ctx.say(`ibv_dereg_mr(page 0): the page is ${dirty0 ? 'dirty' : 'clean'} ${buffers0 ? 'with its buffers' : 'and has NO buffers'}; ${release}` +
        (!odp && !atGup && !buffers0 && !dirty0 ? ': the filesystem is asked to dirty a page it has no block mapping for (in 2018, ext4\'s BUG_ON in writepages)' : ''));

      // The application believes in fsync.
      fsyncing = true;
      must(yield* app.p.fsync(file), 'fsync');
      fsyncing = false;
      let recordsLost = 0;
      for (let page = 0; page < 2; page++) {
        let lost = 0;
        for (let round = 1; round <= rounds; round++) {
          const o = round * RECORD;
          if (!equalBytes(file.diskPage(page).subarray(o, o + RECORD), pattern(round * 2 + page, RECORD))) lost++;
        }
        recordsLost += lost;
        ctx.say(`fsync returned 0; on disk, page ${page} ${lost === 0 ? 'holds every record' : `lacks ${lost} of ${rounds} records`}` +
          (page === 0 && !odp && !atGup ? ' (the release dirtied it again, so this fsync wrote it; in 2018 the machine would have crashed first)' : '') +
          (page === 1 && lost > 0 ? (proposal?.gupDirtyForever
            ? ': its MR is still registered and the page is kept dirty, so fsync skipped it; the bytes reach the disk once the pin goes (gup-dirty-forever)'
            : ': its MR is still registered and the page is clean, so writeback will never write it') : ''));
      }
      ctx.figure('records written by the peer', 2 * rounds);
      ctx.figure('work requests failed', failed);
      ctx.figure('records written into a clean page', cleanWrites);
      ctx.figure('flusher pages written', flusher.pagesWritten);
      ctx.figure('records lost on disk', recordsLost);
      // Whole records (64 bytes each); lost-write counts the bytes that differ from the disk,
      // which is fewer when a record byte happens to equal what the disk holds (0).
      ctx.figure('bytes in records lost on disk', recordsLost * RECORD);
      if (odp) {
        const c = mrs.map((m) => m.umem.counters);
        // The narrative's count was taken before fsync; this one includes fsync's write-back.
        ctx.figure('ODP MR invalidations, fsync included', c.reduce((s, x) => s + x.invalidations, 0));
        ctx.figure('ODP faults', c.reduce((s, x) => s + x.faultsHandled, 0));
        must(yield* app.ctx.deregMr(mrs[1] as IbvMr), 'dereg_mr');
      }
    };
  },
};
