import { buildBaseModel } from '../../demo/base-model.js';
import { runDemo } from '../../demo/run-demo.js';
import { numberFlag, parseFlags } from '../args.js';
import type { Command } from '../main.js';

export const demoCommand: Command = {
  summary: 'the whole pipeline offline on the built-in model: answer, LoRA fine-tune, answer again, merge',
  async run(argv) {
    const { values } = parseFlags('demo', argv, { out: { type: 'string' }, epochs: { type: 'string' }, help: { type: 'boolean' } });
    if (values.help) {
      console.log('usage: tunekit demo [--out DIR (default tunekit-demo)] [--epochs N]');
      return 0;
    }
    await runDemo({ out: values.out ?? 'tunekit-demo', epochs: numberFlag('demo', values.epochs, 'epochs', { integer: true, min: 1 }) });
    return 0;
  },
};

export const buildBaseModelCommand: Command = {
  summary: 'pre-train the built-in tiny Chinese/English base model from the corpus in assets/ (5–15 minutes on two cores)',
  async run(argv) {
    const { values } = parseFlags('build-base-model', argv, { out: { type: 'string' }, epochs: { type: 'string' }, help: { type: 'boolean' } });
    if (values.help) {
      console.log('usage: tunekit build-base-model [--out DIR (default assets/base-model)] [--epochs N]');
      return 0;
    }
    const out = await buildBaseModel({ out: values.out, epochs: numberFlag('build-base-model', values.epochs, 'epochs', { integer: true, min: 1 }) });
    console.log(`wrote ${out}`);
    return 0;
  },
};
