import { UserError } from '../errors.js';
import { closest } from './args.js';
import { chatCommand } from './commands/chat.js';
import { buildBaseModelCommand, demoCommand } from './commands/demo.js';
import { envCommand } from './commands/env.js';
import { evalCommand } from './commands/eval.js';
import { serveCommand } from './commands/serve.js';
import { exportCommand } from './commands/export.js';
import { generateCommand } from './commands/generate.js';
import { initModelCommand } from './commands/init-model.js';
import { logprobsCommand } from './commands/logprobs.js';
import { previewCommand } from './commands/preview.js';
import { ragCommand } from './commands/rag.js';
import { rewardCommand } from './commands/reward.js';
import { trainCommand } from './commands/train.js';

export interface Command {
  summary: string;
  run(argv: string[]): Promise<number> | number;
}

export const COMMANDS: Record<string, Command> = {
  demo: demoCommand,
  env: envCommand,
  'init-model': initModelCommand,
  generate: generateCommand,
  chat: chatCommand,
  logprobs: logprobsCommand,
  export: exportCommand,
  train: trainCommand,
  preview: previewCommand,
  rag: ragCommand,
  reward: rewardCommand,
  serve: serveCommand,
  eval: evalCommand,
  'build-base-model': buildBaseModelCommand,
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `usage: tunekit <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nRun "tunekit <command> --help" for a command's options.`;
}

/** Runs the CLI; a user's mistake prints one line and returns 2, a bug keeps its stack trace. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 1;
  }
  const command = COMMANDS[name];
  try {
    if (!command) {
      const hint = closest(name, Object.keys(COMMANDS));
      throw new UserError(`unknown command "${name}"${hint ? `; did you mean "${hint}"?` : ''}\n${usage()}`);
    }
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UserError) {
      console.error(`tunekit: error: ${e.message}`);
      return e.exitCode;
    }
    throw e;
  }
}
