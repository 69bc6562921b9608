import { loadTrainConfig, parseOverrides } from '../../train/config.js';
import { runTraining } from '../../train/run.js';
import type { Command } from '../main.js';

const HELP = `usage: tunekit train CONFIG.yaml [--key value ...]

Trains as the YAML config says — stage pt (continued pre-training), sft, rm (reward model), dpo or ppo —
with LLaMA-Factory's keys (model_name_or_path, stage, finetuning_type,
lora_rank, lora_alpha, lora_target, dataset, dataset_dir, template, cutoff_len,
per_device_train_batch_size, gradient_accumulation_steps, learning_rate, num_train_epochs, max_steps,
lr_scheduler_type, warmup_ratio, max_grad_norm, weight_decay, seed, output_dir, logging_steps,
save_steps, val_size, eval_steps, resume_from_checkpoint, ...). Any key can be given or overridden
on the command line: --learning_rate 1e-4. Ctrl-C saves a checkpoint before exiting.`;

export const trainCommand: Command = {
  summary: 'train from a YAML config: pt, sft, rm, dpo or ppo, with LoRA or fully',
  async run(argv) {
    if (argv.includes('--help') || argv.includes('-h')) {
      console.log(HELP);
      return 0;
    }
    const { file, overrides } = parseOverrides(argv);
    const { config, notes } = loadTrainConfig(file, overrides);
    for (const n of notes) console.error(n);
    const result = await runTraining(config);
    return result.stoppedEarly ? 130 : 0;
  },
};
