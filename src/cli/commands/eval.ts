import { resolveModel } from '../../io/hub.js';
import { evaluate, formatReport, parseMetrics, writeReport } from '../../eval/run.js';
import { numberFlag, parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';

const HELP = `usage: tunekit eval --model DIR --data FILE [options]

Scores a model on held-out rows; with --adapter, the base model and the adapter side by side
(one model in memory, the adapter switched off for the base).

  --model DIR              Hugging Face model folder
  --adapter DIR            a LoRA adapter (PEFT format) to compare with the base
  --data FILE              rows as for SFT: alpaca (instruction/input/output), {prompt, response},
                           sharegpt or OpenAI messages (.json/.jsonl, or a folder); or a dataset
                           name in --dataset-dir/dataset_info.json
  --dataset-dir DIR        where dataset_info.json is (default .)
  --metrics LIST           any of ppl,bleu,rouge,em (default all)
                             ppl    perplexity of the reference answers given the prompts
                             bleu   BLEU-4 of greedy answers (LLaMA-Factory's: characters, smoothing 3)
                             rouge  ROUGE-1/2/L of greedy answers on jieba words (LLaMA-Factory's)
                             em     exact match of greedy answers, in %
  --max-new-tokens N       longest generated answer (default 128)
  --limit N                the first N rows only
  --template NAME          built-in chat template instead of the model's
  --out FILE               write the report (averages and every prediction) as JSON
  --quiet                  no progress on stderr`;

export const evalCommand: Command = {
  summary: 'perplexity, BLEU-4, ROUGE and exact match on held-out rows; base vs adapter side by side',
  async run(argv) {
    const { values } = parseFlags('eval', argv, {
      model: { type: 'string' },
      adapter: { type: 'string' },
      data: { type: 'string' },
      'dataset-dir': { type: 'string' },
      metrics: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      limit: { type: 'string' },
      template: { type: 'string' },
      out: { type: 'string' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const quiet = values.quiet || !process.stderr.isTTY;
    const report = evaluate({
      model: await resolveModel(requireFlag('eval', values.model, 'model')),
      adapter: values.adapter,
      data: requireFlag('eval', values.data, 'data'),
      datasetDir: values['dataset-dir'],
      metrics: values.metrics !== undefined ? parseMetrics(values.metrics) : undefined,
      maxNewTokens: numberFlag('eval', values['max-new-tokens'], 'max-new-tokens', { integer: true, min: 1 }),
      limit: numberFlag('eval', values.limit, 'limit', { integer: true, min: 1 }),
      template: values.template,
      onProgress: quiet ? undefined : ({ variant, done, total }) => {
        process.stderr.write(`\r[eval] ${variant} ${done}/${total}${done === total ? '\n' : ''}`);
      },
    });
    console.log(formatReport(report));
    if (values.out) {
      writeReport(values.out, report);
      console.log(`report written to ${values.out}`);
    }
    return 0;
  },
};
