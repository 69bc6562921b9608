import fs from 'node:fs';
import { UserError } from '../../errors.js';
import { loadRewardModel, scoreDataset } from '../../infer/reward.js';
import { numberFlag, parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';

const HELP = `usage: tunekit reward --model DIR [--adapter DIR] --data FILE [--dataset-dir DIR] [--template NAME]
                     [--batch-size N] [--cutoff-len N]

Scores answers with a reward model trained by stage rm: --model is the base model and --adapter
the rm output (adapter + value_head.safetensors); for a fully trained reward model, --model alone.
--data is a file (or a dataset name in --dataset-dir/dataset_info.json). Preference rows
(chosen/rejected) print {"source", "chosen", "rejected"}; conversations print {"source", "score"}
(the last answer's). One JSON object per line; preference data ends with
{"pairs": N, "correct": K, "accuracy": K/N}, the pairwise accuracy.`;

export const rewardCommand: Command = {
  summary: 'score answers with a trained reward model; pairwise accuracy on preference data',
  run(argv) {
    const { values } = parseFlags('reward', argv, {
      model: { type: 'string' },
      adapter: { type: 'string' },
      data: { type: 'string' },
      'dataset-dir': { type: 'string' },
      template: { type: 'string' },
      'batch-size': { type: 'string' },
      'cutoff-len': { type: 'string' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const model = requireFlag('reward', values.model, 'model');
    const data = requireFlag('reward', values.data, 'data');
    const datasetDir = values['dataset-dir'] ?? '.';
    if (!fs.existsSync(data) && !values['dataset-dir']) throw new UserError(`reward: ${data}: file not found`);
    const rm = loadRewardModel(values.adapter ?? model, {
      baseModel: model,
      type: values.adapter ? 'lora' : 'full',
      template: values.template,
      cutoffLen: numberFlag('reward', values['cutoff-len'], 'cutoff-len', { integer: true, min: 2 }),
    });
    const report = scoreDataset(rm, data, { datasetDir, batchSize: numberFlag('reward', values['batch-size'], 'batch-size', { integer: true, min: 1 }) });
    for (const row of report.rows) console.log(JSON.stringify(row));
    if (report.accuracy !== null) {
      console.log(JSON.stringify({ pairs: report.pairs, correct: report.correct, accuracy: report.accuracy }));
      console.error(`pairwise accuracy: ${report.correct}/${report.pairs} = ${report.accuracy.toFixed(4)}`);
    }
    return 0;
  },
};
