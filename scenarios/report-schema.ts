import { z } from 'zod';

/**
 * The documented shape of `lab run --json`: one object per run. `report.schema.json`
 * beside this file is generated from it (`lab schema`) and tested to match.
 */
const percentiles = z.object({
  count: z.number().int().nonnegative(),
  p50: z.number().nonnegative(),
  p90: z.number().nonnegative(),
  p99: z.number().nonnegative(),
  max: z.number().nonnegative(),
  mean: z.number().nonnegative(),
}).describe('latency percentiles in virtual nanoseconds');

export const scenarioReportSchema = z.object({
  scenario: z.string().describe('scenario name, as `lab list` shows it'),
  profile: z.enum(['linux-3.0', 'linux-4.18', 'linux-5.8', 'linux-5.15', 'linux-6.x']),
  driver: z.string().describe('registration strategy or driver variant'),
  seed: z.number().int(),
  params: z.record(z.string(), z.union([z.number(), z.string(), z.boolean()])).describe('every documented parameter with its value'),
  outcome: z.object({
    ok: z.boolean().describe('the run behaved as the scenario expects for this profile and driver'),
    run: z.string().describe('how the simulation ended: task-done, idle, time-limit, event-limit, failed'),
    expected: z.array(z.string()).describe('violation ids the scenario expects'),
    seen: z.record(z.string(), z.number().int().positive()).describe('violations found, by id'),
    unexpected: z.array(z.string()),
    missing: z.array(z.string()),
    failure: z.string().optional().describe('the model error that failed the run, if any'),
  }),
  narrative: z.array(z.object({ t: z.number().nonnegative().describe('virtual ns'), text: z.string() })),
  figures: z.object({
    invalidationNs: z.record(z.string(), percentiles).describe('notifier callback entry to return, per event type and all'),
    kernelOpNs: z.record(z.string(), percentiles).describe('syscalls by name and invalidation windows by event'),
    faultNs: percentiles.describe('NIC fault raise to resume'),
    wrNs: percentiles.describe('work request post to completion'),
    counters: z.object({
      invalidations: z.number().int().nonnegative(),
      syncs: z.number().int().nonnegative(),
      zaps: z.number().int().nonnegative(),
      entriesZapped: z.number().int().nonnegative(),
      faults: z.number().int().nonnegative(),
      faultsResumedWithError: z.number().int().nonnegative(),
      retries: z.number().int().nonnegative(),
      prefetches: z.number().int().nonnegative(),
      revocations: z.number().int().nonnegative(),
    }),
    bytesMoved: z.number().nonnegative(),
    throughputBytesPerSec: z.number().nonnegative(),
    syncStallNs: z.number().nonnegative(),
    virtualNs: z.number().nonnegative(),
  }),
  extra: z.record(z.string(), z.union([z.number(), z.string()])).describe('scenario-specific figures'),
  driverModule: z.object({
    name: z.string().describe('the strategy\'s name (defineStrategy)'),
    stands: z.string().describe('the reference driver it stood in for'),
    path: z.string(),
    export: z.string(),
    sha256: z.string().describe('of the module file when it was loaded'),
  }).optional().describe('the user strategy module the run used, if any'),
  variant: z.object({
    name: z.string().describe('the variants as given, joined with + (lab variants lists them)'),
    proposals: z.array(z.object({
      name: z.string(),
      status: z.literal('proposal').describe('never mainline: a design argued in a seed thread, or the user\'s'),
      seedFile: z.string().describe('the thread (../shared/seeds/) or the user\'s source'),
      speaker: z.string(),
      date: z.string(),
      summary: z.string(),
      module: z.string().optional().describe('path#export of a user variant (defineVariant)'),
    })),
    expectation: z.object({
      violations: z.array(z.string()),
      outcome: z.array(z.enum(['crash', 'stuck', 'data lost', 'incoherence', 'ok'])),
      reading: z.string().describe('the thread\'s claim the row tests'),
      costs: z.record(z.string(), z.enum(['>0', '0'])).optional(),
    }).nullable().describe('what the story expects under this variant (null: none declared)'),
  }).optional().describe('the kernel variants under study layered on the profile (lab run --variant, lab compare)'),
  labels: z.array(z.enum(['crash', 'stuck', 'data lost', 'incoherence', 'ok'])).optional().describe('the outcome in lab compare\'s words, worst first'),
  costs: z.object({
    flaggedPages: z.number().int().nonnegative().describe('frames that got hubbard-flag\'s PG_dma_pinned'),
    flaggedAfterRelease: z.number().int().nonnegative().describe('at the end, flagged frames with no GUP reference left'),
    flaggedAfterReleaseNs: z.number().nonnegative().describe('the longest such frame has stayed flagged since its last GUP reference went'),
    keptFlagged: z.number().int().nonnegative().describe('try_to_unmap or buffer releases that left a flagged page alone'),
    keptFlaggedUnreferenced: z.number().int().nonnegative().describe('of those, on pages with no GUP reference'),
    writebacks: z.number().int().nonnegative(),
    cleanedWhilePinned: z.number().int().nonnegative().describe('pages written back while they held a GUP reference'),
    firstCleanIntoPinNs: z.number().nonnegative().nullable().describe('the first such clean, in ns since the GUP reference was taken'),
    writebackSkipped: z.number().int().nonnegative().describe('writebacks gup-dirty-forever skipped'),
    releasesNotDirtied: z.number().int().nonnegative().describe('GUP releases dirty-at-gup did not dirty'),
    waits: z.number().int().nonnegative().describe('DMA-idle waits begun (wait-for-dma-idle)'),
    waitNs: z.number().nonnegative().describe('virtual ns in DMA-idle waits that ended'),
    stuck: z.array(z.object({ node: z.string(), frame: z.number().int(), caller: z.string(), sinceNs: z.number(), holder: z.string() })).describe('waits that never ended, naming the GUP holder'),
  }).optional().describe('what the proposals cost, measured from the trace (with a variant, or in lab compare)'),
  violations: z.array(z.object({
    id: z.string(),
    severity: z.enum(['error', 'warning']),
    time: z.number().nonnegative(),
    message: z.string(),
    trail: z.array(z.object({ time: z.number(), kind: z.string(), text: z.string(), task: z.number().nullable().optional() })),
  })),
});

export type ScenarioReportJson = z.infer<typeof scenarioReportSchema>;

/** The JSON Schema document for the report (what report.schema.json holds). */
export function reportJsonSchema(): unknown {
  return z.toJSONSchema(scenarioReportSchema, { target: 'draft-2020-12' });
}
