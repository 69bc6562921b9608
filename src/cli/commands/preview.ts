import { describeSource, loadConversations, markTrained, previewExamples, resolveDatasets } from '../../data/index.js';
import { UserError } from '../../errors.js';
import { resolveTemplate } from '../../text/chat-template.js';
import { Tokenizer } from '../../text/tokenizer.js';
import { loadTrainConfig, parseOverrides } from '../../train/config.js';
import { numberFlag } from '../args.js';
import type { Command } from '../main.js';

const HELP = `usage: tunekit preview CONFIG.yaml [--n 3] [--key value ...]

Prints the first examples as the trainer will see them: the text rendered with the chat template,
then the same text with the trained tokens (the answers) inside ⟦ ⟧ and everything else masked.
A template mismatch shows here before any training.`;

export const previewCommand: Command = {
  summary: 'show the first training examples as rendered, with trained and masked tokens marked',
  run(argv) {
    if (argv.includes('--help') || argv.includes('-h')) {
      console.log(HELP);
      return 0;
    }
    const { file, overrides } = parseOverrides(argv);
    const n = numberFlag('preview', overrides.n === undefined ? undefined : String(overrides.n), 'n', { integer: true, min: 1 }) ?? 3;
    delete overrides.n;
    const { config: c } = loadTrainConfig(file, overrides);
    if (c.stage !== 'sft') throw new UserError(`preview: stage ${c.stage} trains on every token; preview shows sft masking`);
    const tokenizer = Tokenizer.fromFolder(c.model_name_or_path);
    const template = resolveTemplate(c.template, tokenizer);
    const convs = loadConversations(resolveDatasets(c.dataset, c.dataset_dir, { layout: c.layout }), { skipInvalid: c.skip_invalid, seed: c.seed });
    const previews = previewExamples(convs.items, {
      tokenizer, template, cutoffLen: c.cutoff_len, trainOnPrompt: c.train_on_prompt, maskHistory: c.mask_history, count: n,
    });
    previews.forEach((p, i) => {
      console.log(`=== example ${i + 1} (${describeSource(p.source)}) — ${p.tokens.length} tokens, ${p.trainedTokens} trained${p.truncated ? ', truncated' : ''}`);
      console.log('--- rendered:');
      console.log(p.text);
      console.log('--- trained tokens in ⟦ ⟧:');
      console.log(markTrained(p.spans));
    });
    return 0;
  },
};
