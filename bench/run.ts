/**
 * `npm run bench`: how fast tunekit runs the qwen2.5-0.5b shape (random fp32 weights built in
 * memory, nothing read from disk) on this machine, each figure beside the bound the machine's
 * own measured sgemm and memory rates set.
 *
 *   npm run bench                     the table
 *   npm run bench -- --json           one JSON object of every figure, keyed as in the table
 *   npm run bench -- --only inference one section (plus what its bounds need)
 *
 * A section is a name and a `run(ctx)` returning figures (see measure.ts); add one by writing it
 * and listing it in SECTIONS. Progress goes to stderr, the report to stdout.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { CausalLM } from '../src/models/decoder.js';
import { parseDecoderConfig } from '../src/models/config.js';
import { initializeWeights } from '../src/models/init.js';
import { PRESETS } from '../src/models/presets.js';
import { inferenceSection } from './inference.js';
import { trainSection } from './train.js';
import { machineSection, sgemmSection, streamSection } from './machine.js';
import { MB, round, seconds, type BenchContext, type Figure, type Section } from './measure.js';

const MODEL = 'qwen2.5-0.5b';

/** In report order; `machine` always runs. */
const SECTIONS: Section[] = [machineSection, sgemmSection, streamSection, inferenceSection, trainSection];

interface Group {
  title: string;
  figures: Figure[];
}

function usage(): string {
  return `usage: npm run bench -- [--only SECTION] [--json]\nsections: ${SECTIONS.map((s) => s.name).join(', ')}`;
}

function parseOptions(argv: string[]): { only: Section | null; json: boolean } {
  let values: { only?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { only: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }));
  } catch (e) {
    fail(`bench: ${(e as Error).message}\n${usage()}`);
  }
  if (values.help) {
    process.stdout.write(`${usage()}\n`);
    process.exit(0);
  }
  let only: Section | null = null;
  if (values.only !== undefined) {
    only = SECTIONS.find((s) => s.name === values.only) ?? null;
    if (!only) fail(`bench: --only ${values.only} is not a section\n${usage()}`);
  }
  return { only, json: values.json ?? false };
}

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}

function progress(message: string): void {
  process.stderr.write(`[bench ${(process.uptime()).toFixed(0).padStart(4)} s] ${message}\n`);
}

/** Runs sections on demand, in dependency order, collecting each one's figures once. */
class Runner implements BenchContext {
  readonly groups: Group[] = [];
  private readonly values = new Map<string, number | string>();
  private readonly done = new Set<Section>();
  private readonly running = new Set<Section>();
  private built: CausalLM | null = null;

  async runSection(section: Section): Promise<void> {
    if (this.done.has(section)) return;
    if (this.running.has(section)) throw new Error(`bench: section ${section.name} depends on itself`);
    this.running.add(section);
    progress(`${section.name} …`);
    const figures = await section.run(this);
    this.running.delete(section);
    this.done.add(section);
    this.add({ title: section.title, figures });
  }

  async figure(key: string): Promise<number> {
    if (!this.values.has(key)) {
      const owner = SECTIONS.find((s) => s.provides.includes(key));
      if (!owner) throw new Error(`bench: no section provides "${key}"`);
      await this.runSection(owner);
    }
    const v = this.values.get(key);
    if (typeof v !== 'number') throw new Error(`bench: section did not measure "${key}"`);
    return v;
  }

  model(): CausalLM {
    if (this.built) return this.built;
    const config = parseDecoderConfig(PRESETS[MODEL].config, `preset ${MODEL}`);
    progress(`building ${MODEL}: allocating fp32 parameters`);
    let built!: CausalLM;
    const allocate = seconds(() => { built = new CausalLM(config); });
    let params = 0;
    for (const [, t] of built.namedParameters()) params += t.size;
    progress(`building ${MODEL}: random init of ${(params / 1e6).toFixed(0)} M parameters`);
    const init = seconds(() => initializeWeights(built, 0));
    this.add({
      title: `model: ${MODEL}, random fp32 weights in memory`,
      figures: [
        { key: 'model_params_m', label: 'parameters', value: params / 1e6, unit: 'M', digits: 1 },
        { key: 'model_weights_mb', label: 'weights (fp32)', value: (4 * params) / MB, unit: 'MB', digits: 0 },
        { key: 'model_alloc_s', label: 'allocate', value: allocate, unit: 's' },
        { key: 'model_init_s', label: 'random init (N(0, 0.02²))', value: init, unit: 's' },
      ],
    });
    this.built = built;
    return built;
  }

  progress(message: string): void {
    progress(message);
  }

  add(group: Group): void {
    for (const f of group.figures) this.values.set(f.key, f.value);
    this.groups.push(group);
  }

  /** Every figure as one flat object, numbers rounded to their shown digits. */
  json(): Record<string, number | string> {
    const out: Record<string, number | string> = {};
    for (const g of this.groups) {
      for (const f of g.figures) out[f.key] = typeof f.value === 'number' ? round(f.value, f.digits ?? 2) : f.value;
    }
    return out;
  }

  table(): string {
    const lines: string[] = [`tunekit bench: ${MODEL}, random fp32 weights, backend ${this.values.get('backend')}`];
    for (const g of this.groups) {
      lines.push('', g.title);
      if (g.figures.every((f) => f.unit === undefined)) {
        for (const f of g.figures) lines.push(`  ${f.label.padEnd(14)} ${show(f)}${f.note ? `  (${f.note})` : ''}`);
        continue;
      }
      for (const f of g.figures) {
        const value = `${show(f).padStart(10)} ${(f.unit ?? '').padEnd(7)}`;
        let bound = ''.padEnd(28);
        if (f.bound !== undefined) {
          const b = this.groups.flatMap((x) => x.figures).find((x) => x.key === f.bound);
          if (b && typeof b.value === 'number' && typeof f.value === 'number') {
            bound = `of ${show(b).padStart(8)} ${(b.unit ?? '').padEnd(7)} ${((100 * f.value) / b.value).toFixed(0).padStart(4)} %`;
          }
        }
        lines.push(`  ${f.label.padEnd(44)} ${value} ${bound}${f.note ? `  ${f.note}` : ''}`.trimEnd());
      }
    }
    return `${lines.join('\n')}\n`;
  }
}

function show(f: Figure): string {
  return typeof f.value === 'number' ? f.value.toFixed(f.digits ?? 2) : f.value;
}

async function main(): Promise<void> {
  const { only, json } = parseOptions(process.argv.slice(2));
  const runner = new Runner();
  const load = os.loadavg()[0];
  if (load > 0.5) progress(`warning: load average ${load.toFixed(1)} on ${os.availableParallelism()} cores; other work will lower every figure`);
  await runner.runSection(machineSection);
  for (const s of only ? [only] : SECTIONS) await runner.runSection(s);
  runner.add({
    title: 'process',
    // maxRSS is the process's high-water mark in KB: the largest of every section so far.
    figures: [
      { key: 'peak_rss_mb', label: 'peak RSS (whole run)', value: process.resourceUsage().maxRSS / 1024, unit: 'MB', digits: 0 },
      { key: 'load_1m_end', label: 'load average at the end (1 min)', value: os.loadavg()[0], unit: '' },
    ],
  });
  process.stdout.write(json ? `${JSON.stringify(runner.json(), null, 2)}\n` : runner.table());
}

await main();
